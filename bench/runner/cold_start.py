"""Runner cold start: process start → its first event on NATS (a core subscription on
nexus.run.<id>.> in this process), against bare interpreters started the same way:
`python -c "import asyncio"` (the brief's baseline) and `python -c pass`, each process start → exit.
Also reported: what the runner's full import set costs on its own (why the first event is sent
before it; see nexus/agent_runner/first_event.py)."""

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
import nats

from nexus.dev.servers import start_nats
from nexus.domain.agents import LLMSpec
from nexus.events.bus import ensure_streams
from nexus.events.payloads import RunConfig

HEAVY = "import nexus.agent_runner.session, nexus.agent_runner.reporter, nexus.events.bus, nats"


def _stats(samples: list[float]) -> dict:
    return {
        "median_ms": round(statistics.median(samples), 1),
        "min_ms": round(min(samples), 1),
        "max_ms": round(max(samples), 1),
        "n": len(samples),
    }


def _process_ms(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return (time.perf_counter() - t0) * 1000


def _import_ms(modules: str) -> float:
    code = f"import time; t = time.perf_counter(); {modules}; print((time.perf_counter() - t) * 1000)"
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


async def _runner_first_event_ms(nc, url: str, root: Path) -> float:
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    d = root / run_id
    d.mkdir()
    cfg = RunConfig(
        run_id=run_id,
        agent_id="agent_b",
        task_id="task_b",
        session_id=f"ses_{run_id[4:]}",
        system_prompt="bench",
        llm=LLMSpec(provider="scripted", script="steps:\n  - say: done\n"),
    )
    (d / "run-config.json").write_bytes(msgspec.json.encode(cfg))
    first: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_msg(_msg) -> None:
        if not first.done():
            first.set_result(time.perf_counter())

    sub = await nc.subscribe(f"nexus.run.{run_id}.>", cb=on_msg)
    await nc.flush()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(d),
        "NEXUS_NATS_URL": url,
        "NEXUS_RUN_CONFIG": str(d / "run-config.json"),
        "NEXUS_WORKSPACE": str(d / "workspace"),
        "NEXUS_STATE_DIR": str(d / "state"),
        "NEXUS_HEARTBEAT_S": "60",
    }
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nexus.agent_runner.main",
        env=env,
        cwd=str(d),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    t1 = await asyncio.wait_for(first, 30)
    if await proc.wait() != 0:
        raise RuntimeError(f"the runner failed (run {run_id})")
    await sub.unsubscribe()
    return (t1 - t0) * 1000


async def _runner_samples(reps: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        server = start_nats(Path(tmp) / "nats")
        try:
            nc = await nats.connect(server.url)
            await ensure_streams(nc.jetstream())
            await _runner_first_event_ms(nc, server.url, Path(tmp))  # warm the OS caches once
            samples = [await _runner_first_event_ms(nc, server.url, Path(tmp)) for _ in range(reps)]
            await nc.drain()
            return samples
        finally:
            server.stop()


def measure(reps: int) -> dict:
    _process_ms("import asyncio")  # warm-up
    # Interleave baseline and runner so machine noise hits both alike.
    bare_asyncio = [_process_ms("import asyncio") for _ in range(reps)]
    bare = [_process_ms("pass") for _ in range(reps)]
    runner = asyncio.run(_runner_samples(reps))
    heavy = [_import_ms(HEAVY) for _ in range(max(3, reps // 3))]
    out = {
        "runner_process_start_to_first_event": _stats(runner),
        "baseline_python_import_asyncio_start_to_exit": _stats(bare_asyncio),
        "baseline_python_pass_start_to_exit": _stats(bare),
        "runner_full_imports_alone": _stats(heavy),
        "target_ms": 300,
    }
    out["runner_minus_asyncio_baseline_ms"] = round(
        out["runner_process_start_to_first_event"]["median_ms"]
        - out["baseline_python_import_asyncio_start_to_exit"]["median_ms"],
        1,
    )
    out["meets_target"] = out["runner_process_start_to_first_event"]["median_ms"] <= 300
    return out
