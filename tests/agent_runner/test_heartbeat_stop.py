"""The heartbeat stops when told, even when a library swallowed the cancel that told it (Python 3.11's
wait_for, inside the NATS client, returns its result instead of raising when a cancel lands as the reply
arrives): a beat that went on for ever kept a timed-out run from ever reporting its end."""

import asyncio

from nexus.agent_runner.reporter import RunReporter


class _Unstick(BaseException):
    """Ends a beat that would not stop, so a failing test fails instead of hanging."""


async def test_a_swallowed_cancel_still_stops_the_heartbeat() -> None:
    reporter = RunReporter(None, "run_x", 1)  # type: ignore[arg-type]  # no bus: _publish is replaced
    beats: list[str] = []
    swallowed = asyncio.Event()
    unstick = False

    async def publish(type_: str, data: object) -> None:
        if swallowed.is_set() and unstick:
            raise _Unstick
        beats.append(type_)
        try:
            await asyncio.sleep(3600)  # a publish waiting for its ack
        except asyncio.CancelledError:
            swallowed.set()  # ... which returns anyway, as the reply came in the same instant
            return

    reporter._publish = publish  # type: ignore[method-assign]  # the test swaps the publish step
    reporter.start_heartbeat(0.01)
    while not beats:
        await asyncio.sleep(0.01)
    stopped = asyncio.create_task(reporter.stop_heartbeat())
    done, _ = await asyncio.wait({stopped}, timeout=30)
    unstick = True
    assert swallowed.is_set()
    assert stopped in done, "the heartbeat went on beating after it was stopped"
    assert stopped.exception() is None
    assert reporter._heartbeat is not None and reporter._heartbeat.done()
