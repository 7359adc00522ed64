"""Each UI response says how long the server took to make it (`Server-Timing: app;dur=<ms>`), from
the request reaching the UI's router to the response's first byte: the session lookup, the API
reads, the template render. What a benchmark reads to time pages without the network or the client."""

import time

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send


class ServerTimingMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        start = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - start) * 1000
                message["headers"] = [*message.get("headers", []), (b"server-timing", f"app;dur={took:.2f}".encode())]
            await send(message)

        await next_app(scope, receive, timed)
