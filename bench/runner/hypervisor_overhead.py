"""Hypervisor overhead per tool call: write_file, read_file and run_command `true` through
Hypervisor.call (validation, confinement, policy, ledger seal, masking, record) against the raw
operation in the same process. Two hypervisor setups: as the runner uses it (the session state
file rewritten after every change, fsynced when the session ends) and without a state file (the
checks alone)."""

import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from nexus.agent_runner.hypervisor import Hypervisor
from nexus.domain.agents import CommandPolicy, Permissions
from nexus.domain.sessions import SessionState

CONTENT = "x" * 1024


def _us(samples: list[float]) -> dict:
    return {
        "median_us": round(statistics.median(samples), 1),
        "mean_us": round(statistics.fmean(samples), 1),
        "n": len(samples),
    }


async def _interleaved(n: int, ops: dict) -> dict[str, list[float]]:
    """Each round times every variant once, so machine noise falls on all of them alike."""
    out: dict[str, list[float]] = {name: [] for name in ops}
    for i in range(n):
        for name, op in ops.items():
            t0 = time.perf_counter()
            await op(i)
            out[name].append((time.perf_counter() - t0) * 1e6)
    return out


def _hypervisor(ws: Path, state_file: Path | None) -> Hypervisor:
    session = SessionState(
        session_id="ses_bench", project_path=str(ws), run_id="run_bench", created_at="", updated_at=""
    )

    async def recorder(_change) -> None:  # the runner publishes here; measured apart from NATS
        return None

    return Hypervisor(
        workspace=ws,
        permissions=Permissions(commands=CommandPolicy(allow=["true"])),
        session=session,
        state_file=state_file,
        recorder=recorder,
    )


async def _raw_command(_i: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        "true", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True
    )
    await proc.communicate()


async def measure(n_files: int, n_commands: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-hv-") as tmp:
        root = Path(tmp)
        ws = root / "ws"
        ws.mkdir()
        subprocess.run(["git", "init", "-q", str(ws)], check=True)
        raw_dir = root / "raw"
        raw_dir.mkdir()

        async def raw_write(i: int) -> None:
            (raw_dir / f"f{i % 50}.txt").write_text(CONTENT)

        async def raw_read(i: int) -> None:
            (raw_dir / f"f{i % 50}.txt").read_text()

        hvs = {
            "hypervisor_with_state_file": _hypervisor(ws, root / "state.json"),
            "hypervisor_without_state_file": _hypervisor(ws, None),
        }

        def via(hv: Hypervisor, tool: str, args) -> object:
            async def op(i: int) -> None:
                assert (await hv.call(tool, args(i))).ok

            return op

        plans = {
            "write_file": (n_files, raw_write, "write_file", lambda i: {"path": f"f{i % 50}.txt", "content": CONTENT}),
            "read_file": (n_files, raw_read, "read_file", lambda i: {"path": f"f{i % 50}.txt"}),
            "run_command_true": (n_commands, _raw_command, "run_command", lambda i: {"cmd": "true"}),
        }
        out: dict = {"raw": {}, **{label: {} for label in hvs}}
        for op_name, (n, raw, tool, args) in plans.items():
            samples = await _interleaved(n, {"raw": raw, **{label: via(hv, tool, args) for label, hv in hvs.items()}})
            for label, values in samples.items():
                out[label][op_name] = _us(values)
        for label, hv in hvs.items():
            out[label]["changes_recorded"] = len(hv.session.changes)
            out[label]["overhead_median_us"] = {
                op: round(out[label][op]["median_us"] - out["raw"][op]["median_us"], 1) for op in plans
            }
        return out
