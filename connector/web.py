"""The status page and /healthz, served by `connector watch` on `watch.http_port`.

    server = StatusServer(settings, health, rate=lambda: client.limiter.rate)
    server.start()          # a thread of its own; raises ConfigError when it must not start
    ...
    server.stop()

Routes: `GET /` the page (overview.py gathers, page.py renders), `GET /healthz` the health
snapshot (200 ok, 503 otherwise), `GET /files/archive|failed/…` a report, reason or refused-rows
file (nothing else, nothing outside those folders), `POST /retry` puts a failed file back into
the inbox, `GET|POST /login` when a token is needed.

It never blocks or slows the watch loop: stdlib http.server in daemon threads, reading only the
snapshot the loop publishes (Health), a read-only SQLite connection and the sidecar files.

Security: bound to 127.0.0.1 (the default) there is no login, and requests must name a loopback
Host (a web page elsewhere cannot reach it through DNS rebinding). Bound to any other address
it refuses to start without `watch.http_token`; then every request needs the token, in an
`Authorization: Bearer` header or through the login form, which sets an HttpOnly, SameSite=Strict
cookie (never the token itself). Every action is a POST carrying a CSRF token (an HMAC of the
session under a key made at start-up); a foreign Origin is refused. The page never shows a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import mimetypes
import secrets
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from connector.config import OWN_TOKEN, Settings, is_loopback
from connector.errors import ConfigError
from connector.health import Health
from connector.logs import redact, register_secret
from connector.overview import Overview, PutBackError
from connector.page import render, render_login

REFRESH_S = 10  # the page's meta refresh
MAX_FORM_BYTES = 8192
COOKIE = "connector_session"
NOTES_KEPT = 50
POLL_S = 0.1  # how soon the server notices a stop (its shutdown waits for this)
HEADERS = {
    # nothing is fetched from anywhere: styles are inline, there is no script at all
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes Chromium send `Origin: null` with forms
    "Cache-Control": "no-store",
}


class StatusServer:
    """The page's HTTP server on `watch.http_host:watch.http_port`, in daemon threads."""

    def __init__(self, settings: Settings, health: Health, *, rate: Callable[[], float | None] = lambda: None,
                 log: logging.Logger | None = None):
        w = settings.watch
        if w.http_port is None:
            raise ValueError("watch.http_port is not set")
        self.host, self.port = w.http_host, w.http_port
        self.token = w.http_token
        if not is_loopback(self.host) and not self.token:
            raise ConfigError([f"watch.http_host: {self.host!r} is not a loopback address: set watch.http_token "
                               "(or S2S_HTTP_TOKEN) so the status page asks for it, or keep 127.0.0.1"])
        if self.token and self.token == settings.api.password:
            raise ConfigError([OWN_TOKEN])
        register_secret(self.token)
        self.health = health
        self.rate = rate
        self.log = log or logging.getLogger("connector.web")
        self.overview = Overview(settings)
        self._key = secrets.token_bytes(32)  # signs the session and CSRF tokens; new at every start
        self.session = secrets.token_urlsafe(32)  # the cookie a login sets (never the token itself)
        self._notes: OrderedDict[str, tuple[str, bool]] = OrderedDict()
        self._notes_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifetime -----------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve in a daemon thread; raises OSError when the address cannot be bound."""
        handler = _handler_for(self)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
        self._server = server_class((self.host.strip("[]"), self.port), handler)
        threading.Thread(target=self._server.serve_forever, args=(POLL_S,), name="status-page", daemon=True).start()
        self.health.url = f"{self.url}healthz"
        self.log.info("status page on %s%s", self.url, "" if self.token else " (no login: loopback only)",
                      extra={"event": "status_page"})

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def bound_port(self) -> int | None:
        return self._server.server_address[1] if self._server else None

    @property
    def url(self) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound_port}/"

    # -- tokens -------------------------------------------------------------------------------

    def csrf_for(self, session: str) -> str:
        return hmac.new(self._key, f"csrf:{session}".encode(), hashlib.sha256).hexdigest()

    def authenticated(self, headers: Any) -> str | None:
        """The session a request belongs to ("local" without a token), or None when it must log in."""
        if not self.token:
            return "local"
        auth = headers.get("Authorization") or ""
        if auth.startswith("Bearer ") and _same(auth[7:].strip(), self.token):
            return "bearer"
        try:
            cookie = SimpleCookie(headers.get("Cookie") or "")
        except CookieError:
            return None
        morsel = cookie.get(COOKIE)
        return "cookie" if morsel is not None and _same(morsel.value, self.session) else None

    def note(self, text: str, *, error: bool = False) -> str:
        """Keep a message for the page after a redirect; returns its id."""
        key = secrets.token_urlsafe(8)
        with self._notes_lock:
            self._notes[key] = (text, error)
            while len(self._notes) > NOTES_KEPT:
                self._notes.popitem(last=False)
        return key

    def take_note(self, key: str) -> tuple[str, bool] | None:
        with self._notes_lock:
            return self._notes.get(key)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def _handler_for(server: StatusServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 15  # a client that never finishes its request does not hold a thread for ever
        server_version = "connector"
        sys_version = ""

        def do_GET(self) -> None:
            self._guarded(self._get)

        def do_POST(self) -> None:
            self._guarded(self._post)

        def do_HEAD(self) -> None:
            self._send(405, b"", "text/plain")

        def _guarded(self, route: Callable[[str], None]) -> None:
            try:
                if not self._host_allowed():
                    self._send(421, b"this page answers only to a loopback address\n", "text/plain")
                    return
                route(urlsplit(self.path).path)
            except Exception as exc:  # noqa: BLE001 - one bad request must never stop the page
                server.log.warning("status page: %s on %s", redact(f"{type(exc).__name__}: {exc}"), self.command)
                self._send(500, b"internal error\n", "text/plain")

        # -- routes

        def _get(self, path: str) -> None:
            if path == "/login":
                if server.token:
                    self._html(200, render_login(csrf=server.csrf_for("login")))
                else:
                    self._redirect("/")  # nothing to log in to on loopback without a token
                return
            session = server.authenticated(self.headers)
            if session is None:
                if path in ("/healthz", "/health"):
                    self._send(401, b"token needed\n", "text/plain")
                else:
                    self._redirect("/login")
                return
            if path in ("/healthz", "/health"):
                snapshot = server.health.current()
                body = json.dumps(snapshot, indent=2).encode()
                self._send(200 if snapshot.get("state") == "ok" else 503, body, "application/json")
            elif path == "/":
                self._page(session)
            elif path.startswith("/files/"):
                self._file(unquote(path[len("/files/"):]))
            else:
                self._send(404, b"not found\n", "text/plain")

        def _post(self, path: str) -> None:
            form = self._form()
            if form is None:
                self._send(413, b"request too large\n", "text/plain")
                return
            if not self._origin_allowed():
                self._send(403, b"cross-origin request refused\n", "text/plain")
                return
            if path == "/login":
                self._login(form)
                return
            session = server.authenticated(self.headers)
            if session is None:
                self._send(401, b"token needed\n", "text/plain")
                return
            if not _same(form.get("csrf", ""), server.csrf_for(session)):
                self._send(403, b"missing or wrong CSRF token: reload the page and try again\n", "text/plain")
                return
            if path == "/retry":
                self._retry(form.get("file", ""))
            else:
                self._send(404, b"not found\n", "text/plain")

        def _page(self, session: str) -> None:
            view = server.overview.collect(server.health.current(), rate=_rate(server.rate))
            query = parse_qs(urlsplit(self.path).query)
            note = server.take_note(query.get("note", [""])[0])
            html = render(view, csrf=server.csrf_for(session), refresh=REFRESH_S,
                          message=note[0] if note else None, error=bool(note and note[1]))
            self._html(200, html)

        def _file(self, rest: str) -> None:
            area, _, relative = rest.partition("/")
            path = server.overview.resolve(area, relative)
            if path is None:
                self._send(404, b"not found\n", "text/plain")
                return
            body = path.read_bytes()
            kind = "application/json" if path.name.endswith(".json") else (
                "text/csv; charset=utf-8" if path.name.endswith(".csv")
                else mimetypes.guess_type(path.name)[0] or "application/octet-stream")
            disposition = "inline" if path.name.endswith(".json") else "attachment"
            self._send(200, body, kind, {"Content-Disposition": f'{disposition}; filename="{_ascii(path.name)}"'})

        def _retry(self, relative: str) -> None:
            try:
                name = server.overview.put_back(relative)
            except PutBackError as exc:
                self._redirect(f"/?note={server.note(f'Not put back: {exc}', error=True)}")
                return
            server.health.failed_changed()  # failed/ is counted again now, not at its next walk
            server.log.info("%s put back into the inbox from the status page", name,
                            extra={"event": "file_put_back", "file": name})
            self._redirect(f"/?note={server.note(f'{name} is back in the inbox and will be taken again.')}")

        def _login(self, form: dict[str, str]) -> None:
            if not server.token:
                self._redirect("/")
                return
            if not _same(form.get("csrf", ""), server.csrf_for("login")):
                self._send(403, b"missing or wrong CSRF token: reload the page and try again\n", "text/plain")
                return
            if not _same(form.get("token", ""), server.token):
                server.log.warning("status page: a login with a wrong token from %s", self.client_address[0],
                                   extra={"event": "login_refused"})
                self._html(401, render_login(csrf=server.csrf_for("login"), failed=True))
                return
            cookie = f"{COOKIE}={server.session}; HttpOnly; SameSite=Strict; Path=/"
            self._redirect("/", {"Set-Cookie": cookie})

        # -- checks

        def _host_allowed(self) -> bool:
            """On loopback, the Host must be a loopback name: a page elsewhere that rebinds its own
            name to 127.0.0.1 sends its own name, and is refused."""
            if not is_loopback(server.host):
                return True
            host = (self.headers.get("Host") or "").strip()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            return is_loopback(name)

        def _origin_allowed(self) -> bool:
            origin = self.headers.get("Origin")
            if origin is None:
                return True  # older browsers and tools; the CSRF token still guards the action
            return urlsplit(origin).netloc == (self.headers.get("Host") or "")

        def _form(self) -> dict[str, str] | None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return None
            if length > MAX_FORM_BYTES or length < 0:
                return None
            raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
            return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}

        # -- answers

        def _html(self, code: int, html: str) -> None:
            self._send(code, html.encode("utf-8"), "text/html; charset=utf-8")

        def _redirect(self, where: str, headers: dict[str, str] | None = None) -> None:
            self._send(303, b"", "text/plain", {"Location": where, **(headers or {})})

        def _send(self, code: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for name, value in {**HEADERS, "Content-Type": kind, "Content-Length": str(len(body)),
                                **(headers or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a refresh every few seconds would flood the log; actions are logged themselves

    return Handler


def _rate(rate: Callable[[], float | None]) -> float | None:
    try:
        return rate()
    except Exception:  # noqa: BLE001 - a figure for a person, never a reason to fail the page
        return None


def _ascii(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
