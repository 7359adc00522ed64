"""The one periodic loop every service uses (sweeps, beats, ticks): it keeps going through a
failing round, starts at once only when asked, ends with `stop`, and a period of 0 is off."""

import asyncio

from nexus.observability.periodic import every


async def test_a_failing_round_does_not_stop_the_next_and_stop_ends_the_loop() -> None:
    stop = asyncio.Event()
    rounds = 0

    async def work() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 3:
            stop.set()
        if rounds == 1:
            raise RuntimeError("the first round fails")

    await asyncio.wait_for(every(0.001, stop, work), 10)
    assert rounds == 3


async def test_at_start_runs_before_the_first_period_and_without_it_not() -> None:
    stop = asyncio.Event()
    ran = asyncio.Event()

    async def work() -> None:
        ran.set()

    loop = asyncio.create_task(every(3600, stop, work, at_start=True))
    await asyncio.wait_for(ran.wait(), 10)  # an hour's period: only at_start can have run it
    stop.set()
    await asyncio.wait_for(loop, 10)

    ran.clear()
    stop = asyncio.Event()
    loop = asyncio.create_task(every(3600, stop, work))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(loop, 10)
    assert not ran.is_set()


async def test_a_period_of_zero_is_off() -> None:
    calls: list[int] = []

    async def work() -> None:
        calls.append(1)

    await asyncio.wait_for(every(0, asyncio.Event(), work, at_start=True), 10)
    assert calls == []
