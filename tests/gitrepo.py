"""Git helpers for tests: run git, and make a bare 'remote' with one commit on main."""

import subprocess
from pathlib import Path


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_bare_repo(root: Path) -> Path:
    bare = root / "remote.git"
    git(root, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = root / "seed"
    git(root, "clone", "-q", str(bare), str(seed))
    (seed / "README.md").write_text("# demo\n")
    git(seed, "add", ".")
    git(seed, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    git(seed, "push", "-q", "origin", "HEAD:main")
    return bare
