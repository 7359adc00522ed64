"""The floor of a forked run: what per-run isolation and identity make irreducible, and nothing else.

A child forked from the same warm zygote as a real run (so it has gone through the same
`_become`: its own session and process group, rlimits, cwd, stdio to runner.log, inherited
descriptors closed, the run's environment claimed from `runner.env`) that then only
- opens its own NATS connection with the run's own minted credential (`NEXUS_NATS_CREDS`), and
- publishes the four events a trivial run publishes (running, the session opened, the model call,
  succeeded with the session's end) to JetStream as envelopes with their dedupe ids, in the same
  three round trips the runner's reporter uses (a status is awaited alone; the two events between
  the statuses are sent together, their acks awaited together),
and exits. No workspace, no git, no hypervisor, no model, no session state, no tracing, no logging.
`bench.runner --only forked` prints its CPU per run beside the full trivial run's."""

import _signal
import asyncio
import os

import msgspec

from nexus.domain.agents import LLMSpec  # noqa: F401 — the zygote preloads the same modules either way
from nexus.events.bus import connect
from nexus.events.catalog import spec
from nexus.events.envelope import encode, make_envelope
from nexus.events.payloads import LLMCalled, RunStatusChanged, SessionOpened

ENTRY = "bench.runner.floor:start"
BARE_ENTRY = "bench.runner.floor:bare"  # the isolation alone: `_become`, then exit (no loop, no bus)


async def _floor(environ: dict[str, str]) -> None:
    run_id = environ["NEXUS_RUN_ID"]
    session_id = f"ses_{run_id[4:]}"
    nc = await connect(
        environ["NEXUS_NATS_URL"], f"agent-runner-{run_id}", creds=environ["NEXUS_NATS_CREDS"], user=run_id
    )
    js = nc.jetstream()

    async def publish(type_: str, data: object) -> None:
        env = make_envelope(type_, data, source="agent-runner", correlation_id=run_id)
        await js.publish(spec(type_).subject_for(run_id=run_id), encode(env), headers={"Nats-Msg-Id": env.id})

    try:
        await publish("run.status", RunStatusChanged(status="running", attempt=1))
        opened = SessionOpened(session_id=session_id, project_path="", backend="scripted", attempt=1, sandbox="bwrap")
        await asyncio.gather(
            publish("run.session", opened),
            publish(
                "run.llm",
                LLMCalled(step=1, provider="scripted", model="scripted", input_tokens=1, output_tokens=1, text="done"),
            ),
        )
        ended = msgspec.structs.replace(opened, status="completed")
        await publish("run.status", RunStatusChanged(status="succeeded", attempt=1, session=ended))
    finally:
        await nc.close()


def start(environ: dict[str, str]) -> int:
    """The zygote's entry for a floor child: the exit code."""
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)  # as the runner's `start`: asyncio.run adds no handler of its own
    asyncio.run(_floor(environ))
    return 0


def bare(environ: dict[str, str]) -> int:
    """The zygote's entry for a bare child: it has become the run (`_become`) and exits at once — what the fork,
    the isolation steps and the exit cost below any event loop or bus."""
    return 0


if __name__ == "__main__":
    raise SystemExit(start(dict(os.environ)))
