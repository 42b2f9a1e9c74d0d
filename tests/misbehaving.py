"""A small HTTP server on 127.0.0.1 that answers the way broken proxies and servers do.

    with Misbehaving("html", token="S3NTINEL") as server:
        client = ApiClient(ApiSettings(url=server.url, username="u", password="p", source_id=1))

`POST /v1/users/authenticate` always gets the API's login answer with `token`; every other
request is answered per `mode`:

  trickle       200 promising 100 bytes, then one byte every `interval` s
  html          200 text/html: a proxy's page echoing the request line (with ?token=) and the token
  empty         200 with an empty body
  wrong_json    200 JSON of another shape than the API's answer
  indexless400  400 whose errors name no item (index null), like the sandbox's shape errors
  indexed400    400 naming items 0 and 2
  flaky         the first `failures` requests 503 (an HTML page echoing the token), then the API's 200
  garbage       a broken status line echoing the token (it surfaces in http.client's exception text)

Bounded: at most `max_requests` requests are answered (later ones are closed unanswered), it
stops itself after `lifetime` seconds, and every thread is a daemon.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

MODES = ("trickle", "html", "empty", "wrong_json", "indexless400", "indexed400", "flaky", "garbage")
API_ANSWER = {"system_products": {"sync_product": 1}}


class Misbehaving:
    """A started server (see the module docstring); `paths` lists the paths it was asked for."""

    def __init__(self, mode: str, *, token: str = "tok-1234", interval: float = 0.5, failures: int = 2,
                 max_requests: int = 50, lifetime: float = 20.0):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
        self.mode, self.token, self.interval, self.failures = mode, token, interval, failures
        self.max_requests = max_requests
        self.paths: list[str] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Misbehaving:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def served(self, path: str) -> int | None:
        """Record a request; its number among the non-login requests, or None past max_requests."""
        with self._lock:
            self.paths.append(path)
            if len(self.paths) > self.max_requests:
                return None
            return sum(1 for p in self.paths if p != "/v1/users/authenticate")


def _handler_for(server: Misbehaving) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 5  # an idle keep-alive connection is closed after this many seconds

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            path = urlsplit(self.path).path
            number = server.served(path)
            if number is None:
                self.close_connection = True
                return
            if path == "/v1/users/authenticate":
                self.answer(200, "application/json", json.dumps({"system_user": {"token": server.token}}).encode())
                return
            getattr(self, server.mode)(number)

        def answer(self, status: int, content_type: str | None, body: bytes) -> None:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def echo_page(self, title: str) -> bytes:
            # the echoes come first, within the bytes an error message quotes
            return (f"<html><p>token {server.token}</p><p>POST {self.path}</p>"
                    f"<h1>{title}</h1></html>").encode()

        def trickle(self, number: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.flush()
            for _ in range(100):
                if server.stopping.wait(server.interval):
                    break
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:  # the client gave up: what the test wants
                    break
            self.close_connection = True

        def html(self, number: int) -> None:
            self.answer(200, "text/html; charset=utf-8", self.echo_page("Welcome to the proxy"))

        def empty(self, number: int) -> None:
            self.answer(200, "application/json", b"")

        def wrong_json(self, number: int) -> None:
            self.answer(200, "application/json", b'{"status": "ok"}')

        def indexless400(self, number: int) -> None:
            errors = [{"index": None, "field": "system_products", "message": "malformed request"}]
            self.answer(400, "application/json", json.dumps({"error": "bad request", "errors": errors}).encode())

        def indexed400(self, number: int) -> None:
            errors = [{"index": 2, "field": "product.variants.price", "message": "not a number"},
                      {"index": 0, "field": "product.title", "message": "required"}]
            self.answer(400, "application/json", json.dumps({"error": "validation failed", "errors": errors}).encode())

        def flaky(self, number: int) -> None:
            if number <= server.failures:
                self.answer(503, "text/html", self.echo_page("503 Service Unavailable"))
            else:
                self.answer(200, "application/json", json.dumps(API_ANSWER).encode())

        def garbage(self, number: int) -> None:
            self.wfile.write(f"HTTP/1.1 2OO OK token={server.token} {server.token}\r\n\r\n".encode())
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass  # the request line carries ?token=

    return Handler

