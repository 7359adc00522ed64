"""The fault matrix: SIGKILL (and restart) each process of Nexus — core-api, the worker, a runner forked
from the worker's zygote, the zygote itself, nats-server, FerretDB, FerretDB's PostgreSQL, board-sync and
telegram-gateway — at points of a run: right after task creation, between the worker's claim and the fork,
mid-run, waiting for an approval, while board-sync's write to Plane is unanswered, between the final commit and its push, after the push before the
verdict, after the verdict before the runner exits, during a goal's child runs, and during a cancel. Runs
of several shapes (tests/faults/shapes.py) must each end as their work did — succeeded, failed, timed out
or cancelled — with the expected commits on their branch, no attempt's runner started twice, no finished
attempt redone, each attempt's session chain verifying, every run event stored, and the board's card and
the chat's alerts there once. `make test` runs a trimmed matrix; `make test-faults` (NEXUS_FAULTS=full)
the whole one."""

import os

import pytest

from tests.faults.harness import POINTS, FaultStack
from tests.faults.records import Case, Outcome

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

# The first matrix: every process at creation, mid-run and right after the push, of a run that pushes.
FIRST = [Case(t, p) for t in ("core-api", "worker", "runner", "zygote", "nats", "ferretdb", "postgres") for p in POINTS]
# Where else a crash could turn the work's end into something else. Grouped by the worker's fault pauses
# (the worker restarts only when they change).
MORE = [
    Case("worker", "launching"),
    Case("core-api", "launching"),
    Case("nats", "launching"),
    Case("runner", "verdict"),
    Case("worker", "verdict"),
    Case("core-api", "verdict"),
    Case("runner", "pushing"),
    Case("worker", "pushing"),
    Case("runner", "pushed"),
    Case("nats", "pushed"),
    Case("ferretdb", "pushed"),
    Case("runner", "approval", "approval"),
    Case("worker", "approval", "approval"),
    Case("core-api", "approval", "approval"),
    Case("telegram-gateway", "approval", "approval"),
    Case("board-sync", "mid-run"),
    Case("board-sync", "push"),
    Case("board-sync", "projecting"),  # Plane took the run's comment; board-sync died before it heard so
    Case("telegram-gateway", "mid-run", "fail"),
    Case("runner", "mid-run", "fail"),
    Case("worker", "mid-run", "fail"),
    Case("core-api", "mid-run", "fail"),
    Case("runner", "mid-run", "timeout"),
    Case("worker", "mid-run", "timeout"),
    Case("core-api", "mid-run", "timeout"),
    Case("worker", "cancel", "cancel"),
    Case("core-api", "cancel", "cancel"),
    Case("nats", "cancel", "cancel"),
    Case("ferretdb", "cancel", "cancel"),
    Case("postgres", "cancel", "cancel"),
    Case("runner", "children", "goal"),
    Case("worker", "children", "goal"),
    Case("core-api", "children", "goal"),
]
# Harder hits (full only): a process frozen (SIGSTOP) past every ack wait and heartbeat timeout and then
# let go among the copies of what it held; killed again while it restarts; two killed at once; and points
# the first matrices miss (core-api's run end stored and not carried out, the zygote's fork, the bus or
# the database at the verdict, the push, an approval, a retry).
HARDER = [
    Case("core-api", "ending"),
    Case("core-api", "ending", "fail"),
    Case("nats", "ending"),
    Case("postgres", "ending"),
    Case("zygote", "launching"),
    Case("nats", "verdict"),
    Case("ferretdb", "verdict"),
    Case("nats", "pushing"),
    Case("core-api", "pushing"),
    Case("runner", "pushing", how="freeze"),
    Case("runner", "mid-run", how="freeze"),
    Case("worker", "mid-run", how="freeze"),
    Case("core-api", "mid-run", how="freeze"),
    Case("nats", "mid-run", how="freeze"),
    Case("ferretdb", "mid-run", how="freeze"),
    Case("postgres", "mid-run", how="freeze"),
    Case("worker", "cancel", "cancel", how="freeze"),
    Case("core-api", "approval", "approval", how="freeze"),
    Case("telegram-gateway", "approval", "approval", how="freeze"),
    Case("nats", "approval", "approval"),
    Case("ferretdb", "approval", "approval"),
    Case("runner", "cancel", "cancel"),
    Case("nats", "mid-run", "timeout"),
    Case("nats", "children", "goal"),
    Case("core-api", "mid-run", how="twice"),
    Case("worker", "mid-run", how="twice"),
    Case("runner", "mid-run", how="twice"),
    # Killed while it waits for a lead, and the next attempt's too: the run is queued, launching and
    # running again beside its first attempts' open approvals; the expiry sweep must not close the live one.
    Case("runner", "approval", "approval", how="twice"),
    Case("nats", "mid-run", how="twice"),
    Case("ferretdb", "push", how="twice"),
    Case("core-api+worker", "mid-run"),
    Case("runner+worker", "mid-run"),
    Case("nats+ferretdb", "mid-run"),
    Case("worker+nats", "pushing"),
    Case("board-sync", "projecting", how="freeze"),
    # One of two workers frozen while it launches, or watches its runner: the other judges it dead.
    Case("worker", "launching", how="freeze", workers=2),
    Case("worker", "mid-run", how="freeze", workers=2),
    Case("worker", "pushing", how="freeze", workers=2),
    Case("worker", "mid-run", "timeout", how="freeze", workers=2),
    Case("worker", "cancel", "cancel", how="freeze", workers=2),
]
TRIMMED = [
    Case("core-api", "mid-run"),
    Case("worker", "mid-run"),
    Case("runner", "mid-run"),
    Case("zygote", "mid-run"),
    Case("nats", "created"),
    Case("ferretdb", "push"),
    Case("worker", "cancel", "cancel"),
    Case("runner", "approval", "approval"),
]
CASES = FIRST + MORE + HARDER if os.environ.get("NEXUS_FAULTS") == "full" else TRIMMED
ONLY = os.environ.get("NEXUS_FAULTS_ONLY", "")  # a comma-separated list of case ids, to run just those
if ONLY:
    CASES = [c for c in FIRST + MORE + HARDER if c.id in ONLY.split(",")]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_sigkill(faults: FaultStack, outcomes: list[Outcome], case: Case) -> None:
    out = await faults.case(case)
    outcomes.append(out)
    assert out.status == out.expected, out  # the end the work reached: a fault must not turn it into another
    assert out.status == out.verdict, out  # what the runner reported (or the operator decided), not an accident
    assert out.commits == out.expected_commits, out  # no duplicate side effects, nothing of a failed run pushed
    assert out.duplicate_launches == 0, out  # never two runners for one attempt
    assert not out.redone, out  # an attempt that gave its verdict is never followed by another
    assert out.chains_verified, out
    assert out.lost_events == 0, out
    assert out.edges_ok, out  # the board's card and the chat's alerts, each once
    assert out.approved_ran in (None, True), out  # an approved command ran: its approval was not closed under it
    if (
        case.target in ("runner", "zygote")
        and case.point == "mid-run"
        and case.shape == "commit"
        and case.how == "kill"
    ):
        assert out.forked, out  # the run's runner was forked by the warm zygote (not started cold) when it was killed
