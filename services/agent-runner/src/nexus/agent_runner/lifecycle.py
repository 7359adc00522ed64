"""A run's life in its own process, after the first event: settings, logging and tracing, the run config,
the session under its span, the verdict, the exit code. `main` imports this module once it has announced
the run (its cold start imports nothing heavy before the first event).

Everything is imported at the top, once per process: a runner forked from the warm zygote finds this
module imported and calls straight in. Imports inside the functions (of modules long loaded) cost a forked
child ~90 page faults a run: each `import` statement reads the module's spec (`_initializing`) and counts
a reference to the module and its spec, which writes — copies — their pages."""

import _signal
import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from nexus.agent_runner import runner_log, workspace
from nexus.agent_runner.hypervisor.secrets import SecretBox
from nexus.agent_runner.process_limits import ProcessLimits
from nexus.agent_runner.relay import RunBus
from nexus.agent_runner.reporter import RunReporter
from nexus.agent_runner.session import RunSession
from nexus.agent_runner.settings import RunnerSettings, secrets_from_env
from nexus.domain.settings import load_settings
from nexus.events.bus import connect
from nexus.events.payloads import RunConfig, SessionOpened
from nexus.observability.inspection import close_to_inspection
from nexus.observability.logs import run_id_var, setup_logging
from nexus.observability.tracing import context_from_env, flush_tracing, setup_tracing, span, tracer

# The session's agent kernel hosts one agent: its lines on starting and stopping say nothing about the
# run (two JSON lines, ~0.3 ms of every trivial run); its warnings still show.
QUIET_LOGGERS = ("nexus.kernel",)


class _Masking(logging.Filter):
    """A log record's message (and traceback) masked. A class of the module, not one made per run."""

    def __init__(self, mask: Callable[[str], str]) -> None:
        super().__init__()
        self.mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.mask(record.getMessage()), None
        if record.exc_info:
            record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _mask_logs(mask: Callable[[str], str]) -> None:
    """Every log line of this process (tracebacks too) goes out masked, like its events."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Masking(mask))


async def run(settings: RunnerSettings, environ: dict[str, str], *, announced: bool = False) -> int:
    """The run's session under one span, the child of the worker's launch (TRACEPARENT), with the run's id
    on every log line."""

    cfg = msgspec.json.decode(Path(settings.run_config).read_bytes(), type=RunConfig)
    run_id_var.set(cfg.run_id)
    attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.id": cfg.agent_id,
        "gen_ai.provider.name": cfg.llm.provider,
        "gen_ai.request.model": cfg.llm.model,
        "nexus.run_id": cfg.run_id,
        "nexus.attempt": settings.attempt,
        "nexus.task_id": cfg.task_id or "",
        "nexus.session_id": cfg.session_id or "",
    }
    with span(
        tracer("nexus.agent_runner"), "invoke_agent", context=context_from_env(environ), attributes=attributes
    ) as session_span:
        code = await _run(settings, environ, cfg, announced=announced)
        session_span.set_attribute("nexus.exit_code", code)
        return code


async def _run(settings: RunnerSettings, environ: dict[str, str], cfg: RunConfig, *, announced: bool = False) -> int:

    log = logging.getLogger("nexus.agent_runner")
    limits = ProcessLimits()
    secrets = secrets_from_env(environ, cfg.secrets)
    # Its own connection, with its own credential: at once, or (a forked run whose publishes the worker
    # relays) when it first needs more than to publish.
    bus = await RunBus.open(
        lambda: connect(settings.nats_url, f"agent-runner-{cfg.run_id}", creds=settings.nats_creds, user=cfg.run_id),
        settings.relay_fd,
    )
    js = bus.js
    box = SecretBox(secrets)
    _mask_logs(box.mask)
    # Events are published: a value in an encoding the canary knows is masked there too.
    reporter = RunReporter(js, cfg.run_id, settings.attempt, masker=box.mask_forms)
    if not announced:
        await reporter.status("running")
    reporter.start_heartbeat(settings.heartbeat_s)
    code = 0
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    cancelled = False

    def on_term() -> None:
        nonlocal cancelled
        cancelled = True
        if main_task:
            main_task.cancel()

    restore: list[tuple[int, Any]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):  # SIGINT as SIGTERM: the run is cancelled and says so
        _on_signal(loop, sig, on_term, restore)
    session = None

    def closing(verdict: str) -> SessionOpened | None:
        """The session's end riding on a verdict given here (the run stopped short of its own end)."""
        return session.closing(verdict) if session is not None else None

    try:
        state_dir = Path(settings.state_dir or Path(settings.workspace).parent / "state")
        state_dir.mkdir(parents=True, exist_ok=True)
        session = RunSession(
            cfg,
            js,
            reporter,
            workdir=Path(settings.workspace),
            state_dir=state_dir,
            secrets=secrets,
            env=workspace.base_env(environ),
            approval_timeout_s=cfg.approval_ttl_s or settings.approval_timeout_s,
            nats=bus.nats,
            relayed=bus.relayed,
            sandbox_mode=settings.sandbox,
            disk_budget=settings.disk_budget_bytes,
            git_timeout_s=settings.git_timeout_s,
            max_changes=settings.ledger_max_changes,
            max_approvals=settings.approvals_max,
        )
        # The CPU time limit's warning: stop at the next step, like any other limit.
        _on_signal(loop, signal.SIGXCPU, lambda: session.stop(limits.cpu_reason()), restore)
        started = loop.time()
        try:
            await asyncio.wait_for(session.run(), cfg.limits.wall_clock_s)
        except TimeoutError:
            if loop.time() - started < cfg.limits.wall_clock_s:
                raise  # a timeout inside the run (the bus, a tool), not the run's wall clock: a failure
            await reporter.status(
                "timed_out",
                reason=f"wall-clock limit of {cfg.limits.wall_clock_s}s exceeded",
                session=closing("timed_out"),
            )
            code = 3
    except asyncio.CancelledError:
        if cancelled:
            await asyncio.shield(
                reporter.status("cancelled", reason="the run was cancelled", session=closing("cancelled"))
            )
        code = 4
    except Exception as exc:  # any failure ends the run with its reason, never silently
        reason = limits.describe(exc)
        if reason is None:
            log.exception("run %s failed", cfg.run_id)
        else:
            log.error("run %s stopped: %s", cfg.run_id, reason)
        await reporter.status("failed", reason=reason or f"{type(exc).__name__}: {exc}", session=closing("failed"))
        code = 2
    finally:
        await reporter.stop_heartbeat()
        try:
            await reporter.flush()  # every path ends with its events stored (a verdict flushed them already)
        except Exception:  # the run's end stands; what could not be stored is said in the log
            log.exception("run %s: some events could not be stored", cfg.run_id)
        if settings.fault_pause_after_verdict_s:
            await asyncio.sleep(settings.fault_pause_after_verdict_s)
        try:
            # Every event is acknowledged (flushed above) and every subscription is gone (the session's
            # inbox and kernel close theirs): nothing is left to drain. close() still writes anything
            # buffered before it disconnects; drain() would add three round trips (a flush per
            # subscription it drains, then its own) to every run.
            await bus.close()
        finally:
            for sig, previous in reversed(restore):
                _signal.signal(sig, previous if previous is not None else _signal.SIG_DFL)
    return code


def _on_signal(
    loop: asyncio.AbstractEventLoop, sig: int, callback: Callable[[], None], restore: list[tuple[int, Any]]
) -> None:
    """`callback` run in the loop when `sig` arrives (the disposition it replaces kept in `restore`).
    What `loop.add_signal_handler` does, without its check of the signal against every valid signal,
    which builds a set of ~60 enum members on each add and each remove (~0.3 ms of a trivial run).
    Set through `_signal`, the C module under `signal`: `signal.signal` turns the disposition it
    replaces back into an enum, and for a function that costs a failed enum lookup (an exception)."""
    restore.append((sig, _signal.signal(sig, lambda *_: loop.call_soon_threadsafe(callback))))


def start(environ: dict[str, str], *, announced: bool = False) -> int:
    """Run the agent the run config names; the exit code. Both a fresh process (main) and a child
    forked from the worker's warm zygote, whose modules are already imported, come in here."""

    # Before any command runs: a command of the runner's own user (the `none` sandbox mode) must not read the
    # run's credential and secrets from this process's environment or memory.
    close_to_inspection()
    settings = load_settings(RunnerSettings, environ)
    setup_logging("agent-runner", settings.log_level, settings.log_format, quiet=QUIET_LOGGERS)
    runner_log.bound(settings.log_limit)  # the log may live in memory: the agent must not be able to fill it
    setup_tracing("agent-runner", settings.otlp_endpoint)
    # SIGINT, like SIGTERM, cancels the run inside its loop (`_run`) and ends the process outside it. Not left
    # to asyncio.run, which puts its own handler in when it finds Python's default one and reads, sets and
    # puts it back through `signal`, whose enum conversion of a handler fails (an exception) each time:
    # ~0.4 ms of every run, for a handler that cancelled the run without its verdict.
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
    try:
        return asyncio.run(run(settings, environ, announced=announced))
    finally:
        if settings.otlp_endpoint:  # without one nothing is buffered: spans go nowhere
            flush_tracing()  # a zygote child leaves with os._exit: what is buffered goes now or never
