"""`uv run python -m bench.ingest [--runs 50] [--events 20000]`: core-api's run-event ingestion on a
real nats-server and FerretDB (started on free ports). Publishes a mix of run events (logs, LLM
calls, session changes, heartbeats) for many runs, then lets the run-event consumer ingest them
(1) batched per run (as core-api runs it) and (2) one event at a time (the path before), each into
its own database, counting every stored event. Baseline in the same run: a raw insert_many of the
same number of documents. Prints JSON."""

import argparse
import asyncio
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from pymongo import AsyncMongoClient

from bench.throughput.cpu import _children
from bench.throughput.cpu import _proc_cpu_s as _proc_cpu
from nexus.core_api.context import Context
from nexus.core_api.runs.ingest import RUN_EVENTS_CONSUMER, handle_run_event, ingest_group
from nexus.core_api.settings import CoreSettings
from nexus.db.cache import ReadCache
from nexus.db.cache import install as install_cache
from nexus.db.connection import connect_db
from nexus.db import run_events
from nexus.db.documents import Run
from nexus.dev.servers import start_ferretdb, start_nats
from nexus.domain.ids import new_id
from nexus.domain.sessions import NoteChange
from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.events.consumer import Delivery, consume
from nexus.events.envelope import encode, make_envelope
from nexus.events.payloads import Heartbeat, LLMCalled, RunLog, SessionChanged


def _events(run_ids: list[str], n: int, changes: bool = True) -> list[tuple[str, bytes]]:
    out, seqs = [], dict.fromkeys(run_ids, 0)
    for i in range(n):
        run_id = run_ids[i % len(run_ids)]
        kind = i % 10
        if kind < 5 or (kind in (7, 8) and not changes):
            type_, data = "run.log", RunLog(message=f"step {i}: working on it")
        elif kind < 7:
            type_, data = (
                "run.llm",
                LLMCalled(step=i, provider="scripted", model="scripted", input_tokens=1200, output_tokens=80),
            )
        elif kind < 9:
            seq = seqs[run_id]
            seqs[run_id] += 1
            type_, data = (
                "run.note",
                SessionChanged(
                    session_id=f"ses_{run_id}",
                    change=NoteChange(timestamp="2026-01-01T00:00:00Z", seq=seq, message=f"note {seq}"),
                ),
            )
        else:
            type_, data = "run.heartbeat", Heartbeat(step=i)
        out.append((f"nexus.run.{run_id}.{type_.split('.')[1]}", encode(make_envelope(type_, data, source="bench"))))
    return out


async def _publish(js, events: list[tuple[str, bytes]]) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(events), 500):
        await asyncio.gather(*(js.publish(s, b) for s, b in events[i : i + 500]))
    return time.perf_counter() - t0


def _cpu_s(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of this process (the ingesting consumer, as core-api runs it) and the
    database's processes (FerretDB; PostgreSQL and its backends when it is the storage)."""
    out = {"consumer (this process)": time.process_time()}
    for name, pid in pids.items():
        out[name] = sum(_proc_cpu(p) for p in [pid, *_children(pid)]) + _proc_cpu(pid, reaped=True)
    return out


async def _ingest(
    js,
    nc,
    mongo_url: str,
    run_ids: list[str],
    expected: int,
    *,
    batched: bool,
    pids: dict[str, int] | None = None,
    options: dict | None = None,
) -> dict:
    db = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    cache = ReadCache(2.0)  # as core-api runs it
    client = await connect_db(mongo_url, db, listeners=[cache])
    install_cache(cache)
    for run_id in run_ids:
        await Run(
            id=run_id,
            task_id=new_id("task"),
            agent_id="agt_bench",
            agent_revision=1,
            session_id=f"ses_{run_id}",
        ).insert()
    ctx = Context(
        settings=CoreSettings(mongodb_url=mongo_url, mongodb_db=db), nc=nc, js=js, publisher=Publisher(js, "core-api")
    )
    handled = 0
    done = asyncio.Event()

    def seen(n: int) -> None:
        nonlocal handled
        handled += n
        if handled >= expected:
            done.set()

    async def one(d: Delivery) -> None:
        await handle_run_event(ctx, d)
        seen(1)

    async def group(ds: list[Delivery]) -> None:
        await ingest_group(ctx, ds)
        seen(len(ds))

    stop = asyncio.Event()
    cpu0 = _cpu_s(pids or {})
    t0 = time.perf_counter()
    task = asyncio.create_task(
        consume(
            js,
            durable=f"bench-{uuid.uuid4().hex[:8]}",
            handler=one,
            group_handler=group if batched else None,
            stop=stop,
            **{**RUN_EVENTS_CONSUMER, **(options or {})},  # as core-api reads (runs/ingest.py)
        )
    )
    await asyncio.wait_for(done.wait(), 900)
    elapsed = time.perf_counter() - t0
    cpu = {k: v - cpu0[k] for k, v in _cpu_s(pids or {}).items()}
    stop.set()
    await task
    stored = await run_events.count()
    install_cache(None)
    await client.drop_database(db)
    await client.close()
    return {
        "seconds": round(elapsed, 2),
        "events_per_s": round(expected / elapsed),
        "stored": stored,
        "cpu_ms_per_1000_events": {k: round(1_000_000 * v / expected, 1) for k, v in cpu.items()},
        "cpu_ms_per_1000_events_total": round(1_000_000 * sum(cpu.values()) / expected, 1),
    }


async def _raw_baseline(mongo_url: str, n: int, pids: dict[str, int]) -> dict:
    client = AsyncMongoClient(mongo_url)
    coll = client[f"bench_raw_{uuid.uuid4().hex[:8]}"]["raw"]
    docs = [
        {"_id": uuid.uuid4().hex, "run_id": "run_x", "type": "run.log", "data": {"message": f"step {i}"}}
        for i in range(n)
    ]
    cpu0 = _cpu_s(pids)
    t0 = time.perf_counter()
    for i in range(0, n, 256):
        await coll.insert_many(docs[i : i + 256], ordered=False)
    elapsed = time.perf_counter() - t0
    cpu = {k: v - cpu0[k] for k, v in _cpu_s(pids).items()}
    await client.drop_database(coll.database.name)
    await client.close()
    return {
        "seconds": round(elapsed, 2),
        "docs_per_s": round(n / elapsed),
        "cpu_ms_per_1000_docs": {k: round(1_000_000 * v / n, 1) for k, v in cpu.items()},
    }


async def main(runs: int, n: int, per_event: bool, options: dict, changes: bool = True) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    nats = start_nats(tmp / "nats", log_path=tmp / "nats.log")
    ferret = start_ferretdb(tmp / "ferretdb", log_path=tmp / "ferretdb.log")
    try:
        nc = await connect(nats.url, "bench-ingest")
        js = nc.jetstream()
        await ensure_streams(js)
        pids = {"ferretdb": ferret.proc.pid, **{b.name: b.proc.pid for b in ferret.backing}}
        run_ids = [new_id("run") for _ in range(runs)]
        events = _events(run_ids, n, changes)
        stored_kinds = sum(1 for s, _ in events if not s.endswith(".heartbeat"))
        publish_s = await _publish(js, events)
        result: dict = {
            "runs": runs,
            "events": n,
            "events_stored_expected": stored_kinds,
            "mix": "50% logs, 20% model calls, 20% session changes, 10% heartbeats"
            if changes
            else "70% logs, 20% model calls, 10% heartbeats (no session changes)",
            "publish_per_s": round(n / publish_s),
            "fetch": options.get("batch", RUN_EVENTS_CONSUMER["batch"]),
            "concurrency": options.get("concurrency", RUN_EVENTS_CONSUMER["concurrency"]),
            "baseline_raw_insert_many": await _raw_baseline(ferret.url, stored_kinds, pids),
            "ingest_batched": await _ingest(js, nc, ferret.url, run_ids, n, batched=True, pids=pids, options=options),
        }
        if per_event:
            result["ingest_per_event"] = await _ingest(js, nc, ferret.url, run_ids, n, batched=False, pids=pids)
        result["lost"] = stored_kinds - result["ingest_batched"]["stored"]
        raw = result["baseline_raw_insert_many"]["docs_per_s"]
        result["ingest_over_raw_insert_many"] = round(result["ingest_batched"]["events_per_s"] / raw, 2)
        result["note"] = "2 shared cores with other engineers' work running: figures are a lower bound"
        await nc.drain()
        return result
    finally:
        ferret.stop()
        nats.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--skip-per-event", action="store_true", help="skip the slow one-at-a-time comparison")
    ap.add_argument(
        "--no-prefetch",
        action="store_true",
        help="fetch the next batch only after this one is handled (the path before)",
    )
    ap.add_argument("--fetch", type=int, help="messages per fetch (core-api's own by default)")
    ap.add_argument("--concurrency", type=int, help="groups handled at once (core-api's own by default)")
    ap.add_argument(
        "--no-session-changes",
        action="store_true",
        help="logs in place of session changes (each change is also a ledger record and a change record)",
    )
    a = ap.parse_args()
    options = {"prefetch": not a.no_prefetch}
    options |= {"batch": a.fetch} if a.fetch else {}
    options |= {"concurrency": a.concurrency} if a.concurrency else {}
    print(
        json.dumps(
            asyncio.run(main(a.runs, a.events, not a.skip_per_event, options, not a.no_session_changes)), indent=2
        )
    )
