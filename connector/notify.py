"""Alerts to a webhook (`notify.webhook_url`): a file failed, the API is unreachable, it recovered.

    notifier = Notifier(settings.notify)
    notifier.start()
    notifier.file_failed("PRODUCTS.csv", "no row could be sent")   # from the watch loop; never blocks
    notifier.observe(snapshot)                                      # every health snapshot
    notifier.stop()

The loop only drops events into a bounded queue (a full queue drops the event and counts it);
one daemon thread of its own decides what to say and delivers it with a short timeout, so a slow
or dead receiver never holds up the service. A failed delivery is logged (once per streak) and
tried again with growing pauses; the messages waiting are bounded too.

Causes, and never more than one message per cause per `notify.after_minutes`:
  file:<name>   a file went to failed/ (the same file failing again within the window is told
                in one later message: "failed again N times"); beyond FILES_PER_WINDOW file
                messages in a window, further failures wait and are told together in one message
  api_down      the API has been unreachable for `after_minutes` (work waits in the ledger)
  api_up        it works again (only after an api_down message)

Messages hold names, counts and the redacted error text, never a token, password or the
webhook URL (itself a secret: it is never logged). `format`: slack and teams post `{"text": …}`;
json posts `{"text": …, "event": …, "host": …, "at": …, …}`; auto picks slack or teams by the
URL's host and json otherwise.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from connector.clock import SYSTEM_CLOCK, Clock
from connector.common import iso_utc
from connector.config import NotifySettings
from connector.logs import redact, register_secret

QUEUE_SIZE = 200  # events from the loop waiting for the notifier's thread
OUTBOX_SIZE = 50  # messages waiting to be delivered; the oldest is dropped beyond this
RETRY_BASE_S, RETRY_CAP_S = 10.0, 300.0
TICK_S = 1.0  # how often the thread looks at its timers
NAMES_SHOWN = 10
FILES_PER_WINDOW = 10  # file messages per window; more failures than this are told in one message


@dataclass
class Message:
    cause: str
    event: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0


class Notifier:
    """Turns the service's events into at most one webhook message per cause per window."""

    def __init__(self, settings: NotifySettings, *, clock: Clock = SYSTEM_CLOCK, log: logging.Logger | None = None,
                 post: Callable[..., Any] | None = None, tick: float = TICK_S, retry_base: float = RETRY_BASE_S,
                 retry_cap: float = RETRY_CAP_S):
        if not settings.webhook_url:
            raise ValueError("notify.webhook_url is not set")
        self.url = settings.webhook_url
        _register_url(self.url)
        self.format = settings.format if settings.format != "auto" else detect_format(self.url)
        self.window = settings.after_minutes * 60.0
        self.timeout = settings.timeout
        self.clock = clock
        self.log = log or logging.getLogger("connector.notify")
        self.post = post or requests.post
        self.tick = tick
        self.retry_base, self.retry_cap = retry_base, retry_cap
        self.host = socket.gethostname()
        self.events: queue.Queue[tuple[str, Any, Any]] = queue.Queue(QUEUE_SIZE)
        self.dropped = 0  # events the full queue could not take
        self.outbox: deque[Message] = deque()
        self.delivered: list[Message] = []  # the last few, for a person debugging (and the tests)
        self._last_sent: dict[str, float] = {}
        self._held: dict[str, list[str]] = {}  # file causes still in their window: the reasons since
        self._overflow: list[tuple[str, str]] = []  # file failures beyond FILES_PER_WINDOW, told together
        self._file_sends: deque[float] = deque()  # when file messages went, within the window
        self._lost = 0  # messages dropped from a full outbox, not yet mentioned
        self._api_down: str | None = None  # the last error while the API is down
        self._down_since: float | None = None
        self._down_told = False
        self._up_due = False
        self._next_try = 0.0
        self._retry_delay = retry_base
        self._failing = False
        self.rounds = 0  # how often the thread has looked at its events and timers (for a person debugging, and tests)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)

    # -- the service's side: never blocks ----------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self.log.info("alerts go to the notify.webhook_url (%s format)", self.format, extra={"event": "notify"})

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def file_failed(self, name: str, reason: str) -> None:
        self._put(("file", name, reason))

    def observe(self, snapshot: dict[str, Any]) -> None:
        """A health snapshot: the API is down while work waits on it (see `api_trouble`)."""
        self._put(("api", api_trouble(snapshot), None))

    def _put(self, event: tuple[str, Any, Any]) -> None:
        try:
            self.events.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    # -- the notifier's thread ---------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self.events.get(timeout=self.tick)
            except queue.Empty:
                event = None
            try:
                if event is not None:
                    self._handle(*event)
                self._timers()
                self._deliver()
            except Exception:
                self.log.exception("alerts: unexpected error")
            self.rounds += 1
        self._last_round()

    def _last_round(self) -> None:
        """At stop, what is waiting gets one try; the service does not wait for it beyond `stop`'s
        timeout (the thread is a daemon)."""
        try:
            while True:
                self._handle(*self.events.get_nowait())
        except queue.Empty:
            pass
        try:
            self._timers()
            self._deliver(final=True)
        except Exception:
            self.log.exception("alerts: unexpected error")

    def _handle(self, kind: str, a: Any, b: Any) -> None:
        now = self.clock.monotonic()
        if kind == "file":
            cause, reason = f"file:{a}", redact(str(b))
            if not self._allowed(cause, now, peek=True):
                self._held.setdefault(cause, []).append(reason)
            elif self._file_budget(now):
                self._allowed(cause, now)
                self._send(Message(cause, "file_failed", f"{a} failed: {reason}", {"file": a, "reason": reason}))
            else:
                self._overflow.append((str(a), reason))
        elif kind == "api":
            if a is not None:
                if self._down_since is None:
                    self._down_since = now
                self._api_down = a
                self._up_due = False
            elif self._down_since is not None:
                if self._down_told:
                    self._up_due = True
                self._down_since, self._api_down = None, None

    def _timers(self) -> None:
        """What waited for its window: a held file failure, the API down long enough, a recovery."""
        now = self.clock.monotonic()
        if self._overflow and self._file_budget(now):
            names = sorted({name for name, _ in self._overflow})
            for name in names:
                self._last_sent[f"file:{name}"] = now
            more = len(names) - NAMES_SHOWN
            shown = ", ".join(names[:NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")
            self._send(Message("files", "files_failed", f"{len(self._overflow)} more file failure(s): {shown}; the "
                               "reasons are beside each file in failed/", {"files": names[:100]}))
            self._overflow = []
        for cause in [c for c in self._held if self._allowed(c, now, peek=True) and self._file_budget(now)]:
            reasons = self._held.pop(cause)
            self._allowed(cause, now)
            name = cause.split(":", 1)[1]
            self._send(Message(cause, "file_failed", f"{name} failed again {len(reasons)} time(s) since the last "
                               f"message; the last reason: {reasons[-1]}", {"file": name, "reason": reasons[-1],
                                                                            "times": len(reasons)}))
        if (self._down_since is not None and not self._down_told and now - self._down_since >= self.window
                and self._allowed("api_down", now)):
            self._down_told = True
            minutes = (now - self._down_since) / 60
            self._send(Message("api_down", "api_unreachable",
                               f"the Stock2Shop API has been unreachable for {minutes:.0f} min; work waits in the "
                               f"ledger and is sent when it answers. Last error: {redact(self._api_down or '')}",
                               {"minutes": round(minutes, 1), "last_error": redact(self._api_down or "")}))
        if self._up_due and self._allowed("api_up", now):
            self._up_due = self._down_told = False
            self._send(Message("api_up", "api_recovered", "the Stock2Shop API answers again; the waiting work is "
                               "being sent", {}))

    def _file_budget(self, now: float) -> bool:
        """At most FILES_PER_WINDOW file messages per window (each taken when this says yes); the
        rest is told in one message when the window allows: a burst of failures is not a flood."""
        while self._file_sends and now - self._file_sends[0] >= self.window:
            self._file_sends.popleft()
        if len(self._file_sends) >= FILES_PER_WINDOW:
            return False
        self._file_sends.append(now)
        return True

    def _allowed(self, cause: str, now: float, *, peek: bool = False) -> bool:
        last = self._last_sent.get(cause)
        if last is not None and now - last < self.window:
            return False
        if not peek:
            self._last_sent[cause] = now
        return True

    def _send(self, message: Message) -> None:
        message.at = self.clock.time()
        if self.dropped:
            message.text += f" ({self.dropped} event(s) were dropped: the alert queue was full)"
            self.dropped = 0
        if self._lost:
            message.text += f" ({self._lost} older alert(s) were never delivered: too many waited)"
            self._lost = 0
        self.outbox.append(message)
        while len(self.outbox) > OUTBOX_SIZE:
            self.outbox.popleft()
            if not self._lost:
                self.log.warning("alerts: %d undelivered alerts wait; the oldest are dropped", OUTBOX_SIZE,
                                 extra={"event": "notify_dropped"})
            self._lost += 1

    def _deliver(self, *, final: bool = False) -> None:
        while self.outbox and (final or not self._stop.is_set()):
            now = self.clock.monotonic()
            if now < self._next_try and not final:
                return
            message = self.outbox[0]
            problem = self._post(message)
            if problem is None:
                self.outbox.popleft()
                self.delivered = [*self.delivered[-19:], message]
                if self._failing:
                    self.log.info("alerts: delivered again", extra={"event": "notify_ok"})
                self._failing, self._retry_delay = False, self.retry_base
                continue
            if not self._failing:  # once per streak, never the URL
                self.log.warning("alerts: the webhook did not take a %s alert (%s); %d waiting, tried again later",
                                 message.event, problem, len(self.outbox), extra={"event": "notify_failed"})
            self._failing = True
            self._next_try = now + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, self.retry_cap)
            return

    def _post(self, message: Message) -> str | None:
        """None when the webhook took it, else why not (no URL, no response body)."""
        try:
            reply = self.post(self.url, json=self.payload(message), timeout=(self.timeout, self.timeout))
        except requests.RequestException as exc:
            return type(exc).__name__
        status = getattr(reply, "status_code", 0)
        return None if 200 <= status < 300 else f"HTTP {status}"

    def payload(self, message: Message) -> dict[str, Any]:
        text = f"connector on {self.host}: {message.text}"
        if self.format in ("slack", "teams"):
            return {"text": text}
        return {"text": text, "event": message.event, "host": self.host, "at": iso_utc(message.at), **message.fields}


def _register_url(url: str) -> None:
    """The webhook URL is its own credential (Slack's and Teams' carry it in the path): redact it
    whole, and its path and query as urllib3 logs them at DEBUG."""
    parts = urlsplit(url)
    register_secret(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    for secret in (target, parts.path, parts.query):
        if len(secret) >= 8:
            register_secret(secret)


def detect_format(url: str) -> str:
    """slack for hooks.slack.com, teams for Microsoft's webhook hosts, json otherwise."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "hooks.slack.com":
        return "slack"
    if host.endswith((".webhook.office.com", ".logic.azure.com", "outlook.office.com")):
        return "teams"
    return "json"


def api_trouble(snapshot: dict[str, Any]) -> str | None:
    """The API's last error while it is down, else None.

    Down: the loop says work waits on the API (`api_waiting`), or work is waiting and the last
    error is newer than the last success (a long file retrying inside one request).
    """
    error = snapshot.get("last_error") if isinstance(snapshot.get("last_error"), dict) else None
    message = str(error.get("message")) if error else "the API does not answer"
    if snapshot.get("api_waiting"):
        return message
    backlog = snapshot.get("backlog")
    backlog = backlog if isinstance(backlog, dict) else {}
    waiting = (backlog.get("batches") or 0) + (backlog.get("images") or 0) > 0
    success = snapshot.get("last_success_at")
    if waiting and error and (not success or str(error.get("at")) >= str(success)):
        return message
    return None
