"""Providers wired to the HTTP doubles, for the contract suite."""

import contextlib
from collections.abc import AsyncIterator

from nexus.board_sync.providers.base import BoardProvider
from nexus.board_sync.providers.http import RateLimiter
from nexus.board_sync.providers.internal import InternalProvider
from nexus.board_sync.providers.jira import JiraProvider
from nexus.board_sync.providers.plane import PlaneProvider
from nexus.dev.doubles.base import HttpDouble
from nexus.dev.doubles.jira import JiraDouble
from nexus.dev.doubles.plane import PlaneDouble

PROVIDERS = ("plane", "jira", "internal")
FAST = {"attempts": 4, "max_backoff_s": 0.05}


def make_double(kind: str, **kw) -> HttpDouble | None:
    if kind == "plane":
        return PlaneDouble(page_size=2, **kw)
    if kind == "jira":
        return JiraDouble(page_size=2, **kw)
    return None


def make_provider(
    kind: str, double: HttpDouble | None, url: str, *, credential: str | None = None, **retry
) -> BoardProvider:
    limiter = RateLimiter(0)  # no client-side spacing: the double's own limit is what is exercised
    retry = {**FAST, **retry}
    if kind == "plane":
        assert isinstance(double, PlaneDouble)
        return PlaneProvider(url, double.workspace, double.project_id, credential or "plane_api_key", limiter, **retry)
    if kind == "jira":
        return JiraProvider(url, "NEX", "bot@example.com", credential or "jira_api_token", limiter, **retry)
    return InternalProvider()


@contextlib.asynccontextmanager
async def served(kind: str, **kw) -> AsyncIterator[tuple[BoardProvider, HttpDouble | None]]:
    double = make_double(kind, **kw)
    url = double.start() if double else ""
    provider = make_provider(kind, double, url)
    try:
        yield provider, double
    finally:
        await provider.aclose()
        if double:
            double.stop()
