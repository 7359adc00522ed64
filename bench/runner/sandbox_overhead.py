"""The OS sandbox's cost per agent command: the same command run unconfined (the baseline: a
process group and a scrubbed environment, as before the sandbox), under Landlock + rlimits (the
fallback), and under bubblewrap (namespaces, read-only system, private /tmp, rlimits), interleaved
in one run. Also run_command through the Hypervisor (parser, policy, ledger) with sandbox "none"
and with the sandbox this machine gives, so the parser's share shows too."""

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from nexus.agent_runner.hypervisor import Hypervisor, commands, sandbox
from nexus.domain.agents import CommandPolicy, Permissions
from nexus.domain.sessions import SessionState

# As the hypervisor gives commands: no system or global git config (the sandbox may not let git read it).
ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}


def _ms(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "n": len(ordered),
    }


async def _interleaved(n: int, ops: dict) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(n):
        for name, op in ops.items():
            t0 = time.perf_counter()
            await op()
            out[name].append((time.perf_counter() - t0) * 1e3)
    return out


def _execute(argv: list[str], ws: Path, mode: str | None):
    spec = sandbox.Spec(workspace=str(ws), programs=[shutil.which(argv[0], path=ENV["PATH"]) or argv[0]])

    async def op() -> None:
        outcome = await commands.execute(
            argv, cwd=str(ws), env=ENV, timeout_s=30, max_output=65536, confine=(mode, spec) if mode else None
        )
        assert outcome.exit_code == 0, outcome.output

    return op


def _via_hypervisor(ws: Path, mode: str):
    session = SessionState(session_id=f"ses_bench_{mode}", project_path=str(ws))
    hv = Hypervisor(
        workspace=ws,
        permissions=Permissions(commands=CommandPolicy(allow=["true", "git status*"])),
        session=session,
        base_env=ENV,
        sandbox_mode=mode,
    )

    async def op() -> None:
        assert (await hv.call("run_command", {"cmd": "true"})).ok

    return op, hv.sandbox


async def measure(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        ws = Path(tmp) / "ws"
        ws.mkdir()
        subprocess.run(["git", "init", "-q", str(ws)], check=True)
        (ws / "README.md").write_text("# bench\n")
        modes = {"unsandboxed": None}
        if sandbox.landlock_abi() > 0:
            modes["landlock"] = "landlock"
        if sandbox.detect("bwrap") == "bwrap":
            modes["bwrap"] = "bwrap"
        out: dict = {
            "available": sorted(m for m in modes if m != "unsandboxed"),
            "landlock_abi": sandbox.landlock_abi(),
        }
        for label, argv in (("true", ["true"]), ("git_status", ["git", "status", "--short"])):
            samples = await _interleaved(n, {name: _execute(argv, ws, mode) for name, mode in modes.items()})
            out[label] = {name: _ms(values) for name, values in samples.items()}
            out[label]["overhead_median_ms"] = {
                name: round(out[label][name]["median_ms"] - out[label]["unsandboxed"]["median_ms"], 2)
                for name in modes
                if name != "unsandboxed"
            }
        plain, _ = _via_hypervisor(ws, "none")
        confined, mode = _via_hypervisor(ws, "auto")
        samples = await _interleaved(n, {"hypervisor_none": plain, f"hypervisor_{mode}": confined})
        out["run_command_true_via_hypervisor"] = {name: _ms(values) for name, values in samples.items()}
        return out
