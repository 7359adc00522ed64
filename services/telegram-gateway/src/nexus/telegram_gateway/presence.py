"""Which gateway processes are alive, told by their beats in the outbox bucket: a process that claimed an
outbox entry is left to send it while it beats, and its entry is taken over once its beat is gone or has not
moved for `silent_s` (a process killed, or stopped). Judged by the beat's revision, not by clocks, so two
hosts whose clocks differ agree."""

import asyncio
import contextlib
import logging
import time

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from nexus.domain.ids import new_ulid

log = logging.getLogger("nexus.telegram_gateway.presence")
PREFIX = "beat."
BEAT_S = 1.0
# Five missed beats: a process whose event loop stalls a moment is not taken for dead.
SILENT_S = 5.0


class Presence:
    def __init__(self, kv: KeyValue, *, beat_s: float = BEAT_S, silent_s: float = SILENT_S) -> None:
        self.kv, self.beat_s, self.silent_s = kv, beat_s, silent_s
        self.me = new_ulid()  # this process: new at each start, so a restarted gateway is another sender
        self.task: asyncio.Task[None] | None = None
        self._heard: dict[str, tuple[int, float]] = {}  # sender → (its beat's revision, when first seen)
        # Two chats' senders may both start it (a put before start): one beat, or a second one nobody
        # stops would beat for a killed process for ever, and no successor would ever take its entries over.
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Beat from now on (the first beat is written before this returns: a claim never precedes it)."""
        async with self._starting:
            if self.task is None:
                await self.kv.put(PREFIX + self.me, b"1")
                self.task = asyncio.create_task(self._beat(), name="outbox-beat")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.beat_s)
            try:
                await self.kv.put(PREFIX + self.me, b"1")
            except Exception as exc:  # noqa: BLE001 — the bus reconnects; a beat missed is only a beat
                log.warning("outbox beat failed (%s)", exc)

    async def silent(self, sender: str) -> bool:
        """Whether `sender` is gone: no beat, or a beat that has not moved for `silent_s` since first seen."""
        if sender == self.me:
            return False
        try:
            entry = await self.kv.get(PREFIX + sender)
        except KeyNotFoundError:
            return True
        now = time.monotonic()
        heard = self._heard.get(sender)
        if heard is None or heard[0] != entry.revision:
            self._heard[sender] = (entry.revision or 0, now)
            return False
        if now - heard[1] < self.silent_s:
            return False
        with contextlib.suppress(Exception):  # a killed process's beat would stay forever
            await self.kv.delete(PREFIX + sender)
        return True

    async def stop(self) -> None:
        """Stop beating and say so at once, so that a successor takes over what is left without waiting."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.kv.delete(PREFIX + self.me)
