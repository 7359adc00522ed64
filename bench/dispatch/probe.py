"""What the dispatch bench observes: every run event (from the NEXUS_RUNS stream), process memory
(from /proc), and the baseline cost of starting a Python process at all."""

import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from nats.js.api import DeliverPolicy

from nexus.events.catalog import RUNS_STREAM
from nexus.events.envelope import decode_raw

FINAL = {"succeeded", "failed", "cancelled", "timed_out"}


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]


def summary_ms(values: list[float]) -> dict:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 1),
        "p99_ms": round(pct(ms, 99), 1),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else None,
        "max_ms": round(max(ms), 1) if ms else None,
    }


@dataclass
class RunLog:
    """Per run: when the worker launched it, the runner's first event, and its final status."""

    launched: dict[str, float] = field(default_factory=dict)
    first_runner: dict[str, float] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)
    launches: dict[str, int] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)

    async def follow(self, js) -> object:
        async def on(msg) -> None:
            run_id = msg.subject.split(".")[2]
            env = decode_raw(msg.data)
            data = msgspec.json.decode(env.data)
            if env.type == "run.runtime":
                if data["phase"] == "launched":
                    self.launched.setdefault(run_id, ts(env.occurred_at))
                    self.launches[run_id] = self.launches.get(run_id, 0) + 1
                elif data["phase"] == "lost":
                    self.lost.add(run_id)
            elif env.source == "agent-runner":
                self.first_runner.setdefault(run_id, ts(env.occurred_at))
            if env.type == "run.status" and data.get("status") in FINAL:
                self.final[run_id] = data["status"]

        return await js.subscribe(
            "nexus.run.>", stream=RUNS_STREAM, cb=on, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )


def _rss_kb(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def runner_pids() -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"nexus.agent_runner" in f.read():
                        out.append(pid)
            except OSError:
                continue
    return out


class MemorySampler:
    """Peaks of: runner processes alive at once, their summed RSS, and the services' RSS."""

    def __init__(self, services: dict[str, int]) -> None:
        self.services = services
        self.peak_runners = 0
        self.peak_runner_rss_kb = 0
        self.peak_service_rss_kb: dict[str, int] = dict.fromkeys(services, 0)
        self.per_runner_kb: list[int] = []

    async def run(self, stop: asyncio.Event, every_s: float = 0.25) -> None:
        while not stop.is_set():
            pids = runner_pids()
            rss = [_rss_kb(p) for p in pids]
            self.peak_runners = max(self.peak_runners, len(pids))
            self.peak_runner_rss_kb = max(self.peak_runner_rss_kb, sum(rss))
            self.per_runner_kb.extend(r for r in rss if r)
            for name, pid in self.services.items():
                self.peak_service_rss_kb[name] = max(self.peak_service_rss_kb[name], _rss_kb(str(pid)))
            await asyncio.sleep(every_s)

    def report(self) -> dict:
        return {
            "peak_concurrent_runners": self.peak_runners,
            "peak_runners_rss_mb": round(self.peak_runner_rss_kb / 1024, 1),
            "runner_rss_mb_p50": round(pct(self.per_runner_kb, 50) / 1024, 1) if self.per_runner_kb else None,
            "peak_service_rss_mb": {k: round(v / 1024, 1) for k, v in self.peak_service_rss_kb.items()},
        }


async def spawn_latency(argv: list[str], n: int) -> dict:
    """Baseline: spawn a process and wait for it to exit, n times in a row."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
        await proc.wait()
        samples.append(time.perf_counter() - t0)
    return summary_ms(samples)


PYTHON = sys.executable
