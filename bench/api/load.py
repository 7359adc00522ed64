"""oha, the load tool: found, installed with cargo when it can be, and run at a fixed rate with
latency correction (the open-loop view: a slow answer delays the schedule, not the measurement)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

OHA_VERSION = "1.16.0"


def find_oha(install: bool) -> tuple[str | None, str]:
    """The oha binary, or None and why not."""
    for candidate in (shutil.which("oha"), str(Path.home() / ".cargo/bin/oha")):
        if candidate and Path(candidate).exists():
            return candidate, ""
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo/bin/cargo")
    if not Path(cargo).exists():
        return (
            None,
            "oha is not installed and cargo is missing: `cargo install oha --locked` (or any oha on PATH) enables this bench",
        )
    if not install:
        return (
            None,
            "oha is not installed; rerun with --install (runs `cargo install oha --locked`, several minutes on 2 cores)",
        )
    done = subprocess.run(
        [cargo, "install", "oha", "--locked", "--version", OHA_VERSION], capture_output=True, text=True
    )
    if done.returncode != 0:
        return None, f"cargo install oha failed: {done.stderr[-500:]}"
    return str(Path.home() / ".cargo/bin/oha"), ""


def oha(
    binary: str,
    url: str,
    *,
    seconds: float,
    rate: int | None,
    connections: int,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict:
    """One oha run; rate None means as fast as the connections allow (max throughput)."""
    args = [binary, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(connections), "-m", method]
    if rate:
        args += ["-q", str(rate), "--latency-correction"]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    if body is not None:
        args += ["-d", body, "-T", "application/json"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True, env={**os.environ, "NO_COLOR": "1"})
    return summarize(json.loads(out.stdout), seconds)


def summarize(raw: dict, seconds: float) -> dict:
    s, pct = raw["summary"], raw["latencyPercentiles"]
    codes = raw.get("statusCodeDistribution", {})
    total = sum(codes.values())
    return {
        "requests": total,
        "rps": round(s["requestsPerSec"], 1),
        "success_rate": round(s["successRate"], 4),
        "status_codes": codes,
        "errors": raw.get("errorDistribution", {}),
        "p50_ms": round(pct["p50"] * 1000, 2),
        "p90_ms": round(pct["p90"] * 1000, 2),
        "p99_ms": round(pct["p99"] * 1000, 2),
        "max_ms": round(s["slowest"] * 1000, 2),
    }
