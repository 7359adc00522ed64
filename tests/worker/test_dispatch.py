"""Dispatch: a run attempt is launched once whatever the redeliveries and however many workers
consume at once; when slots are scarce, a higher-priority launch goes first."""

import asyncio

import pytest

from nexus.domain.ids import new_ulid
from nexus.events.catalog import CMDS_STREAM
from nexus.worker.intake import DURABLE
from tests.worker.conftest import QUICK, make_run, sleepy

pytestmark = pytest.mark.infra


async def _drained(bus) -> bool:
    try:
        info = await bus.js.consumer_info(CMDS_STREAM, DURABLE)
    except Exception:  # noqa: BLE001 — not created yet
        return False
    return info.num_pending == 0 and info.num_ack_pending == 0


async def _until_drained(bus, tries: int = 300) -> None:
    import asyncio

    for _ in range(tries):
        if await _drained(bus):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the launch commands were never all handled")


async def test_redelivered_and_republished_launches_run_once(workers, bus) -> None:
    workers.start()
    run = await make_run(QUICK)
    await bus.launch(run)
    await bus.launch(run)  # same message id: JetStream drops it
    await bus.launch(run, msg_id=new_ulid())  # a new id (core-api's requeue): the claim stops it
    await bus.until(lambda: bus.runtime(run.id, "exited"))
    await bus.launch(run, msg_id=new_ulid())  # after the run ended, while the attempt is still current
    await _until_drained(bus)
    assert len(bus.runtime(run.id, "launched")) == 1
    assert bus.statuses(run.id) == ["running", "succeeded"]  # one runner process, one session


async def test_two_workers_never_launch_an_attempt_twice(workers, bus) -> None:
    workers.start("w1", launch_backlog=4)
    workers.start("w2", launch_backlog=4)
    runs = [await make_run(QUICK) for _ in range(6)]
    for run in runs:  # each launch twice, with different message ids, interleaved
        await bus.launch(run, msg_id=new_ulid())
    for run in runs:
        await bus.launch(run, msg_id=new_ulid())
    await bus.until(lambda: all(bus.runtime(r.id, "exited") for r in runs), tries=600)
    await _until_drained(bus)
    for run in runs:
        assert len(bus.runtime(run.id, "launched")) == 1, run.id
        assert bus.statuses(run.id) == ["running", "succeeded"], run.id


async def test_higher_priority_launch_goes_first_when_slots_are_scarce(workers, bus) -> None:
    workers.start(max_concurrent_runs=1)
    blocker = await make_run(sleepy(30))
    await bus.launch(blocker)
    await bus.until(lambda: bus.statuses(blocker.id) == ["running"])
    low1, low2, high, lowest = [await make_run(QUICK, priority=p) for p in (0, 0, 10, -5)]
    for run in (low1, low2, high, lowest):
        await bus.launch(run)
    # All four are with the worker, waiting for the one slot…
    await bus.until_async(lambda: _waiting(bus, 4))
    await bus.cancel(blocker.id)  # …which frees now.
    waiting = [low1, low2, high, lowest]
    await bus.until(lambda: all(bus.runtime(r.id, "exited") for r in waiting), tries=600)
    order = sorted(
        waiting,
        key=lambda r: next(
            ts for rid, t, d, ts in bus.events if rid == r.id and t == "run.runtime" and d["phase"] == "launched"
        ),
    )
    assert [r.id for r in order] == [high.id, low1.id, low2.id, lowest.id]


async def _waiting(bus, n: int) -> bool:
    info = await bus.js.consumer_info(CMDS_STREAM, DURABLE)
    return info.num_ack_pending >= n and info.num_pending == 0


async def test_a_cancel_reaches_the_worker_that_hosts_the_run(workers, bus) -> None:
    # w1 starts four runs; then w2 joins. Each cancel is taken by one of the two from the durable
    # consumer, but only w1 can end a local run: every worker also hears every cancel.
    workers.start("w1")
    runs = [await make_run(sleepy(60)) for _ in range(4)]
    for run in runs:
        await bus.launch(run)
    await bus.until(lambda: all(bus.of(r.id, "run.llm") for r in runs), tries=600)  # each is in its `sleep 60`
    w2 = workers.start("w2")
    # Each cancel goes out while both workers have a pull request waiting on the cancel consumer,
    # so the durable consumer has both to choose from (state, not time, paces them).
    for run in runs:
        await _until_pulls_waiting(bus, 2)
        await bus.cancel(run.id)
    await bus.until(lambda: all(bus.runtime(r.id, "exited") for r in runs), tries=300)
    for run in runs:
        assert bus.statuses(run.id)[-1] == "cancelled", (run.id, bus.statuses(run.id))
    assert w2.poll() is None  # w2 served the cancel queue beside w1 throughout


async def _until_pulls_waiting(bus, n: int) -> None:
    for _ in range(300):  # a bound on checks
        info = await bus.js.consumer_info(CMDS_STREAM, "worker-cancel")
        if info.num_waiting >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {n} workers ever waited for cancels")
