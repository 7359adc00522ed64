"""A trivial run in a runner forked from the warm zygote, measured alone: CPU per run (what the
zygote reaped: the runner and anything it started) and wall time, against a real operator-mode
nats-server, each run with its own minted NATS credential — as the worker launches them, minus the
worker and the database. Same-run baselines: a bare `os.fork` + `_exit` + wait of the zygote-sized
interpreter (this process, with the runner's modules imported), and the **floor** (`floor.py`): a
child forked from the same zygote that only connects with its own credential, publishes the six
events of a trivial run awaiting their acks, and exits — what per-run isolation and identity cost — and the
**bare** child (`floor.bare`): the fork, `_become` and the exit alone, below any event loop or bus.
`relayed_run` is the trivial run as the worker forks it when it relays (its publishes ride a socket
pair whose other end this process serves, as the worker does, on a connection of the worker's user).

Floor and trivial runs alternate in blocks from the one zygote, so the box's noise falls on both
alike. Per kind: CPU-ms per run (user and system apart), minor page faults per run (mostly the
copy-on-write of the inherited heap), wall p50 per run; and the zygote's own CPU and faults per run (the
fork's page-table copy is charged to it)."""

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from bench.runner.floor import BARE_ENTRY
from bench.runner.floor import ENTRY as FLOOR_ENTRY
from bench.throughput.baselines import fork_exec_rate
from nexus.dev.servers import nats_auth, start_nats
from nexus.events.bus import connect, ensure_streams
from nexus.events.credentials import RunSigner
from nexus.agent_runner.rehearsal import trivial_config
from nexus.events.permissions import RunIdentity
from nexus.worker.runtimes.relay import Relays
from nexus.worker.runtimes.run_files import run_files_root
from nexus.worker.runtimes.zygote import DEFAULT_ENTRY, preload
from nexus.worker.runtimes.zygote_client import Zygote

KINDS = {"trivial_run": DEFAULT_ENTRY, "relayed_run": DEFAULT_ENTRY, "floor": FLOOR_ENTRY, "bare": BARE_ENTRY}
BLOCK = 10  # runs of one kind in a row before the other kind's block
PASSED_THROUGH = ("NEXUS_ZYGOTE_REHEARSAL", "NEXUS_ZYGOTE_HUGEPAGES")  # from the bench's environment to the zygote


def _reaped(pid: int) -> tuple[int, int, int, int, int]:
    """The zygote's reaped children so far: (user ticks, system ticks, minor faults), then the zygote's own
    CPU (user + system ticks: the fork's page-table copy is charged to the parent) and its own minor faults
    (after a fork the zygote's writable pages are write-protected for it too)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # cutime, cstime, cminflt; utime + stime, minflt
    return int(fields[13]), int(fields[14]), int(fields[8]), int(fields[11]) + int(fields[12]), int(fields[7])


async def _runs(n: int, concurrency: int, kinds: tuple[str, ...] = tuple(KINDS)) -> dict:
    root = Path(tempfile.mkdtemp(prefix="nexus-bench-forked-"))
    runs = root / "runs"  # laid out as the worker lays out a run (its runtimes/local.py)
    files = run_files_root(runs)  # the control files: in memory when /dev/shm is a tmpfs
    auth = nats_auth(root / "auth")
    server = start_nats(root / "nats", auth=auth, log_path=root / "nats.log")
    repo_root = str(Path(__file__).resolve().parents[2])  # the floor's entry module (bench.runner.floor)
    # NEXUS_ZYGOTE_REHEARSAL=false / NEXUS_ZYGOTE_HUGEPAGES=false in the bench's environment: a zygote without
    # its rehearsal run / its heap in huge pages
    relays: Relays | None = None
    zygote = Zygote(
        {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", *PASSED_THROUGH)} | {"PYTHONPATH": repo_root}
    )
    try:
        nc = await connect(server.url, "tools", creds=str(auth / "tools.creds"))
        await ensure_streams(nc.jetstream())
        await nc.drain()
        relays = Relays(await connect(server.url, "worker", creds=str(auth / "worker.creds")))
        signer = RunSigner.parse((auth / "run-signer").read_text())
        zygote.start()
        for _ in range(1200):
            if zygote.ready:
                break
            await asyncio.sleep(0.05)
        if not zygote.ready or zygote.pid is None:
            raise RuntimeError("the zygote never became ready")
        walls: dict[str, list[float]] = {k: [] for k in kinds}
        codes: dict[str, set[int | None]] = {k: set() for k in kinds}
        gate = asyncio.Semaphore(concurrency)

        async def one(kind: str) -> None:
            async with gate:
                run_id = f"run_{os.urandom(8).hex()}"
                d = files / run_id / "attempt-1"
                d.mkdir(parents=True)
                cfg = trivial_config(run_id, "b")
                (d / "run-config.json").write_bytes(msgspec.json.encode(cfg))
                env = {
                    **zygote.env,
                    "HOME": str(d),
                    "NEXUS_NATS_URL": server.url,
                    "NEXUS_RUN_CONFIG": str(d / "run-config.json"),
                    "NEXUS_WORKSPACE": str(runs / f"{run_id}.1" / "workspace"),
                    "NEXUS_STATE_DIR": str(runs / f"{run_id}.1"),
                    "NEXUS_LOG_FORMAT": "json",
                    "NEXUS_NATS_CREDS": signer.mint(RunIdentity(run_id, 1, cfg.session_id, None), 600),
                }
                if kind == "floor":
                    env["NEXUS_RUN_ID"] = run_id
                zygote.entry = KINDS[kind]  # read when the request is written: one kind per block
                t0 = time.perf_counter()
                mine, theirs = relays.pair() if kind == "relayed_run" else (None, None)
                pid = await zygote.spawn(
                    cwd=str(d), log_path=str(d / "runner.log"), env=env, limits=(2048, 1024, 600), relay=theirs
                )
                if mine is not None and theirs is not None:
                    theirs.close()
                    await relays.serve(mine, RunIdentity(run_id, 1, cfg.session_id, None))
                codes[kind].add(await zygote.wait(pid))
                walls[kind].append((time.perf_counter() - t0) * 1000)

        for kind in kinds:  # warm-up: the server's first stream writes
            await one(kind)
            walls[kind].clear()
        totals = {k: [0, 0, 0, 0, 0] for k in kinds}
        counts = dict.fromkeys(kinds, 0)
        t0 = time.perf_counter()
        done = 0
        while done < n:
            block = min(BLOCK, n - done)
            for kind in kinds:
                before = _reaped(zygote.pid)
                await asyncio.gather(*(one(kind) for _ in range(block)))
                after = _reaped(zygote.pid)
                for i in range(5):
                    totals[kind][i] += after[i] - before[i]
                counts[kind] += block
            done += block
        elapsed = time.perf_counter() - t0
        tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        out: dict = {}
        for kind in kinds:
            user, system, faults, zygote_cpu, zygote_faults = totals[kind]
            ordered = sorted(walls[kind])
            out[kind] = {
                "runs": counts[kind],
                "concurrency": concurrency,
                "exit_codes": sorted(c for c in codes[kind] if c is not None),
                "cpu_ms_per_run": round((user + system) * tick_ms / counts[kind], 1),
                "user_ms_per_run": round(user * tick_ms / counts[kind], 1),
                "system_ms_per_run": round(system * tick_ms / counts[kind], 1),
                "minor_faults_per_run": round(faults / counts[kind]),
                "zygote_cpu_ms_per_run": round(zygote_cpu * tick_ms / counts[kind], 2),
                "zygote_minor_faults_per_run": round(zygote_faults / counts[kind]),
                "wall_p50_ms": round(statistics.median(ordered), 1),
                "wall_max_ms": round(ordered[-1], 1),
            }
        out["elapsed_s"] = round(elapsed, 2)
        return out
    finally:
        await zygote.close()
        if relays is not None:
            await relays.nc.close()
        server.stop()
        shutil.rmtree(files, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def measure(n: int, concurrency: int = 1) -> dict:
    preload()  # the baseline forks an interpreter as large as the zygote
    runs = asyncio.run(_runs(n, concurrency))
    out = {"baseline_fork_only": fork_exec_rate(max(n, 20), exec_=False), **runs}
    if "floor" in runs and "trivial_run" in runs:
        trivial, floor = runs["trivial_run"], runs["floor"]
        out["trivial_minus_floor_cpu_ms"] = round(trivial["cpu_ms_per_run"] - floor["cpu_ms_per_run"], 1)
        out["floor_share_of_trivial"] = round(floor["cpu_ms_per_run"] / trivial["cpu_ms_per_run"], 2)
    return out
