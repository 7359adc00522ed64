"""A trivial run in a runner forked from the warm zygote, measured alone: CPU per run (what the
zygote reaped: the runner and anything it started) and wall time, against a real operator-mode
nats-server, each run with its own minted NATS credential — as the worker launches them, minus the
worker and the database. Same-run baseline: a bare `os.fork` + `_exit` + wait of the zygote-sized
interpreter (this process, with the runner's modules imported)."""

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from bench.throughput.baselines import fork_exec_rate
from nexus.dev.servers import nats_auth, start_nats
from nexus.domain.agents import LLMSpec
from nexus.events.bus import connect, ensure_streams
from nexus.events.credentials import RunSigner
from nexus.events.payloads import RunConfig
from nexus.events.permissions import RunIdentity
from nexus.worker.runtimes.zygote import preload
from nexus.worker.runtimes.zygote_client import Zygote

TRIVIAL = "steps:\n  - say: done\n"


def _reaped_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[13]) + int(fields[14])  # cutime + cstime of the zygote: its children, reaped


async def _runs(n: int, concurrency: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="nexus-bench-forked-"))
    auth = nats_auth(root / "auth")
    server = start_nats(root / "nats", auth=auth, log_path=root / "nats.log")
    zygote = Zygote({k: v for k, v in os.environ.items() if k in ("PATH", "LANG")})
    try:
        nc = await connect(server.url, "tools", creds=str(auth / "tools.creds"))
        await ensure_streams(nc.jetstream())
        await nc.drain()
        signer = RunSigner.parse((auth / "run-signer").read_text())
        zygote.start()
        for _ in range(1200):
            if zygote.ready:
                break
            await asyncio.sleep(0.05)
        if not zygote.ready or zygote.pid is None:
            raise RuntimeError("the zygote never became ready")
        walls: list[float] = []
        codes: list[int | None] = []
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                run_id = f"run_{os.urandom(8).hex()}"
                d = root / run_id
                (d / "home").mkdir(parents=True)
                cfg = RunConfig(
                    run_id=run_id,
                    agent_id="agent_b",
                    task_id="task_b",
                    session_id=f"ses_{run_id[4:]}",
                    system_prompt="bench",
                    llm=LLMSpec(provider="scripted", script=TRIVIAL),
                )
                (d / "run-config.json").write_bytes(msgspec.json.encode(cfg))
                env = {
                    **zygote.env,
                    "HOME": str(d / "home"),
                    "NEXUS_NATS_URL": server.url,
                    "NEXUS_RUN_CONFIG": str(d / "run-config.json"),
                    "NEXUS_WORKSPACE": str(d / "workspace"),
                    "NEXUS_STATE_DIR": str(d / "state"),
                    "NEXUS_LOG_FORMAT": "json",
                    "NEXUS_NATS_CREDS": signer.mint(RunIdentity(run_id, 1, cfg.session_id, None), 600),
                }
                t0 = time.perf_counter()
                pid = await zygote.spawn(cwd=str(d), log_path=str(d / "runner.log"), env=env, limits=(2048, 1024, 600))
                codes.append(await zygote.wait(pid))
                walls.append((time.perf_counter() - t0) * 1000)

        await one()  # warm-up: the server's first stream writes
        walls.clear()
        codes.clear()
        before = _reaped_ticks(zygote.pid)
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - t0
        await asyncio.sleep(0.1)  # the last exit reaped
        cpu_ms = (_reaped_ticks(zygote.pid) - before) * 1000 / os.sysconf("SC_CLK_TCK") / n
        walls.sort()
        return {
            "runs": n,
            "concurrency": concurrency,
            "exit_codes": sorted({c for c in codes if c is not None}),
            "cpu_ms_per_run": round(cpu_ms, 1),
            "wall_p50_ms": round(statistics.median(walls), 1),
            "wall_max_ms": round(walls[-1], 1),
            "runs_per_s": round(n / elapsed, 1),
        }
    finally:
        await zygote.close()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def measure(n: int, concurrency: int = 1) -> dict:
    preload()  # the baseline forks an interpreter as large as the zygote
    return {
        "baseline_fork_only": fork_exec_rate(max(n, 20), exec_=False),
        "trivial_run": asyncio.run(_runs(n, concurrency)),
    }
