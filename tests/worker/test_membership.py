"""What a worker knows of its own liveness: whether any other worker can have judged it dead since a
moment (its launch claim), from its own stored beats. A beat that ends a silence longer than half the
timeout does not vouch for the silence before it: a worker frozen past its beats and thawed beats again
first, and must still confirm a claim it made before the freeze. Real NATS KV; the clock is the
membership's own (`time.time`), moved by the test."""

import uuid

import pytest

from nexus.events.bus import connect, ensure_key_value
from nexus.worker import membership as module
from nexus.worker.membership import WORKERS_BUCKET, Membership

pytestmark = pytest.mark.infra


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_worker_is_surely_alive_only_while_its_beats_leave_no_silence_since(
    nats_url: str, nats_creds: str, monkeypatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(module.time, "time", clock)
    nc = await connect(nats_url, "tools", creds=nats_creds)
    try:
        me = Membership(
            await ensure_key_value(nc.jetstream(), WORKERS_BUCKET, ttl_s=86400),
            f"w-{uuid.uuid4().hex[:6]}",
            timeout_s=10,
        )
        assert not me.surely_alive()  # never beat: nothing vouches for it
        await me.beat()
        claimed_at = clock.now
        assert me.surely_alive(claimed_at)
        for _ in range(5):  # beating every second: nobody can judge it dead
            clock.now += 1
            await me.beat()
            assert me.surely_alive(claimed_at)
        clock.now += 4.9  # a beat late, within half the timeout: still surely alive
        assert me.surely_alive(claimed_at)
        clock.now += 0.2  # half the timeout without a beat: others may judge it dead (their clocks differ)
        assert not me.surely_alive(claimed_at)
        clock.now += 30  # frozen past the timeout, then thawed: its first beat is fresh...
        await me.beat()
        assert me.surely_alive()  # ...and vouches from now on...
        assert not me.surely_alive(claimed_at)  # ...not for a claim made before the silence
        later = clock.now + 1
        clock.now = later
        await me.beat()
        assert me.surely_alive(later)
    finally:
        await nc.drain()
