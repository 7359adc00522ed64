"""What the fault matrix's cases are and what it reads back of a run once it ended: the case, its
outcome, the run's events on the stream and in the database, and the table of outcomes."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nats.aio.msg import Msg
from pymongo import AsyncMongoClient

from nexus.dev.stack import Stack
from nexus.events.bus import connect
from nexus.events.envelope import RawEnvelope, decode_raw

FINAL = ("succeeded", "failed", "cancelled", "timed_out")
HOW_NAME = {"kill": "SIGKILL", "twice": "SIGKILL ×2", "freeze": "SIGSTOP 8 s"}


@dataclass(frozen=True)
class Case:
    target: str  # one of TARGETS, or two joined by "+" (both hit at once)
    point: str
    shape: str = "commit"
    how: str = "kill"  # one of HOW
    workers: int = 1  # 2: a second worker runs beside the stack's (tests/faults/peer.py); "worker" is the one hit

    @property
    def id(self) -> str:
        shape = "" if self.shape == "commit" else f":{self.shape}"
        how = "" if self.how == "kill" else f"~{self.how}"
        return f"{self.target}@{self.point}{shape}{how}" + ("" if self.workers == 1 else f"/{self.workers}")

    @property
    def targets(self) -> list[str]:
        return self.target.split("+")


@dataclass
class Outcome:
    target: str
    point: str
    run_id: str
    shape: str = "commit"
    how: str = "kill"
    workers: int = 1
    status: str = ""
    verdict: str = ""  # what the deciding attempt's runner reported on the stream
    expected: str = "succeeded"  # what the work itself reaches (shapes.VERDICT)
    attempts: int = 0
    commits: int = 0
    expected_commits: int = 1
    duplicate_launches: int = 0  # an attempt's runner started more than once (another process for the same attempt)
    redone: bool = False  # a later attempt although an earlier one had given its verdict
    forked: bool | None = None  # runner and zygote kills: the run's runner was the zygote's child at the kill
    lost_events: int = 0
    chains_verified: bool = False
    edges_ok: bool = True  # the board's card and the chat's alerts, each there once
    approved_ran: bool | None = None  # approval runs: the approved command's file is in the pushed work
    seconds_to_final: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.status == self.expected
            and self.status == self.verdict
            and self.commits == self.expected_commits
            and self.lost_events == 0
            and self.chains_verified
            and self.duplicate_launches == 0
            and not self.redone
            and self.edges_ok
            and self.approved_ran is not False
        )


async def stream_of(
    stack: Stack, run_id: str, types: dict[str, str]
) -> tuple[dict[int, str], list[str], dict[int, set[str]], set[int]]:
    """Each attempt's first verdict on the stream, the ids of every event core-api must store, the
    runner processes each attempt launched (the pids of the worker's `launched` events: the same
    runner reported twice is one, a second process for the attempt is a duplicate), and the attempts
    whose runtime ended (exited, lost, launch failed). `types` learns each event's type@sequence."""
    nc = await connect(stack.nats_url or "", "faults-check", creds=stack.creds("tools"))
    verdicts: dict[int, str] = {}
    ids: list[str] = []
    launches: dict[int, set[str]] = {}
    ends: set[int] = set()
    try:
        sub = await nc.jetstream().subscribe(f"nexus.run.{run_id}.>", ordered_consumer=True)
        while True:
            # Read to the end the stream had for this run, not to the first pause: after a kill of nats-server
            # the consumer may take longer than any pause to deliver the rest (a verdict missed that way once
            # judged a cancelled run as ended by nobody).
            try:
                msg = await sub.next_msg(timeout=5.0)
            except TimeoutError:
                break
            _take(decode_raw(msg.data), msg, types, verdicts, ids, launches, ends)
            if msg.metadata.num_pending == 0:
                break
    finally:
        await nc.drain()
    return verdicts, ids, launches, ends


def _take(
    env: RawEnvelope,
    msg: Msg,
    types: dict[str, str],
    verdicts: dict[int, str],
    ids: list[str],
    launches: dict[int, set[str]],
    ends: set[int],
) -> None:
    if env.type == "run.heartbeat":
        return
    ids.append(env.id)
    types[env.id] = f"{env.type}@{msg.metadata.sequence.stream}"
    data = json.loads(bytes(env.data))
    attempt = int(data.get("attempt", 1))
    if env.type == "run.status" and data["status"] in FINAL:
        verdicts.setdefault(attempt, data["status"])
    if env.type == "run.runtime" and data.get("phase") == "launched":
        launches.setdefault(attempt, set()).add(str(data.get("detail", "")))
    if env.type == "run.runtime" and data.get("phase") in ("exited", "lost", "launch_failed"):
        ends.add(attempt)


async def final_by(stack: Stack, run_id: str) -> str:
    """Who ended the run — the API does not show it, the database does."""
    client = AsyncMongoClient(stack.mongodb_url, serverSelectionTimeoutMS=5000)
    try:
        doc = await client[stack.env["NEXUS_MONGODB_DB"]]["runs"].find_one({"_id": run_id}, {"final_by": 1})
        return str((doc or {}).get("final_by", ""))
    finally:
        await client.close()


async def stored_ids(stack: Stack, run_id: str) -> set[str]:
    """The ids of the run's events core-api stored (one by one, or in its batches' chunks)."""
    client = AsyncMongoClient(stack.mongodb_url, serverSelectionTimeoutMS=5000)
    try:
        db = client[stack.env["NEXUS_MONGODB_DB"]]
        ids = {d["_id"] async for d in db["run_events"].find({"run_id": run_id}, {"_id": 1})}
        async for chunk in db["run_event_chunks"].find({"run_id": run_id}):  # one per run per ingested batch
            ids.update(e["id"] for e in json.loads(chunk["events"]))  # the events as one JSON array
        return ids
    finally:
        await client.close()


def table(outcomes: list[Outcome]) -> str:
    """fault × point × shape → final as the work reached, duplicates, lost events, time to final."""
    rows = [
        "| fault | point | run | final as expected | status = runner's | duplicate commits | duplicate launches "
        "| redone | lost events | chains verify | board & chat once | time to final (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        rows.append(
            f"| {HOW_NAME[o.how]} {o.target}{'' if o.workers == 1 else ' (of 2 workers)'} | {o.point} | {o.shape} → {o.expected} | {'yes' if o.status == o.expected else o.status} "
            f"| {'yes' if o.status == o.verdict else o.verdict or '-'} | {max(0, o.commits - o.expected_commits)} "
            f"| {o.duplicate_launches} | {'yes' if o.redone else 'no'} | {o.lost_events} "
            f"| {'yes' if o.chains_verified else 'no'} | {'yes' if o.edges_ok else 'no'} | {o.seconds_to_final} |"
        )
    return "\n".join(rows)


def save(outcomes: list[Outcome], path: Path) -> None:
    path.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
