"""What the git/patch/search hardening costs per call: search_text over a masked private copy, apply_patch
through git's parser into private copies, git_status with isolated config — each against the raw
operation (grep -rnIE, git apply, git status in the same tree) in the same run, interleaved.
`uv run --frozen python -m bench.runner.git_tools [--quick]` prints JSON."""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.runner.hypervisor_overhead import _interleaved, _us
from nexus.agent_runner.hypervisor import Hypervisor
from nexus.domain.agents import Permissions
from nexus.domain.sessions import SessionState

PATCH = "diff --git a/f0/m0.txt b/f0/m0.txt\n--- a/f0/m0.txt\n+++ b/f0/m0.txt\n@@ -1 +1 @@\n-{old}\n+{new}\n"


def _tree(ws: Path, files: int) -> None:
    for i in range(files):
        d = ws / f"f{i % 20}"
        d.mkdir(exist_ok=True)
        (d / f"m{i // 20}.txt").write_text(
            "\n".join(f"line {j} of file {i}: lorem ipsum dolor" for j in range(60)) + "\n"
        )
    (ws / "f0" / "m0.txt").write_text("v0\n")


async def _raw(*argv: str, cwd: Path, stdin: bytes | None = None) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await proc.communicate(stdin)


async def measure(files: int, n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-git-") as tmp:
        root = Path(tmp)
        ws, raw_ws, gitdir = root / "ws", root / "raw", root / "gitdir"
        for tree in (ws, raw_ws):
            tree.mkdir()
            _tree(tree, files)
        env = {**os.environ, "GIT_DIR": str(gitdir), "GIT_WORK_TREE": str(ws)}
        subprocess.run(["git", "init", "-q"], env=env, check=True)
        subprocess.run(["git", "add", "-A"], env=env, check=True)
        subprocess.run(
            ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "base"], env=env, check=True
        )
        subprocess.run(["git", "init", "-q", str(raw_ws)], check=True)
        session = SessionState(session_id="ses_bench", project_path=str(ws), created_at="", updated_at="")
        hv = Hypervisor(
            workspace=ws,
            permissions=Permissions(),
            session=session,
            secrets={"K": "s3cr3t-bench-value"},
            git_dir=gitdir,
        )
        flips = {"hv": 0, "raw": 0}

        def patch(kind: str) -> bytes:
            old, new = f"v{flips[kind]}", f"v{flips[kind] + 1}"
            flips[kind] += 1
            return PATCH.format(old=old, new=new).encode()

        async def hv_call(tool: str, args) -> None:
            result = await hv.call(tool, args() if callable(args) else args)
            assert result.ok, result.error

        ops = {
            "search_text": {
                "raw": lambda i: _raw("grep", "-rnIE", "--null", "-e", "lorem ip[s]um dolor$", "--", ".", cwd=raw_ws),
                "hypervisor": lambda i: hv_call("search_text", {"pattern": "lorem ip[s]um dolor$"}),
            },
            "apply_patch": {
                "raw": lambda i: _raw("git", "apply", "-", cwd=raw_ws, stdin=patch("raw")),
                "hypervisor": lambda i: hv_call("apply_patch", lambda: {"patch": patch("hv").decode()}),
            },
            "git_status": {
                "raw": lambda i: _raw("git", "status", "--short", cwd=raw_ws),
                "hypervisor": lambda i: hv_call("git_status", {}),
            },
        }
        out: dict = {"files": files, "n": n}
        for name, variants in ops.items():
            samples = await _interleaved(n, variants)
            out[name] = {label: _us(values) for label, values in samples.items()}
            out[name]["overhead_median_us"] = round(
                out[name]["hypervisor"]["median_us"] - out[name]["raw"]["median_us"], 1
            )
        return out


def main() -> int:
    quick = "--quick" in sys.argv
    print(json.dumps(asyncio.run(measure(files=200 if quick else 1000, n=10 if quick else 30)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
