"""Stock2Shop API client: one token, a client-side rate limiter, bounded retries, redaction.

    client = ApiClient(settings.api)
    client.queue_products(items)   # -> {"system_products": {"sync_product": N}}

Errors are sorted by what the caller should do (STYLE.md):
  DataRejected   4xx for the data: not retried; `.errors` names the refused items
  ApiUnavailable 429/5xx/timeouts/connection errors outlasted the retry budget: the work waits
  AuthFailed     credentials refused by a fresh login: fix the configuration
Every message is redacted: the token travels in the query string and must never be shown.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from connector.config import ApiSettings
from connector.errors import ApiError, ApiUnavailable, AuthFailed, DataRejected, SetupError
from connector.logs import install_redaction, redact, register_secret

log = logging.getLogger("connector.api")

TRANSIENT_STATUS = {408, 429}  # and every 5xx
DATA_STATUS = {400, 409, 413, 422}  # the request's data was refused; anything else 4xx is our setup
MAX_LOGINS_PER_CALL = 5


class _TokenRefused(ApiError):
    """A call was answered 401/403: the token expired or was replaced."""


class _Transient(ApiError):
    """One attempt failed in a way worth retrying; `retry_after` is the server's hint in seconds."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message, status)
        self.retry_after = retry_after


class RateLimiter:
    """Spaces requests evenly at `rate` per second (a token bucket of size one).

    Starts at the configured rate (1/s: the older docs' advice) and follows the
    `x-S2S-RateLimit` header, keeping 10 % in hand so clock jitter doesn't earn a 429.
    """

    def __init__(self, rate: float, *, clock: Callable[[], float], sleep: Callable[[float], None]):
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            delay = self._next - now
            self._next = max(now, self._next) + 1.0 / self.rate
        if delay > 0:
            self.sleep(delay)

    def follow(self, header: str | None) -> None:
        try:
            limit = float(header) if header else 0.0
        except ValueError:
            return
        if limit > 0:
            self.rate = min(limit, self.ceiling) * 0.9

    ceiling = float("inf")  # the login limiter never goes above the unauthenticated 1/s

    def back_off(self, seconds: float) -> None:
        """After a 429: nobody sends before `seconds` from now."""
        with self._lock:
            self._next = max(self._next, self.clock() + seconds)


class ApiClient:
    """Talks to one Stock2Shop account. Holds ONE token for the whole process.

    `session`, `sleep`, `clock` and `rng` are injected so tests run without real waiting.
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
        self.token: str | None = None
        self._token_worked = False  # the current token has been accepted at least once
        self.requests = Counter()  # by status ("200", "429", "error")
        self._auth_lock = threading.Lock()
        register_secret(settings.password)
        install_redaction()

    # -- endpoints -------------------------------------------------------------------------

    def queue_products(self, items: list[dict]) -> dict:
        body = json.dumps({"system_products": items}, separators=(",", ":"), ensure_ascii=False).encode()
        return self.call("POST", "/v1/products/queue", body, params={"source_id": self.settings.source_id})

    def queue_images(self, items: list[dict]) -> dict:
        body = json.dumps({"system_images": items}, separators=(",", ":")).encode()
        return self.call("POST", "/v1/images/queue", body)

    def authenticate(self) -> None:
        """Log in and keep the token. A new login invalidates the old token for everybody."""
        body = json.dumps({"system_user_auth": {"username": self.settings.username,
                                                "password": self.settings.password}}).encode()
        try:
            data = self._retrying(lambda: self._once("POST", "/v1/users/authenticate", body, {}, authed=False))
        except (_TokenRefused, DataRejected) as exc:
            raise AuthFailed(f"login refused: {exc}; check S2S_USERNAME and S2S_PASSWORD", exc.status) from None
        token = (data.get("system_user") or {}).get("token") if isinstance(data, dict) else None
        if not token:
            raise AuthFailed("the API answered the login without a token")
        register_secret(token)
        self.token = token
        self._token_worked = False
        log.info("authenticated with the Stock2Shop API")

    # -- the request machinery -----------------------------------------------------------

    def call(self, method: str, path: str, body: bytes | None = None, params: dict | None = None) -> dict:
        """One API call with the token, retrying transient trouble.

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
                        raise AuthFailed(f"the API refused a fresh token for {method} {path}: {exc}", exc.status) from None
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
            raise ApiUnavailable(f"gave up after {waited:.0f} s of retrying (budget {budget:.0f} s): {exc}", exc.status) from None

    def _once(self, method: str, path: str, body: bytes | None, params: dict, *, authed: bool) -> dict:
        if authed:
            params = {**params, "token": self.token}
        limiter = self.limiter if authed else self.login_limiter
        limiter.wait()
        try:
            response = self.session.request(
                method, self.base + path, params=params, data=body,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                timeout=(self.settings.connect_timeout, self.settings.read_timeout),
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            # Never retried and never worked around: someone must look at the certificate or the URL.
            self.requests["error"] += 1
            raise SetupError(f"{method} {path}: TLS failed ({_why(exc)}); check api.url and the server's certificate") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema) as exc:
            raise SetupError(f"api.url is not usable: {_why(exc)}") from None
        except requests.RequestException as exc:
            # The server may have processed the request (connection closed after the body was
            # read); retrying is safe because products are upserts keyed by their codes.
            self.requests["error"] += 1
            raise _Transient(f"{method} {path}: {_why(exc)}") from None
        status = response.status_code
        self.requests[str(status)] += 1
        if authed and status not in (401, 403, 408, 429):
            self._token_worked = True  # the server got past the token to answer this
        limiter.follow(response.headers.get("x-S2S-RateLimit"))
        if 200 <= status < 300:
            # A 2xx is the acknowledgement, whatever its body: sending again would queue twice.
            try:
                return response.json()
            except ValueError:
                log.warning("%s %s: HTTP %d with a body that is not JSON; taken as acknowledged", method, path, status)
                return {}
        detail = _detail(response)
        if status in TRANSIENT_STATUS or status >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"), self.settings.retry_after_cap)
            if status == 429:
                limiter.back_off(retry_after or 1.0)
            raise _Transient(f"{method} {path}: HTTP {status} {detail}", status, retry_after)
        if status in (401, 403):
            raise _TokenRefused(f"{method} {path}: HTTP {status} {detail}", status)
        if status in DATA_STATUS:
            errors = []
            try:
                errors = [e for e in response.json().get("errors") or [] if isinstance(e, dict)]
            except (ValueError, AttributeError):
                pass
            raise DataRejected(f"{method} {path}: HTTP {status} {detail}", status, errors)
        # 404, 405, 3xx...: the URL or a proxy is wrong, not the data. Nothing is refused; the work waits.
        raise SetupError(f"{method} {path}: unexpected HTTP {status} {detail}; check api.url", status)

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


def _why(exc: requests.RequestException) -> str:
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


def _detail(response: requests.Response) -> str:
    text = response.text[:300] if response.content else ""
    return redact(" ".join(text.split()))


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
