"""A threaded HTTP server with a route table, per-key rate limiting and injectable outages."""

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


GARBLED = b"<html><body><h1>502 Bad Gateway</h1></body></html>"  # bytes are answered as they are
DROPPED = 0  # the status of a call whose connection is closed without an answer


class Reply(Exception):
    """Raised by a route to answer with a status and a JSON body."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}


class Request:
    def __init__(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body


Route = tuple[str, re.Pattern, Callable[..., Any]]


class HttpDouble:
    """Subclasses add routes and say which credential a request carries (`credential`)."""

    def __init__(self, *, rate_limit: int = 60, window_s: float = 60.0) -> None:
        self.rate_limit = rate_limit
        self.window_s = window_s
        self.lock = threading.RLock()
        self.routes: list[Route] = []
        self.calls: list[tuple[str, str, float]] = []  # (method, path, epoch seconds) of every call a route answered
        self.throttled = 0  # 429 answers given
        self.outage = 0  # while > 0 every call answers 503 (and counts down when finite); -1: until cleared
        self.garbled = 0  # the same for a 200 whose body is a proxy's HTML page instead of JSON
        # (method, path pattern): the next such call is carried out, but answered 504 (its answer lost on the way)
        self.lose_answer: tuple[str, str] | None = None
        # (method, path pattern): the next such call is carried out, then its connection is closed with no
        # answer at all (a reset, a proxy's timeout): the client cannot know whether it was made
        self.drop_answer: tuple[str, str] | None = None
        self._seen: dict[str, deque] = {}
        # (method, path suffix) → released when set: such a call is applied at once and answered only then
        self.holding: dict[tuple[str, str], threading.Event] = {}
        self.held: list[str] = []  # the paths of the calls whose answer was held back
        self.server: ThreadingHTTPServer | None = None

    # ---------------------------------------------------------------- to override
    def credential(self, req: Request) -> str | None:
        raise NotImplementedError

    def route(self, method: str, pattern: str) -> Callable:
        def register(fn: Callable) -> Callable:
            self.routes.append((method, re.compile(f"^{pattern}$"), fn))
            return fn

        return register

    def hold_answers(self, method: str, suffix: str) -> threading.Event:
        """Apply every `method` call on a path ending in `suffix`, but keep its answer back until the
        returned event is set: a client that dies meanwhile never learns that its write was made."""
        release = threading.Event()
        self.holding[(method, suffix)] = release
        return release

    def _hold(self, method: str, path: str, status: int) -> None:
        for (m, suffix), release in list(self.holding.items()):
            if m == method and path.endswith(suffix) and status < 300 and not release.is_set():
                with self.lock:
                    self.held.append(path)
                release.wait(120)

    # ---------------------------------------------------------------- serving
    def _limit_headers(self, key: str) -> tuple[bool, dict[str, str]]:
        now = time.time()
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= now - self.window_s:
            seen.popleft()
        allowed = len(seen) < self.rate_limit
        if allowed:
            seen.append(now)
        reset = (seen[0] + self.window_s) if seen else now
        headers = {
            "X-RateLimit-Remaining": str(max(0, self.rate_limit - len(seen))),
            "X-RateLimit-Reset": f"{reset:.3f}",
        }
        if not allowed:
            headers["Retry-After"] = f"{max(0.0, reset - now):.3f}"
        return allowed, headers

    def handle(self, req: Request) -> tuple[int, Any, dict[str, str]]:
        key = self.credential(req)
        if key is None:
            return 401, {"detail": "Authentication credentials were not provided or are invalid."}, {}
        with self.lock:
            allowed, headers = self._limit_headers(key)
            if not allowed:
                self.throttled += 1
                return 429, {"detail": "Request was throttled."}, headers
            if self.outage:
                if self.outage > 0:
                    self.outage -= 1
                return 503, {"detail": "Service unavailable"}, headers
            if self.garbled:
                if self.garbled > 0:
                    self.garbled -= 1
                return 200, GARBLED, {**headers, "Content-Type": "text/html"}
            for method, pattern, fn in self.routes:
                m = pattern.match(req.path)
                if m and method == req.method:
                    self.calls.append((req.method, req.path, time.time()))
                    try:
                        status, body = fn(req, **m.groupdict())
                    except Reply as r:
                        return r.status, r.body, {**headers, **r.headers}
                    if self._lost(req, "lose_answer"):
                        return 504, {"detail": "Gateway Timeout"}, headers
                    if self._lost(req, "drop_answer"):
                        return DROPPED, None, {}
                    return status, body, headers
        return 404, {"detail": "Not found."}, headers

    def _lost(self, req: Request, fault: str) -> bool:
        """Whether the answer to `req` is to be lost by `fault` (set for one call, then cleared)."""
        wanted = getattr(self, fault)
        if wanted and wanted[0] == req.method and re.match(wanted[1], req.path):
            setattr(self, fault, None)
            return True
        return False

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, out, extra = double.handle(Request(self.command, parts.path, query, headers, body))
                if status == DROPPED:  # made, and the connection closed before any answer
                    self.close_connection = True
                    return
                double._hold(self.command, parts.path, status)
                data = b"" if out is None else out if isinstance(out, bytes) else json.dumps(out).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **extra}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                try:
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client died waiting: nothing to answer
                    self.close_connection = True

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://{host}:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def paginate(rows: list[dict], query: dict[str, str], cap: int = 100) -> dict:
    """Plane's cursor pagination: `<per_page>:<page>:0` cursors."""
    per_page = max(1, min(int(query.get("per_page", 100)), cap))
    page = int(query.get("cursor", f"{per_page}:0:0").split(":")[1])
    chunk = rows[page * per_page : (page + 1) * per_page]
    more = (page + 1) * per_page < len(rows)
    return {
        "grouped_by": None,
        "sub_grouped_by": None,
        "total_count": len(rows),
        "count": len(chunk),
        "next_cursor": f"{per_page}:{page + 1}:0",
        "prev_cursor": f"{per_page}:{max(page - 1, 0)}:0",
        "next_page_results": more,
        "prev_page_results": page > 0,
        "total_pages": max(1, -(-len(rows) // per_page)),
        "total_results": len(rows),
        "extra_stats": None,
        "results": chunk,
    }
