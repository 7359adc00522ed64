"""The litestar application: routes, auth, problem+json errors, and a lifespan that wires the
database, NATS, the run-event consumer and the background sweeps."""

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from nexus.core_api.agents.routes import AgentController
from nexus.core_api.auth.guards import ApiKeyAuth
from nexus.core_api.auth.keys import KeyCache, ensure_bootstrap_admin
from nexus.core_api.background import run_background
from nexus.core_api.context import Context
from nexus.core_api.errors import EXCEPTION_HANDLERS, AnswerPromptly
from nexus.core_api.headers import security_headers
from nexus.core_api.health import healthz, readyz
from nexus.core_api.json_guard import guard_json_body
from nexus.core_api.observability import HttpMetricsMiddleware, request_tracing
from nexus.core_api.repositories.routes import RepositoryController
from nexus.core_api.runs.routes import RunController
from nexus.core_api.settings import CoreSettings
from nexus.core_api.skills.routes import SkillController
from nexus.core_api.tasks.routes import TaskController
from nexus.core_api.workflow import ends
from nexus.db.cache import ReadCache
from nexus.db.cache import install as install_cache
from nexus.db.connection import connect_db
from nexus.domain.settings import load_settings
from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.core_api.held import KeySlots
from nexus.observability.secrets import SecretStore
from nexus.core_api.approvals.routes import ApprovalController
from nexus.core_api.audit.routes import AuditController
from nexus.core_api.events.routes import system_events
from nexus.core_api.goals.routes import GoalController
from nexus.core_api.keys.routes import ApiKeyController, mint_run_token
from nexus.core_api.memory.routes import MemoryController, preview_memory
from nexus.core_api.sessions.routes import SessionController, run_session_tree
from nexus.core_api.errors import document_problems
from nexus.core_api.schedules.routes import ScheduleController
from nexus.core_api.chat_bindings.routes import ChatBindingController
from nexus.core_api.ledger.routes import verify_run_ledger
from nexus.core_api.board.routes import BoardController, BoardProviderController
from nexus.core_api.board.webhooks import WebhookController
from nexus.core_api.budgets.routes import BudgetController
from nexus.core_api.prices.routes import PriceController
from nexus.core_api.prices.service import seed as seed_prices
from nexus.core_api.ui.render import template_config as ui_templates
from nexus.core_api.ui.routes import ui_routers

log = logging.getLogger("nexus.core_api")
# Net container allocations between two young collections in the served process (docs/throughput.md:
# a collection of ~10,000 young objects pauses the loop ~5 ms, every few seconds under load).
YOUNG_GC_THRESHOLD = 10_000

ROUTES: list[Any] = document_problems(
    [
        healthz,
        readyz,
        AgentController,
        SkillController,
        RepositoryController,
        TaskController,
        RunController,
        GoalController,
        MemoryController,
        preview_memory,
        SessionController,
        run_session_tree,
        ApprovalController,
        ApiKeyController,
        mint_run_token,
        AuditController,
        system_events,
        ScheduleController,
        ChatBindingController,
        verify_run_ledger,
        BoardController,
        BoardProviderController,
        WebhookController,
        BudgetController,
        PriceController,
    ]
)


def create_app(
    settings: CoreSettings,
    *,
    background: bool = True,
    environ: Mapping[str, str] | None = None,
    freeze_gc: bool = False,
) -> Litestar:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        cache = ReadCache(settings.read_cache_ttl_s) if settings.read_cache_ttl_s > 0 else None
        db = await connect_db(settings.mongodb_url, settings.mongodb_db, listeners=[cache] if cache else None)
        install_cache(cache)
        nc = await connect(settings.nats_url, "core-api", creds=settings.nats_creds)
        js = nc.jetstream()
        await ensure_streams(js, settings.jetstream_replicas)
        ctx = Context(
            settings=settings,
            nc=nc,
            js=js,
            publisher=Publisher(js, "core-api"),
            secrets=SecretStore(Path(settings.secrets_dir), environ or {}),
        )
        app.state.ctx = ctx
        app.state.db = db
        await ends.follow_announced(nc)  # waits for runs' ends (`?wait_s=`, event streams) woken by any core-api
        await ensure_bootstrap_admin(settings.admin_key, Path(settings.admin_key_file))
        await seed_prices()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(run_background(ctx, stop))] if background else []
        if freeze_gc:  # the served process (not a test's app, whose garbage must stay collectable)
            # What startup made (modules, routes, compiled templates) lives as long as the process: out
            # of the collector's sight, a full collection stops requests for a few ms instead of ~100.
            gc.freeze()
            # A young collection every 700 net allocations (Python's default) ran ~25 times a second under
            # load, each promoting the state of requests in flight, so full collections came every few
            # seconds: ~7 % of the loop's CPU. One every YOUNG_GC_THRESHOLD does the same work for ~0.3 %.
            gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
        try:
            yield
        finally:
            stop.set()
            for t in tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(t, 10)
            install_cache(None)
            if "run_feed" in vars(ctx):  # made by the first run stream: its consumer is removed, not left to expire
                await ctx.run_feed.close()
            await nc.drain()
            await db.close()

    tracing_plugins, traced_by = request_tracing()
    return Litestar(
        route_handlers=[*ROUTES, *ui_routers()],  # the web UI under /ui: built per app, its pages call the routes above
        lifespan=[lifespan],
        state=State(
            {
                "key_cache": KeyCache(),
                "settings": settings,
                "stream_slots": KeySlots(settings.sse_streams_per_key, "event streams"),
                "wait_slots": KeySlots(settings.waits_per_key, "waiting requests (wait_s)"),
            }
        ),
        middleware=[
            *traced_by,
            HttpMetricsMiddleware(),
            AnswerPromptly(),
            DefineMiddleware(
                ApiKeyAuth,
                # /ui: its own session cookie (nexus.core_api.ui.auth)
                exclude=["^/healthz$", "^/readyz$", "^/schema", "^/v1/webhooks/", "^/ui"],
            ),
        ],
        plugins=tracing_plugins,
        logging_config=None,  # the process's logging is the shared setup's (JSON or text, with run and trace ids)
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]  # litestar types handlers per exception class
        before_request=guard_json_body,
        before_send=[security_headers],
        template_config=ui_templates(),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Nexus core-api",
            version="0.1.0",
            description="The admin surface of Nexus, the Agent Operating System. "
            "Authenticate with `Authorization: Bearer <key>`.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
        debug=False,
    )


def create_app_from_env() -> Litestar:
    """Granian's factory: settings come from NEXUS_* variables, read here and only here."""
    return create_app(load_settings(CoreSettings, os.environ), environ=os.environ, freeze_gc=True)


_ = AppConfig
