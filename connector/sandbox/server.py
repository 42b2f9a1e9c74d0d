"""The sandbox HTTP server: a local Stock2Shop API on 127.0.0.1 for trying the connector and tests.

    with Sandbox(SandboxConfig(rate=1.0)) as sb:      # ephemeral port, daemon thread
        requests.post(f"{sb.url}/v1/users/authenticate", json={...})
        sb.state()["queue"]

One lock guards all state; queued items are processed synchronously as they arrive, so the
queue log is in arrival order (FIFO). Never writes to disk; listens only on the host given.
"""

from __future__ import annotations

import email.utils
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from connector.sandbox import rules
from connector.sandbox.limits import Decision, FaultPlan, Observed, RateLimiter, Tokens
from connector.sandbox.search import QueryError, search
from connector.sandbox.settings import Faults, SandboxConfig
from connector.sandbox.store import Store

log = logging.getLogger("connector.sandbox")

Reply = tuple[int, dict]
QUEUE_FAULT = "sandbox fault: failed in the queue after it was acknowledged (--queue-fail-rate)"


@dataclass
class _Request:
    """One parsed request as the route handlers see it."""

    method: str
    path: str
    query: dict[str, str]
    body: bytes
    client: str
    user: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Route:
    handler: Callable[[Sandbox, _Request], Reply]
    public: bool  # no token needed; limited per client address at unauth_rate


class _Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.responses_429 = 0
        self.rate_limited = 0  # the 429s of the rate limit itself (not injected bursts): a client's pacing earned them
        self.by_status: dict[str, int] = {}
        self.by_path: dict[str, int] = {}  # requests per path, e.g. how many image requests a push made

    def count(self, status: int | str) -> None:
        key = str(status)
        self.by_status[key] = self.by_status.get(key, 0) + 1
        if status == 429:
            self.responses_429 += 1


class Sandbox:
    """A running (or startable) sandbox API. `start()` returns self; `url` is set once started."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        clock = self.config.clock
        self._lock = threading.Lock()
        self._tokens = Tokens(self.config.users, self.config.token_lifetime, clock)
        self._limiter = RateLimiter(clock)
        self._observed = Observed(clock)
        self._plan = FaultPlan(self.config.faults)
        self._store = Store(self.config.source_id, self.config.client_id)
        self._stats = _Stats()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.url = ""

    # ---- life -------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Sandbox:
        """Listen on host:port (0: a free port) and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        self._server = _Server((host, port), _Handler, self)
        bound_host, bound_port = self._server.server_address[:2]
        if not isinstance(bound_host, str):  # typeshed allows bytes; an AF_INET(6) socket reports str
            bound_host = str(bound_host)
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        self.url = f"http://{shown}:{bound_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections, free the port. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- Python inspection --------------------------------------------------------------

    def state(self) -> dict:
        """Products as stored, images with hash and size, the queue log, orders, stats."""
        with self._lock:
            snapshot = self._store.snapshot()
            snapshot["stats"] = {"requests": self._stats.requests,
                                 "responses_429": self._stats.responses_429,
                                 "rate_limited": self._stats.rate_limited,
                                 "max_requests_per_second": self._observed.max_per_second,
                                 "by_status": dict(self._stats.by_status),
                                 "by_path": dict(self._stats.by_path)}
            return snapshot

    def reset(self) -> None:
        """Forget products, images, orders, the queue log, stats and rate-limit history; users and
        their tokens stay. The fault plan starts again from its seed."""
        with self._lock:
            self._store.clear()
            self._stats = _Stats()
            self._observed.clear()
            self._limiter.clear()
            self._plan = FaultPlan(self._plan.faults)

    def issue_token(self, username: str = "demo") -> str:
        """Log `username` in without HTTP (no rate limit); like authenticate, it kills the
        user's earlier tokens. For tests and tools that need a token quickly."""
        with self._lock:
            token = self._tokens.authenticate(username, self.config.users.get(username))
        if token is None:
            raise KeyError(f"no sandbox user {username!r}")
        return token

    def set_faults(self, faults: Faults) -> None:
        """Swap the faults at runtime (e.g. `set_faults(Faults())` to stop them)."""
        with self._lock:
            self._plan = FaultPlan(faults)

    # ---- one request --------------------------------------------------------------------

    def _rate_header(self, public: bool) -> str:
        rate = self.config.unauth_rate if public else self.config.rate
        return f"{rate:g}"

    def handle(self, handler: _Handler, method: str) -> None:
        """Answer one request: inspection, or rate limit -> auth -> faults -> route."""
        parts = urlsplit(handler.path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        body, too_big = handler.read_body(self.config.max_body_bytes)
        request = _Request(method, path, query, body, handler.client_address[0])
        if path.startswith("/_sandbox/"):
            handler.reply(*self._inspect(request), rate=self._rate_header(True))
            return
        route, not_found = _find_route(method, path)
        public = route.public if route else True
        rate_header = self._rate_header(public)
        extra: dict[str, str]
        if too_big:
            status, payload, extra = 413, {"error": f"request body over {self.config.max_body_bytes} bytes"}, {}
        else:
            status, payload, extra, decision = self._decide(request, route, not_found, public)
            if decision and decision.drop and status < 400:
                handler.drop()
                return
        handler.reply(status, payload, rate=rate_header, extra=extra, close=too_big)

    def _decide(self, request: _Request, route: _Route | None, not_found: Reply,
                public: bool) -> tuple[int, dict, dict, Decision | None]:
        with self._lock:
            self._stats.requests += 1
            self._stats.by_path[request.path] = self._stats.by_path.get(request.path, 0) + 1
            self._observed.arrive()
            decision = self._plan.decide() if self._plan.applies(request.path) else None
            faults = self._plan.faults
        if decision and decision.latency:
            time.sleep(decision.latency)  # outside the lock: other clients are not slowed
        with self._lock:
            status, payload, extra = self._answer(request, route, not_found, public, decision, faults)
            self._stats.count("dropped" if decision and decision.drop and status < 400 else status)
        return status, payload, extra, decision

    def _answer(self, request: _Request, route: _Route | None, not_found: Reply, public: bool,
                decision: Decision | None, faults: Faults) -> tuple[int, dict, dict]:
        if decision and decision.burst:
            return 429, {"error": "too many requests (sandbox burst)"}, _retry_after(faults)
        rate = self.config.unauth_rate if public else self.config.rate
        token = request.query.get("token")
        key = ("token", token) if not public and token else ("client", request.client)
        if not self._limiter.allow(key, rate):
            self._stats.rate_limited += 1
            return 429, {"error": f"rate limit exceeded: at most {rate:g} requests per second"}, {}
        if route is None:
            return (*not_found, {})
        if not public:
            request.user = self._tokens.user(token)
            # user() is None for a missing token, so `token is None` only tells mypy what holds already
            if request.user is None or token is None or (decision and not self._tokens.use(token, faults.expire_after)):
                return 401, {"error": "invalid or expired token"}, {}
        if decision and decision.error_status:
            return decision.error_status, {"error": f"sandbox fault: HTTP {decision.error_status}"}, {}
        status, payload = route.handler(self, request)
        return status, payload, {}

    def _inspect(self, request: _Request) -> Reply:
        if request.method == "GET" and request.path == "/_sandbox/state":
            return 200, self.state()
        if request.method == "POST" and request.path == "/_sandbox/reset":
            self.reset()
            return 200, {"reset": True}
        return 404, {"error": f"no sandbox endpoint {request.method} {request.path}"}

    # ---- routes (called under the lock) ----------------------------------------------

    def _authenticate(self, request: _Request) -> Reply:
        body, problem = _json_object(request.body, "system_user_auth")
        auth = body.get("system_user_auth") if body else None
        if problem or not isinstance(auth, dict):
            return _shape_error("system_user_auth", problem or "body must be {\"system_user_auth\": "
                                "{\"username\": ..., \"password\": ...}}")
        token = self._tokens.authenticate(auth.get("username"), auth.get("password"))
        if token is None:
            return 401, {"error": "invalid username or password"}
        return 200, {"system_user": self._user_view(auth["username"], token)}

    def _valid_token(self, request: _Request) -> Reply:
        token = request.path.rsplit("/", 1)[-1]
        user = self._tokens.user(token)
        if user is None:
            return 401, {"error": "invalid or expired token"}
        return 200, {"system_user": self._user_view(user, token)}

    def _user_view(self, username: str, token: str) -> dict:
        return {"id": 1 + sorted(self.config.users).index(username), "username": username,
                "name": username, "surname": "", "email": f"{username}@sandbox.invalid",
                "client_id": self.config.client_id, "client_name": "Sandbox client", "active": 1,
                "admin": 0, "token": token, "channels": [], "sources": [], "customers": [],
                "fulfillment_services": [], "roles": [], "role_description": None}

    def _sources(self, request: _Request) -> Reply:
        return 200, {"system_sources": [{
            "id": self.config.source_id, "created": "2026-01-01T00:00:00+0000", "description": "Sandbox source",
            "sync_token": "0", "modified": "2026-01-01T00:00:00+0000", "client_id": self.config.client_id,
            "type": "apifact_push", "active": 1, "source_id": None}]}

    def _channels(self, request: _Request) -> Reply:
        return 200, {"system_channels": [{
            "id": channel, "created": "2026-01-01T00:00:00+0000",
            "description": "Sandbox channel" + (f" {n + 1}" if n else ""), "modified": "2026-01-01T00:00:00+0000",
            "client_id": self.config.client_id, "active": 1, "type": "website", "price_tier": None,
            "qty_availability": None} for n, channel in enumerate(self.config.channel_ids)]}

    def _check_source_param(self, request: _Request) -> Reply | None:
        given = request.query.get("source_id")
        if given is not None and given != str(self.config.source_id):
            return _shape_error("source_id", f"source_id {given!r} is not this user's source "
                                f"({self.config.source_id})", status=400)
        return None

    def _products_queue(self, request: _Request) -> Reply:
        items, problem = _items(request.body, "system_products")
        if problem:
            return problem
        refused = self._check_source_param(request)
        if refused:
            return refused
        normals, errors = [], []
        for index, item in enumerate(items):
            normal, item_errors = rules.normalize_product(item, index, self.config.source_id)
            errors += item_errors
            if normal:
                normals.append((index, normal))
        errors += rules.check_product_groups(normals, self._store.stored_variants)
        if errors:
            if self._plan.faults.anonymous_errors:
                return 400, {"error": "validation failed"}
            return 400, {"error": "validation failed", "errors": sorted(errors, key=lambda e: e["index"])}
        for _, normal in normals:
            if self._fails_in_queue(request):
                self._store.log("product", normal["source_product_code"], normal["source_variant_code"], None,
                                "failed", "none", QUEUE_FAULT)
            else:
                self._store.apply_product(normal)
        return 200, {"system_products": {"sync_product": len(normals)}}

    def _images_queue(self, request: _Request) -> Reply:
        items, problem = _items(request.body, "system_images")
        if problem:
            return problem
        normals, errors = [], []
        for index, item in enumerate(items):
            normal, item_errors = rules.normalize_image(item, index, self.config.source_id)
            errors += item_errors
            if normal:
                normals.append(normal)
        if errors:
            return 400, {"error": "validation failed", "errors": errors}
        for normal in normals:
            if self._fails_in_queue(request):
                self._store.log("image", normal["source_product_code"], normal["source_variant_code"],
                                normal["image_id"], "failed", "none", QUEUE_FAULT)
            else:
                self._store.apply_image(normal)
        return 200, {"system_images": {"sync_image": len(normals)}}

    def _fails_in_queue(self, request: _Request) -> bool:
        return self._plan.applies(request.path) and self._plan.fails_in_queue()

    def _products_search(self, request: _Request) -> Reply:
        # A query that must match some codes (verify's terms on source_product_code) looks only at
        # those products: the rest would be copied to be thrown away, for every page.
        codes = _required_codes(request.body)
        chosen = self._store.products if codes is None else [c for c in self._store.products if c in codes]
        if not self._sees_products(request):
            chosen = []  # no hits, as the real API answers a user whose role needs a channel (api-docs)
        elif self.config.channel_narrows_search and "channel_id" in request.query:
            chosen = [code for code in chosen if self._linked(code, request.query["channel_id"])]
        docs = [self._store.product_view(code) for code in chosen]
        return self._search(request, docs, "system_products")

    def _sees_products(self, request: _Request) -> bool:
        """Whether a product search finds anything: through one of the user's channels always,
        through another channel never, and without `channel_id` unless the user needs one
        (SandboxConfig.search_needs_channel)."""
        channel = request.query.get("channel_id")
        if channel is None:
            return not self.config.search_needs_channel
        return channel in {str(c) for c in self.config.channel_ids}

    def _linked(self, code: str, channel: str) -> bool:
        """Whether the product is linked to the channel (SandboxConfig.channel_narrows_search)."""
        return any(str(link.get("channel_id")) == channel for link in self._store.products[code].get("channels") or []
                   if isinstance(link, dict))

    def _orders_search(self, request: _Request) -> Reply:
        return self._search(request, [dict(order) for order in self._store.orders], "system_orders")

    def _search(self, request: _Request, docs: list[dict], key: str) -> Reply:
        body, problem = _json_object(request.body or b"{}", "query")
        if problem:
            return _shape_error("query", problem)
        try:
            total, page = search(docs, body)
        except QueryError as exc:
            return _shape_error("query", str(exc))
        hits: list[dict[str, Any]] = [{"_id": str(doc.get("id")), "_score": None, "_source": {}} for doc in page]
        return 200, {"took": 0, "timed_out": False, "hits": {"total": total, "max_score": None, "hits": hits},
                     key: page, "took_s2s": 0}

    def _order_queue(self, request: _Request) -> Reply:
        for name, expected in (("channel_id", self.config.channel_ids), ("client_id", [self.config.client_id])):
            given = request.query.get(name)
            if given is None:
                return _shape_error(name, f"the {name} query parameter is required")
            if given not in {str(e) for e in expected}:
                return _shape_error(name, f"{name} {given!r} is not yours ({', '.join(map(str, expected))})")
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _shape_error("order", f"malformed JSON: {exc}")
        if not isinstance(payload, dict):
            return _shape_error("order", "the order must be a JSON object")
        message = self._store.add_order(payload, int(request.query["channel_id"]))
        return 200, {"message": "order received", "queue_messages": [message]}


_ROUTES: dict[tuple[str, str], _Route] = {
    ("POST", "/v1/users/authenticate"): _Route(Sandbox._authenticate, public=True),
    ("GET", "/v1/sources"): _Route(Sandbox._sources, public=False),
    ("GET", "/v1/channels"): _Route(Sandbox._channels, public=False),
    ("POST", "/v1/products/queue"): _Route(Sandbox._products_queue, public=False),
    ("POST", "/v1/images/queue"): _Route(Sandbox._images_queue, public=False),
    ("POST", "/v1/products/elastic_search"): _Route(Sandbox._products_search, public=False),
    ("POST", "/v1/orders/elastic_search"): _Route(Sandbox._orders_search, public=False),
    ("POST", "/v2-queue/order"): _Route(Sandbox._order_queue, public=False),
}
_VALID_TOKEN = _Route(Sandbox._valid_token, public=True)


def _find_route(method: str, path: str) -> tuple[_Route | None, Reply]:
    if path.startswith("/v1/users/valid_token/"):
        return (_VALID_TOKEN if method == "GET" else None), (405, {"error": f"{method} not allowed on {path}"})
    route = _ROUTES.get((method, path))
    if route:
        return route, (200, {})
    if any(p == path for _, p in _ROUTES):
        return None, (405, {"error": f"{method} not allowed on {path}"})
    return None, (404, {"error": f"no endpoint {method} {path}"})


def _required_codes(raw: bytes) -> set[str] | None:
    """The source_product_codes a search body's bool filter/must requires one of (term or terms),
    or None when it requires none (or is not a query the sandbox reads; search() then says why)."""
    try:
        body = json.loads(raw or b"{}")
        clauses = body["query"]["bool"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return None
    if not isinstance(clauses, dict):
        return None
    for key in ("filter", "must"):
        listed = clauses.get(key) or []
        for clause in listed if isinstance(listed, list) else [listed]:
            for kind in ("terms", "term"):
                spec = clause.get(kind) if isinstance(clause, dict) else None
                if isinstance(spec, dict) and list(spec) == ["source_product_code"]:
                    wanted = spec["source_product_code"]
                    if kind == "terms" and isinstance(wanted, list):
                        return {str(code) for code in wanted}
                    if kind == "term" and not isinstance(wanted, (dict, list)):
                        return {str(wanted)}
    return None


def _json_object(raw: bytes, wrapper: str) -> tuple[dict | None, str | None]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"malformed JSON: {exc}"
    if not isinstance(body, dict):
        return None, f"body must be a JSON object with {wrapper!r}"
    return body, None


def _items(raw: bytes, wrapper: str) -> tuple[list, Reply | None]:
    body, problem = _json_object(raw, wrapper)
    if problem:
        return [], _shape_error(wrapper, problem)
    assert body is not None  # _json_object returns a body exactly when there is no problem
    items = body.get(wrapper)
    if not isinstance(items, list):
        return [], _shape_error(wrapper, f"body must be {{{wrapper!r}: [item, ...]}}; "
                                f"{wrapper} is {'missing' if items is None else 'not a list'}")
    return items, None


def _shape_error(field_name: str, message: str, status: int = 400) -> Reply:
    return status, {"error": message, "errors": [{"index": None, "field": field_name, "message": message}]}


def _retry_after(faults: Faults) -> dict:
    if faults.retry_after == "seconds":
        return {"Retry-After": str(faults.retry_after_seconds)}
    if faults.retry_after == "date":
        return {"Retry-After": email.utils.formatdate(time.time() + faults.retry_after_seconds, usegmt=True)}
    return {}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, sandbox: Sandbox):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sandbox = sandbox
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Stock2ShopSandbox/1"
    timeout = 30  # an idle keep-alive connection is closed after this many seconds
    # Headers and body go out in two writes; with Nagle's algorithm the body waits for the
    # client's delayed ACK of the headers (~40 ms on Linux) on every keep-alive request.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.sandbox._lock:
            self.server.sandbox._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.sandbox._lock:
                self.server.sandbox._connections.discard(self.connection)

    def do_GET(self) -> None:
        self.server.sandbox.handle(self, "GET")

    def do_POST(self) -> None:
        self.server.sandbox.handle(self, "POST")

    def read_body(self, limit: int) -> tuple[bytes, bool]:
        """The request body, or (b"", True) when Content-Length is over `limit`."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > limit:
            return b"", True
        return (self.rfile.read(length) if length > 0 else b""), False

    def reply(self, status: int, payload: dict, rate: str, extra: dict | None = None, close: bool = False) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-S2S-RateLimit", rate)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def drop(self) -> None:
        """Close the connection without answering (the request was processed)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        # The request line carries ?token=...; only the method and path (no query) are logged.
        path = urlsplit(self.path).path if hasattr(self, "path") else "-"
        if path.startswith("/v1/users/valid_token/"):
            path = "/v1/users/valid_token/<redacted>"
        log.debug("%s %s %s", self.client_address[0], getattr(self, "command", "-"), path)
