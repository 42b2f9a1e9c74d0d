"""Stock2Shop API client: one token, a client-side rate limiter, bounded retries, deadlines, redaction.

    client = ApiClient(settings.api)
    client.queue_products(items)   # -> {"system_products": {"sync_product": N}}

Every answer is judged in one place, the pure `classify(status, headers, body)`, whose
`Verdict` says what to do. The errors (connector/errors.py) say what the caller should do:
  DataRejected   the API refused the request's data (400/409/422; 413 too large): not retried
  ApiUnavailable 429/5xx/timeouts/connection errors/answers that are not the API's outlasted
                 the retry budget: the work waits
  AuthFailed     credentials refused by a fresh login: fix the configuration
  SetupError     no retry can fix it: a wrong URL, a redirect, TLS; the work waits
Every message is redacted: the token travels in the query string and must never be shown.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, quote_plus

import requests
import urllib3
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from connector.config import ApiSettings
from connector.errors import ApiError, ApiUnavailable, AuthFailed, DataRejected, SetupError
from connector.logs import install_redaction, redact, register_secret
from connector.wire import encode

log = logging.getLogger("connector.api")

MAX_LOGINS_PER_CALL = 5
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # the API answers a queue request in bytes; a proxy may send anything
# The key the API's own answer carries, per endpoint (api-docs: "Example Response"; the sandbox
# answers the same). A 2xx is the API's answer when its body is a JSON object with that key;
# the value's shape and the Content-Type are not documented, so neither is required.
ACKNOWLEDGEMENT_KEYS = {
    "/v1/products/queue": "system_products",
    "/v1/images/queue": "system_images",
    "/v1/users/authenticate": "system_user",
    "/v1/sources": "system_sources",
    "/v1/channels": "system_channels",
    # Elasticsearch's own part of the answer: `system_products` may well be left out when nothing matched
    "/v1/products/elastic_search": "hits",
}


class _TokenRefused(ApiError):
    """A call was answered 401/403: the token expired or was replaced."""


class _Transient(ApiError):
    """One attempt failed in a way worth retrying; `retry_after` is the server's hint in seconds."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message, status)
        self.retry_after = retry_after


Kind = Literal["acknowledged", "refused", "too_large", "retry", "unavailable", "renew_token", "fatal"]


@dataclass(frozen=True)
class Verdict:
    """What to do with one answer of the API.

    kind          acknowledged  the API's own JSON answer: the work is done (`data`)
                  refused       the data was refused (400/409/422): `errors`, `indexes`
                  too_large     the request body was too big (413): send less per request
                  retry         slow down (429): wait `retry_after` s or back off, then again
                  unavailable   transient (5xx, 408, a 2xx that is not the API's answer): again later
                  renew_token   the token was refused (401/403): log in again
                  fatal         no retry helps (404/405, 3xx, other 4xx): check api.url or the proxy
    reason        one redacted line saying what came back
    past_token    the server got past the token to give this answer (it is not a 401/403/408/429)
    """

    kind: Kind
    reason: str = ""
    data: dict = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    indexes: frozenset[int] | None = None
    retry_after: float | None = None
    past_token: bool = True


def classify(status: int, headers: Mapping[str, str], body: bytes, expect: str | None = None) -> Verdict:
    """Judge one answer: its status, headers and whole body -> a Verdict. No I/O and no state
    (only a Retry-After given as an HTTP date is read against the wall clock).

    `expect` is the key the API's acknowledgement carries (ACKNOWLEDGEMENT_KEYS); None accepts
    any JSON object. Only the API's own answer acknowledges work: a 2xx whose body is an HTML
    page, empty, or JSON of another shape is `unavailable`, so the work waits and is sent again
    (safe: products are upserts keyed by their codes, and unchanged resends are no-ops).

        classify(200, {}, b'{"system_products": {"sync_product": 1}}', "system_products").kind
        -> "acknowledged"
        classify(200, {"Content-Type": "text/html"}, b"<html>...", "system_products").kind
        -> "unavailable"
        classify(429, {"Retry-After": "7"}, b"").retry_after -> 7.0
    """
    headers = {name.lower(): value for name, value in headers.items()}
    if 200 <= status < 300:
        data = _json_object(body)
        if data is not None and (expect is None or expect in data):
            return Verdict("acknowledged", f"HTTP {status}", data=data)
        shape = "no JSON object" if data is None else f"JSON without {expect!r}"
        return Verdict("unavailable", f"HTTP {status} but not the API's answer ({shape}; {_describe(headers, body)})")
    said = f"HTTP {status} {_sample(body, 300)}".rstrip()
    if 300 <= status < 400:
        where = redact(headers.get("location", "nowhere"))
        return Verdict("fatal", f"HTTP {status}, a redirect to {where}; check api.url (use the address it names)")
    if status in (401, 403):
        return Verdict("renew_token", said, past_token=False)
    if status == 429 or status == 408 or status >= 500:
        retry_after = _retry_after(headers.get("retry-after"), math.inf)
        kind: Kind = "retry" if status == 429 else "unavailable"
        return Verdict(kind, said, retry_after=retry_after, past_token=status >= 500)
    if status == 413:
        return Verdict("too_large", said)
    if status in (400, 409, 422):
        errors = _errors(body)
        return Verdict("refused", said, errors=errors, indexes=_indexes(errors))
    # 404, 405, other 4xx: the URL or a proxy is wrong, not the data. Nothing is refused.
    return Verdict("fatal", f"unexpected {said}; check api.url")


class RateLimiter:
    """At most `rate` requests in any one-second window: the API's own measure of its limit.

    Starts at the configured rate (1/s: the older docs' advice) and follows the
    `x-S2S-RateLimit` header to the announced rate itself; a request may go once the one sent
    `rate` requests ago is a full window (plus a guard for the network between our clock and
    the server's: WINDOW_GUARD, doubled by each 429 up to MAX_GUARD) in the past. A
    fractional rate is rounded down (2.5/s: 2 per second), a rate below 1 stretches the window
    (0.5/s: 1 per 2 s).
    """

    WINDOW_GUARD = 0.025  # s: our send time is not the server's arrival time
    MAX_GUARD = 0.1  # s: the most 429s widen it to (at 3 requests/s: 3 per 1.1 s)

    def __init__(self, rate: float, *, clock: Callable[[], float], sleep: Callable[[float], None]):
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self._sent: deque[float] = deque(maxlen=64)  # the slots booked, oldest first
        self._not_before = 0.0
        self.guard = self.WINDOW_GUARD
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Sleep until a request may go, booking its slot (thread-safe)."""
        with self._lock:
            now = self.clock()
            capacity = max(1, min(int(self.rate), self._sent.maxlen or 1))
            window = max(1.0, capacity / self.rate)
            slot = max(now, self._not_before)
            if len(self._sent) >= capacity:
                slot = max(slot, self._sent[-capacity] + window + self.guard)
            self._sent.append(slot)
        if slot > now:
            self.sleep(slot - now)

    def follow(self, header: str | None) -> None:
        try:
            limit = float(header) if header else 0.0
        except ValueError:
            return
        if limit > 0:
            self.rate = min(limit, self.ceiling)

    ceiling = float("inf")  # the login limiter never goes above the unauthenticated 1/s

    def back_off(self, seconds: float) -> None:
        """After a 429: nobody sends before `seconds` from now, and the guard doubles for the rest of the run.

        The server counts a request when it arrives; a request delayed on its way more than a
        later one (a loaded machine, a new connection) arrives less than a window after it,
        though it was sent a full window earlier. Measured against the sandbox in its own
        process on a busy 2-core machine: about one 429 per 200 requests at 25 ms.
        """
        with self._lock:
            self._not_before = max(self._not_before, self.clock() + seconds)
            self.guard = min(self.guard * 2, self.MAX_GUARD)


class ApiClient:
    """Talks to one Stock2Shop account. Holds ONE token for the whole process.

    `session`, `sleep`, `clock` and `rng` are injected so tests run without real waiting.
    `clock` paces and budgets retries; a request's own deadline (`api.request_deadline`) is
    measured on the real monotonic clock, because the socket it bounds runs in real time.
    """

    def __init__(self, settings: ApiSettings, *, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random):
        self.settings = settings
        self.base = settings.url.rstrip("/")
        # Proxies and CA bundles come from the environment (HTTPS_PROXY, REQUESTS_CA_BUNDLE), as
        # warehouse networks need; the token in a proxy's logs is the API's design, not ours.
        self.session = session or requests.Session()
        self.sleep = sleep
        self.clock = clock
        self.rng = rng
        # Logging in is unauthenticated: the API allows it less often (1/s) than the rest (3/s).
        self.limiter = RateLimiter(settings.rate, clock=clock, sleep=sleep)
        self.login_limiter = RateLimiter(min(settings.rate, 1.0), clock=clock, sleep=sleep)
        self.login_limiter.ceiling = 1.0
        self._token: str | None = None
        self._token_worked = False  # the current token has been accepted at least once
        self.requests: Counter[str] = Counter()  # by status ("200", "429", "error")
        self.announced_rate: str | None = None  # x-S2S-RateLimit of the last authenticated answer
        self._auth_lock = threading.Lock()
        register_secret(settings.password)
        install_redaction()

    @property
    def token(self) -> str | None:
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        """Every token the client holds is a registered secret, as given and as a URL carries it."""
        if value:
            for form in (value, quote(value, safe=""), quote_plus(value)):
                register_secret(form)
        self._token = value

    # -- endpoints -------------------------------------------------------------------------

    def queue_products(self, items: list[dict], *, payload: bytes | None = None) -> dict:
        """Queue `items`; `payload`, when given, is their JSON array as journaled, sent as it is."""
        body = b'{"system_products":' + payload + b"}" if payload is not None else encode({"system_products": items})
        return self.call("POST", "/v1/products/queue", body, params={"source_id": self.settings.source_id})

    def queue_images(self, items: list[dict] | None = None, *, payload: bytes | None = None) -> dict:
        """Queue images: `items`, or `payload`, their JSON array already encoded, sent as it is."""
        body = b'{"system_images":' + payload + b"}" if payload is not None else encode({"system_images": items or []})
        return self.call("POST", "/v1/images/queue", body)

    def list_sources(self) -> list[dict]:
        """The user's sources (`GET /v1/sources`): [{"id", "description", "type", "active", "source_id"}, ...]."""
        # ?format=json as the docs' examples of both list endpoints send it
        return _listed(self.call("GET", "/v1/sources", params={"format": "json"}), "system_sources")

    def list_channels(self) -> list[dict]:
        """The user's channels (`GET /v1/channels`): [{"id", "description", "type", "active"}, ...]."""
        return _listed(self.call("GET", "/v1/channels", params={"format": "json"}), "system_channels")

    def search_products(self, query: dict, *, channel_id: int | None = None) -> dict:
        """`POST /v1/products/elastic_search` with an Elasticsearch body; the answer, whose
        `system_products` are the products as stored (live, not the index) and `hits.total` counts all.
        `channel_id` goes as the query parameter a user that is not an admin needs to find anything."""
        params = None if channel_id is None else {"channel_id": channel_id}
        return self.call("POST", "/v1/products/elastic_search", encode(query), params=params)

    def authenticate(self) -> None:
        """Log in and keep the token. A new login invalidates the old token for everybody."""
        body = encode({"system_user_auth": {"username": self.settings.username, "password": self.settings.password}})
        try:
            data = self._retrying(lambda: self._once("POST", "/v1/users/authenticate", body, {}, authed=False))
        except (_TokenRefused, DataRejected) as exc:
            raise AuthFailed(f"login refused: {exc}; check S2S_USERNAME and S2S_PASSWORD", exc.status) from None
        token = (data.get("system_user") or {}).get("token") if isinstance(data, dict) else None
        if not token:
            raise AuthFailed("the API answered the login without a token")
        self.token = token  # registered as a secret by the setter
        self._token_worked = False
        log.info("authenticated with the Stock2Shop API")

    # -- the request machinery -----------------------------------------------------------

    def call(self, method: str, path: str, body: bytes | None = None, params: dict | None = None) -> dict:
        """One API call with the token, retrying transient trouble; the API's JSON answer.

        On 401/403 the process logs in again, once for everybody (a login invalidates every
        earlier token of the user). A fresh token refused before the server ever got past it
        means the credentials lack access: AuthFailed. A token that worked and later expired
        is simply renewed again.
        """
        for _ in range(MAX_LOGINS_PER_CALL):
            if self.token is None:
                self.authenticate()
            used = self.token
            try:
                answer = self._retrying(lambda: self._once(method, path, body, params or {}, authed=True))
            except _TokenRefused as exc:
                with self._auth_lock:
                    if self.token != used:
                        continue  # somebody else logged in meanwhile: use their token
                    if not self._token_worked:
                        raise AuthFailed(f"the API refused a fresh token for {method} {path}: {exc}",
                                         exc.status) from None
                    log.info("token refused (expired or replaced); logging in again")
                    self.token = None
                continue
            return answer
        raise AuthFailed(f"{method} {path}: the token was refused {MAX_LOGINS_PER_CALL} times in a row")

    def _retrying(self, attempt: Callable[[], dict]) -> dict:
        start = self.clock()
        budget = self.settings.retry_budget

        def out_of_budget(state: RetryCallState) -> bool:
            # tenacity's stop_before_delay, on our injected clock: never sleep past the budget
            return self.clock() - start + (state.upcoming_sleep or 0.0) >= budget

        retrying = Retrying(
            stop=lambda state: out_of_budget(state) or state.attempt_number >= 100,
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self.sleep,
            reraise=True,
            before_sleep=self._log_retry,
        )
        try:
            return retrying(attempt)
        except _Transient as exc:
            waited = self.clock() - start
            raise ApiUnavailable(f"gave up after {waited:.0f} s of retrying (budget {budget:.0f} s): {exc}",
                                 exc.status) from None

    def _once(self, method: str, path: str, body: bytes | None, params: dict, *, authed: bool) -> dict:
        """One request, judged by classify(); the answer's data, or the exception its verdict calls for."""
        if authed:
            params = {**params, "token": self.token}
        limiter = self.limiter if authed else self.login_limiter
        limiter.wait()
        where = f"{method} {path}"
        status, headers, content = self._exchange(method, path, body, params)
        self.requests[str(status)] += 1
        verdict = classify(status, headers, content, ACKNOWLEDGEMENT_KEYS.get(path))
        if authed and verdict.past_token:
            self._token_worked = True  # the server got past the token to answer this
        limiter.follow(headers.get("x-S2S-RateLimit"))
        if authed and headers.get("x-S2S-RateLimit"):
            self.announced_rate = headers["x-S2S-RateLimit"]
        message = f"{where}: {verdict.reason}"
        if verdict.kind == "acknowledged":
            return verdict.data
        if verdict.kind in ("retry", "unavailable"):
            hint = verdict.retry_after
            retry_after = None if hint is None else min(hint, self.settings.retry_after_cap)
            if verdict.kind == "retry":
                limiter.back_off(retry_after or 1.0)
            raise _Transient(message, status, retry_after)
        if verdict.kind == "renew_token":
            raise _TokenRefused(message, status)
        if verdict.kind in ("refused", "too_large"):
            raise DataRejected(message, status, verdict.errors)  # its `indexes` are the verdict's
        raise SetupError(message, status)

    def _exchange(self, method: str, path: str, body: bytes | None,
                  params: dict) -> tuple[int, Mapping[str, str], bytes]:
        """Send one request and read its whole answer within `api.request_deadline` seconds.

        `read_timeout` bounds each silence; the deadline bounds the whole, so a server that
        trickles a byte at a time cannot hold a push. Past it: a retriable timeout.
        """
        settings = self.settings
        deadline = time.monotonic() + settings.request_deadline
        try:
            response = self.session.request(
                method, self.base + path, params=params, data=body,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                timeout=(settings.connect_timeout, min(settings.read_timeout, settings.request_deadline)),
                allow_redirects=False, stream=True,
            )
        except requests.exceptions.SSLError as exc:
            # Never retried and never worked around: someone must look at the certificate or the URL.
            self.requests["error"] += 1
            raise SetupError(f"{method} {path}: TLS failed ({_why(exc)}); "
                           "check api.url and the server's certificate") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise SetupError(f"api.url is not usable: {_why(exc)}") from None
        except requests.RequestException as exc:
            # The server may have processed the request (connection closed after the body was
            # read); retrying is safe because products are upserts keyed by their codes.
            self.requests["error"] += 1
            raise _Transient(f"{method} {path}: {_why(exc)}") from None
        try:
            content = self._read_answer(response, deadline, f"{method} {path}")
        except BaseException:
            response.close()  # never reuse a connection left mid-answer
            self.requests["error"] += 1
            raise
        response.raw.release_conn()  # read to the end: the connection may serve the next request
        return response.status_code, response.headers, content

    def _read_answer(self, response: requests.Response, deadline: float, where: str) -> bytes:
        """The answer's body, read as it arrives, checking the deadline between reads."""
        raw = response.raw
        # urllib3 2's read1 returns whatever has arrived; read() would wait for the whole chunk
        # and let a trickle run on. urllib3 1.x has no read1: there, the check is per 1 KiB.
        read = getattr(raw, "read1", None) or raw.read
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_ANSWER_BYTES:
            if time.monotonic() > deadline:
                raise _Transient(f"{where}: no whole answer within api.request_deadline "
                                 f"({self.settings.request_deadline:g} s; {size} bytes had come)")
            try:
                chunk = read(1024 if read is raw.read else 64 * 1024, decode_content=True)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                timed_out = isinstance(exc, urllib3.exceptions.ReadTimeoutError)
                reason = "timed out waiting for the answer" if timed_out else _why(exc)
                raise _Transient(f"{where}: the answer broke off after {size} bytes ({reason})") from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    def _wait(self, state: RetryCallState) -> float:
        """Retry-After when the server gives one (capped), else exponential backoff with full jitter."""
        exc = state.outcome.exception() if state.outcome else None
        backoff = min(60.0, 0.5 * 2 ** (state.attempt_number - 1)) * (0.5 + 0.5 * self.rng())
        hint = getattr(exc, "retry_after", None)
        return max(hint, backoff) if hint else backoff

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("retrying in %.1f s (attempt %d): %s", state.next_action.sleep if state.next_action else 0,
                    state.attempt_number, exc)


def _why(exc: Exception) -> str:
    """A short reason for a failed request, without urllib3's long chain (or the URL)."""
    if isinstance(exc, requests.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, requests.ReadTimeout):
        return "timed out waiting for the answer"
    text = str(exc)
    for marker, reason in (("Connection refused", "connection refused"),
                           ("Name or service not known", "host name not found"),
                           ("Temporary failure in name resolution", "host name not found"),
                           ("RemoteDisconnected", "connection closed without an answer"),
                           ("Connection reset", "connection reset"),
                           ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted")):
        if marker in text:
            return reason
    return redact(f"{type(exc).__name__}: {' '.join(text.split())[:200]}")


def _listed(data: dict, key: str) -> list[dict]:
    """The list of objects under `key` of an answer (an object missing or of another shape: [])."""
    value = data.get(key)
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def _json_object(body: bytes) -> dict | None:
    """The body as a JSON object, or None: not JSON, or JSON but not an object."""
    try:
        data = json.loads(body)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
        return None
    return data if isinstance(data, dict) else None


def _errors(body: bytes) -> list[dict]:
    """The API's error list, [{"index", "field", "message"}, ...]; [] when the body has none."""
    data = _json_object(body) or {}
    errors = data.get("errors")
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _indexes(errors: list[dict]) -> frozenset[int] | None:
    """The item indexes the errors name; None when they name none. The rule of
    DataRejected.indexes (errors.py), which the client raises with the same errors."""
    return frozenset(e["index"] for e in errors if isinstance(e.get("index"), int)) or None


def _sample(body: bytes, limit: int) -> str:
    """The first `limit` characters of a body on one line, unprintables as '?', redacted."""
    text = body[: limit * 4].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " if c.isspace() else "?" for c in text)
    return redact(" ".join(text.split())[:limit])


def _describe(headers: Mapping[str, str], body: bytes) -> str:
    """What came back, for a person: content type, size, first bytes (headers keyed lowercase)."""
    kind = headers.get("content-type") or "no Content-Type"
    if not body:
        return f"{kind}, empty body"
    return f"{kind}, {len(body)} bytes: {_sample(body, 120)!r}"


def _retry_after(value: str | None, cap: float) -> float | None:
    """Retry-After as seconds, from either form RFC 9110 allows, capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, cap))
