"""`runs watch|wait|logs|cancel|retry|verify`."""

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from nexus.nexusctl import events, render, verify
from nexus.nexusctl.state import err, fail, handled, out, state
from nexus.nexusctl.client import seg

app = typer.Typer(help="Follow, wait for, inspect, cancel, retry and verify runs.", no_args_is_help=True)

RunId = Annotated[str, typer.Argument(help="the run id (run_…)")]


def _reconnecting(last_id: str | None, attempt: int) -> None:
    err(f"… connection lost; reconnecting (attempt {attempt}) after event {last_id or '(none)'}")


@app.command()
def watch(
    ctx: typer.Context,
    run_id: RunId,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also show heartbeats")] = False,
) -> None:
    """Follow a run live until it ends; exit 0 only if it succeeded."""
    with handled():
        client = state(ctx).client
        run = client.get(f"/v1/runs/{seg(run_id)}")
        out(
            f"watching run {run['id']} (task {run['task_id']}, "
            f"agent {run['agent_id']}@{run['agent_revision']}): {run['status']}"
        )
        last_id = None
        while True:
            for ev in events.follow(client, run_id, last_event_id=last_id, on_reconnect=_reconnecting):
                last_id = ev.id or last_id
                if line := events.pretty(ev, verbose=verbose):
                    out(line)
            run = client.get(f"/v1/runs/{seg(run_id)}")
            if run["status"] in events.FINAL:
                break
            # The server ended the stream but the run goes on (e.g. a restart): resume where we were.
            _reconnecting(last_id, 1)
        out("")
        for line in events.summary(run):
            out(line)
    raise typer.Exit(0 if run["status"] == "succeeded" else 1)


# Each request waits at most this long for the run's end (under the client's own request timeout).
WAIT_PER_REQUEST_S = 25.0
STILL_GOING = 3  # the exit code when the run had not ended in time


@app.command()
def wait(
    ctx: typer.Context,
    run_id: RunId,
    timeout: Annotated[
        float, typer.Option(min=0, help=f"give up after this many seconds (exit {STILL_GOING})")
    ] = 600.0,
) -> None:
    """Wait for a run to end, asking the API to answer once it has (no event stream); print its summary.
    Exit 0 if it succeeded, 1 if it ended otherwise, 3 if it had not ended in time."""
    with handled():
        client = state(ctx).client
        give_up = time.monotonic() + timeout
        while True:
            left = max(0.0, give_up - time.monotonic())
            run = client.get(f"/v1/runs/{seg(run_id)}", wait_s=round(min(left, WAIT_PER_REQUEST_S), 3), config="false")
            if run["status"] in events.FINAL or left <= 0:
                break
        if run["status"] not in events.FINAL:
            err(f"run {run['id']} is still {run['status']} after {timeout:g}s")
            raise typer.Exit(STILL_GOING)
        for line in events.summary(run):
            out(line)
    raise typer.Exit(0 if run["status"] == "succeeded" else 1)


@app.command()
def logs(
    ctx: typer.Context,
    run_id: RunId,
    raw: Annotated[bool, typer.Option("--raw", help="one JSON envelope per line, as stored")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep following until the run ends")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also show heartbeats")] = False,
) -> None:
    """Print every event of a run (replayed from the start)."""
    with handled():
        client = state(ctx).client
        # Without --follow, stop once the replay has gone quiet: the run may still be going.
        idle = None if follow else 3.0
        for ev in events.follow(client, run_id, idle_timeout=idle, on_reconnect=_reconnecting):
            if raw:
                out(json.dumps({"id": ev.id, "event": ev.type, **ev.envelope}, ensure_ascii=False))
            elif line := events.pretty(ev, verbose=verbose):
                out(line)


@app.command()
def cancel(
    ctx: typer.Context,
    run_id: RunId,
    reason: Annotated[str, typer.Option(help="why; kept on the run")] = "",
) -> None:
    """Cancel a run that has not ended."""
    with handled():
        run = state(ctx).client.post(f"/v1/runs/{seg(run_id)}/cancel", {"reason": reason} if reason else None)
        out(f"run/{run['id']} {run['status']}")


@app.command()
def retry(ctx: typer.Context, run_id: RunId) -> None:
    """Start a new run of an ended run's task, with the same pinned agent revision."""
    with handled():
        run = state(ctx).client.post(f"/v1/runs/{seg(run_id)}/retry")
        out(f"run/{run['id']} {run['status']} (retry of {run_id})")


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(help="the run id; or give --file")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="verify a saved run (`nexusctl get run ID -o json`) offline")
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Recompute each session's hash chain, compare it with the run's ledger hash and with the hashes core-api
    recorded as each entry arrived (not with --file); exit 1 if broken."""
    if (run_id is None) == (file is None):
        fail("give a run id or --file, not both", 2)
    with handled():
        if file is not None:
            try:
                run = json.loads(file.read_text())
            except (OSError, ValueError) as exc:
                fail(f"cannot read {file}: {exc}")
        else:
            run = state(ctx).client.get(f"/v1/runs/{seg(run_id)}")
        check = verify.check_run(run, run.get("sessions") or [])
        if file is None:  # a saved file can only be checked against itself; the record lives in core-api
            verify.add_record(check, state(ctx).client.get(f"/v1/runs/{seg(run_id)}/verify"))
    if output == "json":
        out(
            render.to_json(
                {
                    "run_id": check.run_id,
                    "ok": check.ok,
                    "ledger_hash": check.ledger_hash,
                    "problems": check.problems,
                    "sessions": [s.__dict__ for s in check.sessions],
                }
            )
        )
    else:
        for line in verify.report(check):
            out(line)
    raise typer.Exit(0 if check.ok else 1)
