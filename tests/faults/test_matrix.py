"""The fault matrix: SIGKILL (and restart) core-api, the worker, a runner forked from the worker's
zygote, the zygote itself, nats-server and FerretDB right after task creation, mid-run and during
completion/push. Every run must end final, as its runner reported, with at most one commit on its
branch, no attempt's runner started twice, no finished attempt redone, each attempt's session chain
verifying, and every run event stored. `make test` runs a trimmed matrix (each service, the zygote,
a runner, the bus and the database once); `make test-faults` (NEXUS_FAULTS=full) the whole one."""

import os

import pytest

from tests.faults.harness import FINAL, POINTS, TARGETS, FaultStack, Outcome

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

TRIMMED = [
    ("core-api", "mid-run"),
    ("worker", "mid-run"),
    ("runner", "mid-run"),
    ("zygote", "mid-run"),
    ("nats", "created"),
    ("ferretdb", "push"),
]
CASES = [(t, p) for t in TARGETS for p in POINTS] if os.environ.get("NEXUS_FAULTS") == "full" else TRIMMED


@pytest.mark.parametrize(("target", "point"), CASES, ids=[f"{t}@{p}" for t, p in CASES])
async def test_sigkill(faults: FaultStack, outcomes: list[Outcome], target: str, point: str) -> None:
    out = await faults.case(target, point)
    outcomes.append(out)
    assert out.status in FINAL, out
    assert out.status == out.verdict, out  # what the runner reported, not a retry's accident
    assert out.status == "succeeded", out  # the work itself always succeeds: a fault must not turn it into a failure
    assert out.commits == 1, out  # no duplicate side effects
    assert out.duplicate_launches == 0, out  # never two runners for one attempt
    assert not out.redone, out  # an attempt that gave its verdict is never followed by another
    assert out.chains_verified, out
    assert out.lost_events == 0, out
    if target in ("runner", "zygote") and point == "mid-run":
        assert out.forked, out  # the run's runner was forked by the warm zygote (not started cold) when it was killed
