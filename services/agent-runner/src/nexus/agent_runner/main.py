"""agent-runner's entry point: become the agent the run config describes, then exit.

Cold start (process start to the first event) is measured (bench/runner): the first event goes
out through first_event.py before anything heavy is imported; everything else is imported after."""

import os
import sys


def _masker(secrets: dict[str, str]):
    pairs = sorted(((v, f"${{secret:{k}}}") for k, v in secrets.items() if v), key=lambda p: -len(p[0]))

    def mask(text: str) -> str:
        for value, ref in pairs:
            text = text.replace(value, ref)
        return text

    return mask


async def run(settings, environ: dict[str, str], *, announced: bool = False) -> int:
    import asyncio
    import logging
    import signal
    from pathlib import Path

    import msgspec

    from nexus.agent_runner.reporter import RunReporter
    from nexus.agent_runner.settings import secrets_from_env
    from nexus.events.bus import connect
    from nexus.events.payloads import RunConfig

    log = logging.getLogger("nexus.agent_runner")
    cfg = msgspec.json.decode(Path(settings.run_config).read_bytes(), type=RunConfig)
    secrets = secrets_from_env(environ, cfg.secrets)
    nc = await connect(settings.nats_url, f"agent-runner-{cfg.run_id}", creds=settings.nats_creds, user=cfg.run_id)
    js = nc.jetstream()
    reporter = RunReporter(js, cfg.run_id, settings.attempt, masker=_masker(secrets))
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

    loop.add_signal_handler(signal.SIGTERM, on_term)
    try:
        from nexus.agent_runner import workspace
        from nexus.agent_runner.session import RunSession

        state_dir = Path(settings.state_dir or Path(settings.workspace).parent / "state")
        state_dir.mkdir(parents=True, exist_ok=True)
        session = RunSession(cfg, js, reporter, workdir=Path(settings.workspace), state_dir=state_dir, secrets=secrets,
                             env=workspace.base_env(environ), approval_timeout_s=cfg.approval_ttl_s or settings.approval_timeout_s, nc=nc)
        try:
            await asyncio.wait_for(session.run(), cfg.limits.wall_clock_s)
        except TimeoutError:
            await reporter.status("timed_out", reason=f"wall-clock limit of {cfg.limits.wall_clock_s}s exceeded")
            code = 3
    except asyncio.CancelledError:
        if cancelled:
            await asyncio.shield(reporter.status("cancelled", reason="the run was cancelled"))
        code = 4
    except Exception as exc:  # noqa: BLE001 — any failure ends the run with its reason, never silently
        log.exception("run %s failed", cfg.run_id)
        await reporter.status("failed", reason=f"{type(exc).__name__}: {exc}")
        code = 2
    finally:
        await reporter.stop_heartbeat()
        await nc.drain()
    return code


def main() -> None:
    environ = dict(os.environ)
    from nexus.agent_runner.first_event import announce

    announced = announce(environ)
    import asyncio
    import logging

    from nexus.agent_runner.settings import RunnerSettings
    from nexus.domain.settings import load_settings

    settings = load_settings(RunnerSettings, environ)
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(run(settings, environ, announced=announced)))


if __name__ == "__main__":
    main()
