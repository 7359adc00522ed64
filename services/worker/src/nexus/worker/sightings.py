"""What this worker hears of runs on the bus itself: runners' last words and whether an attempt has ended."""

from datetime import UTC, datetime

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from nexus.events.envelope import decode_raw


class Sightings:
    """What this worker hears from runners on the bus itself: their last heartbeat and whether an
    attempt has ended. The database's view comes through core-api and lags when it is busy; a run
    is never declared lost on a stale copy of what the runner already said.

    The worker's connection does not echo its own messages (`no_echo`): what this worker says of a run
    (launched, exited, lost, timed out) it notes here itself once the bus has taken it, rather than being
    sent it back — two deliveries per run fewer, each parsed and decoded for nothing new."""

    FINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], datetime] = {}
        self.ended: dict[tuple[str, int], datetime] = {}
        self.since = datetime.now(UTC)  # silence is only counted from when this worker started listening

    KINDS = ("heartbeat", "status", "runtime")

    async def start(self, nc: NATS) -> None:
        self.since = datetime.now(UTC)
        for kind in self.KINDS:
            await nc.subscribe(f"nexus.run.*.{kind}", cb=self._on)

    async def _on(self, msg: Msg) -> None:
        self.note(msg.subject, msg.data)

    def note(self, subject: str, body: bytes) -> None:
        """A runner's word on `subject`, heard on the bus or relayed by this worker (which the bus does not
        echo back to it either: runtimes/relay.py)."""
        if subject.rsplit(".", 1)[-1] not in self.KINDS:
            return
        try:
            data = msgspec.json.decode(decode_raw(body).data)
            key = (subject.split(".")[2], int(data.get("attempt", 1)))
        except (msgspec.DecodeError, ValueError, TypeError, AttributeError, IndexError):
            return
        self.heard(key[0], key[1], ended=data.get("status") in self.FINAL or data.get("phase") == "exited")

    def heard(self, run_id: str, attempt: int, *, ended: bool) -> None:
        """A word of the run's attempt, on the bus now (from its runner, or from this worker once published)."""
        key = (run_id, attempt)
        self.seen[key] = datetime.now(UTC)
        if ended:
            self.ended[key] = self.seen[key]

    def prune(self, live: set[str], since: datetime) -> None:
        """Forget runs no longer active — but not what was heard after `since` (the sweep's query):
        a run launched (and even ended) while a sweep ran is not in that sweep's list yet."""
        self.seen = {k: v for k, v in self.seen.items() if k[0] in live or v >= since}
        self.ended = {k: v for k, v in self.ended.items() if k[0] in live or v >= since}
