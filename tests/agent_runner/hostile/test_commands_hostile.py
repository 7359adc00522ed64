"""Hostile agent commands through the real runner (its own process, real NATS, a cloned repository,
the scripted provider as the agent). Every attempt in cases.py must be refused, with its reason,
and recorded in the ledger; attempts the policy lets run (a probe the policy names) must find
nothing to escape to. After each run: the sentinel outside the workspace is intact, no marker was
made, the git directory holds nothing planted, no process the commands started is alive, and the
secret's value is in no event, log line, state file or pushed commit."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from io import BytesIO
from pathlib import Path
from urllib.parse import urlparse

import pytest

from nexus.agent_runner.hypervisor import cgroups, sandbox as sandbox_mod
from nexus.agent_runner.hypervisor.state import read_state
from nexus.domain.ledger import verify_chain
from tests.agent_runner.hostile.cases import CLASSES
from tests.agent_runner.test_runner_support import changes, config, final_status, git, js, read_events, start_runner  # noqa: F401 — pytest fixtures, used as parameters

pytestmark = pytest.mark.infra
VALUE = "tok\\9Zq81-hostile-do-not-leak"  # a backslash: repr() would show it as two, past the mask
SENTINEL_TEXT = "sentinel: must never change or leak\n"
POLICY = {
    "can_commit": True,
    "ask": ["write:deploy/*"],
    "commands": {
        "allow": ["*", "python3 scripts/probe.py *", "python3 scripts/mklinks.py *"],
        "deny": ["rm *", "chmod *", "curl *", "wget *"],
        "default": "allow",
        "timeout_s": 30,
    },
}
# The workspace is <tmp>/<run id>/workspace and the sentinel <tmp>/sentinel: links the agent makes.
MKLINKS = """import os
os.symlink('/proc/1/environ', 'mine')
os.symlink(os.path.join('..', '..', 'sentinel'), 'mine2')
os.symlink('../../', 'mine3')
"""


def _tar(path: Path, *members: tuple[str, str, str | bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, kind, content in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = content if isinstance(content, bytes) else content.encode()
                info.size = len(data)
                tar.addfile(info, BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE if kind == "link" else tarfile.LNKTYPE
                info.linkname = str(content)
                tar.addfile(info)


def _zip(path: Path, name: str, content: str, mode: int = 0o100644) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        archive.writestr(info, content)


def _seed(root: Path, sentinel: Path) -> Path:
    """A bare repository whose main holds the attacker's material: archives with links and .git
    members, symlinks out of the workspace, a probe script and a shell script."""
    bare = root / "remote.git"
    git(root, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = root / "seed"
    git(root, "clone", "-q", str(bare), str(seed))
    (seed / "README.md").write_text("# demo\nhello world\n")
    (seed / "src").mkdir()
    (seed / "src" / "app.py").write_text("print('hello')\n")
    (seed / "deploy").mkdir()
    (seed / "deploy" / "prod.yaml").write_text("replicas: 1\n")
    (seed / "scripts").mkdir()
    shutil.copy(Path(__file__).with_name("probe.py"), seed / "scripts" / "probe.py")
    (seed / "scripts" / "probe.py").chmod(0o755)
    (seed / "scripts" / "mklinks.py").write_text(MKLINKS)
    (seed / "scripts" / "run.sh").write_text("#!/bin/sh\nid > pwned\n")
    (seed / "scripts" / "run.sh").chmod(0o755)
    _tar(seed / "ok.tar", ("a.txt", "file", "a\n"))
    _tar(seed / "hook.tar", (".git/hooks/pre-commit", "file", "#!/bin/sh\nid\n"))
    _tar(seed / "link.tar", ("esc2", "link", "/etc"), ("esc2/pwned", "file", "x"))
    _tar(seed / "hardlink.tar", ("hard", "hard", "/etc/passwd"))
    _tar(seed / "dotdot.tar", ("../dotdot-escape", "file", "x"))
    _tar(seed / "abs.tar", ("/tmp/nexus-abs-escape", "file", "x"))
    _zip(seed / "hook.zip", ".git/config", "[core]\n\tfsmonitor = id\n")
    _zip(seed / "link.zip", "ziplink", "/etc", mode=0o120777)
    for name, target in (
        ("esc", "/etc"),
        ("sentlink", str(sentinel / "secret.txt")),
        ("proclink", "/proc/self/environ"),
        ("rootlink", "/"),
        ("uplink", "../.."),
        ("gitlink", ".git"),
    ):
        os.symlink(target, seed / name)
    git(seed, "add", "-A")
    git(seed, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    git(seed, "push", "-q", "origin", "HEAD:main")
    return bare


def _fill(cmd: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        cmd = cmd.replace("{" + key + "}", value)
    return cmd


def _with_marker(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmdline = fh.read()
                with open(f"/proc/{entry}/stat") as fh:
                    zombie = fh.read().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                continue
            if marker.encode() in cmdline and not zombie:
                found.append(int(entry))
    return found


class Stage:
    """One hostile run: the sentinel, the seeded repository and what the agent's script does."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.sentinel = tmp_path / "sentinel"
        self.sentinel.mkdir()
        (self.sentinel / "secret.txt").write_text(SENTINEL_TEXT)
        self.marker_name = f"nexus-escape-{uuid.uuid4().hex}"
        self.marker = f"/tmp/{self.marker_name}"
        self.bare = _seed(tmp_path, self.sentinel)

    def config(self, calls: list[dict], **fields):
        script = {"steps": [{"tool_calls": calls[i : i + 40]} for i in range(0, len(calls), 40)] + [{"say": "done"}]}
        run_id = f"run_{uuid.uuid4().hex[:16]}"
        repo = {"url": str(self.bare), "ref": "main", "branch": f"nexus/task_t/{run_id}", "target_branch": "main"}
        return config(
            json.dumps(script),
            run_id=run_id,
            repo=repo,
            secrets=["API_TOKEN"],
            permissions=POLICY,
            tools=["run_command", "write_file", "note", "finish"],
            limits={"max_steps": 40},
            **fields,
        )

    def planted(self) -> list[Path]:
        return [
            p
            for p in (Path(self.marker), Path("/etc") / self.marker_name, Path("/usr/local/bin") / self.marker_name)
            if p.exists()
        ]

    def intact(self) -> None:
        assert self.planted() == []
        assert sorted(p.name for p in self.sentinel.iterdir()) == ["secret.txt"]
        assert (self.sentinel / "secret.txt").read_text() == SENTINEL_TEXT
        assert not Path(self.marker).exists() and not Path("/tmp/nexus-escape").exists()
        assert not Path("/tmp/nexus-abs-escape").exists() and not (self.root / "dotdot-escape").exists()


async def _run(stage: Stage, js, nats_url: str, calls: list[dict], env: dict[str, str] | None = None):
    cfg = stage.config(calls)
    r = await start_runner(
        stage.root, nats_url, cfg, secrets={"API_TOKEN": VALUE}, env={"NEXUS_APPROVAL_TIMEOUT_S": "0.2", **(env or {})}
    )
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, cfg.run_id)
    assert final_status(events)["status"] == "succeeded", (final_status(events), r.log()[-3000:])
    return r, events


def _no_leak(stage: Stage, r, events) -> None:
    state = r.dir / "state" / f"{r.cfg.session_id}.json"
    assert verify_chain(read_state(state).changes).ok
    pushed = subprocess.run(
        ["git", "log", "-p", "--all", "--format=%H %B"], cwd=stage.bare, capture_output=True, text=True
    ).stdout
    for text in (str(events), r.log(), state.read_text(), pushed):
        assert VALUE not in text and VALUE.replace("\\", "\\\\") not in text


def _workspace_git_clean(r) -> None:
    gitdir = r.workspace / ".git"
    if gitdir.is_dir():
        assert "fsmonitor" not in (gitdir / "config").read_text()
        planted = (
            [p.name for p in (gitdir / "hooks").iterdir() if not p.name.endswith(".sample")]
            if (gitdir / "hooks").exists()
            else []
        )
        assert planted == []


def test_there_are_enough_distinct_hostile_attempts() -> None:
    attempts = [cmd for cases in CLASSES.values() for cmd, _ in cases]
    assert len(attempts) == len(set(attempts)) >= 200


@pytest.mark.parametrize("kind", list(CLASSES))
async def test_hostile_commands_are_refused_and_recorded(js, nats_url, tmp_path, kind) -> None:
    stage = Stage(tmp_path)
    cases = CLASSES[kind]
    setup = [{"name": "run_command", "args": {"cmd": "python3 scripts/mklinks.py now"}}]
    calls = setup + [
        {"name": "run_command", "args": {"cmd": _fill(cmd, {"sentinel": str(stage.sentinel)})}} for cmd, _ in cases
    ]
    r, events = await _run(stage, js, nats_url, calls)

    tools = [e["data"] for _, e in events if e["type"] == "run.tool"]
    assert tools[0]["ok"], tools[0]  # the links the agent made are there
    assert (r.workspace / "mine2").is_symlink()
    wrong_allows = [(cmd, t) for (cmd, _), t in zip(cases, tools[1:], strict=True) if t["ok"]]
    assert wrong_allows == []
    refused = [c for c in changes(events, "refused") if c["tool"] == "run_command"]
    assert len(refused) == len(cases)  # each refusal is in the ledger
    wrong_reasons = [
        (cmd, c["reason"], c["detail"])
        for (cmd, reasons), c in zip(cases, refused, strict=True)
        if c["reason"] not in reasons
    ]
    assert wrong_reasons == []
    for (_cmd, _), tool, change in zip(cases, tools[1:], refused, strict=True):
        assert tool["error"].startswith(f"refused ({change['reason']})")
    if kind == "writes":
        decisions = [c["decision"] for c in changes(events, "approval")]
        assert decisions == ["requested", "expired"] * 3
    stage.intact()
    _workspace_git_clean(r)
    assert not (r.workspace / "pwned").exists() and (r.workspace / "README.md").exists()
    _no_leak(stage, r, events)


def _contained_calls(stage: Stage, nats_url: str, victim: int, markers: dict[str, str], survive: bool) -> list[dict]:
    port = urlparse(nats_url).port
    cmds = [
        f"python3 scripts/probe.py write-outside {stage.marker_name}",
        "python3 scripts/probe.py environ",
        f"python3 scripts/probe.py net 127.0.0.1 {port}",
        f"python3 scripts/probe.py kill {victim}",
        "python3 scripts/probe.py nofile",
        "python3 scripts/probe.py home",
        "T=${secret:API_TOKEN} printenv T",
    ]
    if survive:
        cmds += [f"python3 scripts/probe.py survive {how} {marker}" for how, marker in markers.items()]
    return [{"name": "run_command", "args": {"cmd": cmd}} for cmd in cmds]


def _probe(r, name: str) -> str:
    return (r.workspace / "probe-out" / f"{name}.txt").read_text()


@pytest.mark.parametrize("mode", ["auto", "landlock"])
async def test_what_the_policy_lets_run_finds_no_way_out(js, nats_url, tmp_path, mode) -> None:
    if mode == "auto" and sandbox_mod.detect("auto") != "bwrap":
        pytest.skip("bubblewrap cannot create namespaces here")
    if sandbox_mod.landlock_abi() < 6 and mode == "landlock":
        pytest.skip("this kernel's Landlock cannot scope signals")
    stage = Stage(tmp_path)
    markers = {how: f"nexus-survivor-{how}-{uuid.uuid4().hex}" for how in ("setsid", "double-fork", "nohup")}
    victim = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", f"nexus-victim-{uuid.uuid4().hex}"]
    )
    try:
        calls = _contained_calls(stage, nats_url, victim.pid, markers, survive=mode == "auto")
        r, events = await _run(stage, js, nats_url, calls, env={"NEXUS_SANDBOX": mode})
        opened = [e["data"] for _, e in events if e["type"] == "run.session"]
        assert opened and all(o["sandbox"] == ("bwrap" if mode == "auto" else "landlock") for o in opened), opened
        tools = [e["data"] for _, e in events if e["type"] == "run.tool"]
        assert all(t["ok"] for t in tools[: len(calls)]), tools
        assert [c["exitCode"] for c in changes(events, "command-run")] == [0] * len(calls)

        # In bwrap, /tmp is the command's own: a marker there is not on the machine (stage.intact checks).
        # Landlock cannot carve the git directory out of the workspace: there it is protected only
        # when it lives outside the workspace.
        git_inside = (r.workspace / ".git").is_dir()
        escaped = [
            line
            for line in _probe(r, "write-outside").splitlines()
            if line.endswith("DONE")
            and not (mode == "auto" and line.startswith("tmp-marker"))
            and not (mode == "landlock" and git_inside and line.startswith("git-"))
        ]
        assert escaped == [], _probe(r, "write-outside")
        environ = _probe(r, "environ")
        assert "NEXUS" not in environ and "${secret" not in environ and VALUE not in environ
        if mode == "auto":
            assert int(environ.split("\n", 1)[0].removeprefix("pids: ")) <= 3, environ  # only its own processes
        assert "blocked" in _probe(r, "net"), _probe(r, "net")
        assert "blocked" in _probe(r, "kill") and victim.poll() is None
        assert int(_probe(r, "nofile").split(": ")[1]) < 5000
        home = _probe(r, "home")
        assert "home: " + str(r.workspace) not in home and not (r.workspace / ".gitconfig").exists()
        for marker in markers.values() if mode == "auto" else []:
            for _ in range(100):
                if not _with_marker(marker):
                    break
                time.sleep(0.05)
            assert _with_marker(marker) == [], marker
        stage.intact()
        if mode == "auto" or not git_inside:
            _workspace_git_clean(r)
        _no_leak(stage, r, events)
    finally:
        victim.kill()
        victim.wait()
        for path in stage.planted():  # only if the sandbox failed (and the test with it): leave no trace
            path.unlink()


async def test_files_commands_write_without_naming_them_reach_the_run_events(js, nats_url, tmp_path) -> None:
    """Through the real runner: the file-write changes a command's unnamed files are recorded as
    are published with the run's other changes, before the command's own, which counts them."""
    calls = [
        ("write_file", {"path": "lines.txt", "content": "one\ntwo\n"}),
        ("write_file", {"path": "sub/f.txt", "content": "f\n"}),
        ("run_command", {"cmd": "split -l 1 lines.txt piece"}),
        ("run_command", {"cmd": "csplit -s -f part -b %03d.md lines.txt 2"}),
        ("run_command", {"cmd": "cp -r sub copied"}),
        ("run_command", {"cmd": "sed -i.orig s/one/uno/ lines.txt"}),
    ]
    steps = [{"tool_calls": [{"name": name, "args": args}]} for name, args in calls]
    steps.append({"tool_calls": [{"name": "finish", "args": {"summary": "done"}}]})
    cfg = config(
        json.dumps({"steps": steps}),
        permissions={"commands": {"allow": ["split *", "csplit *", "cp *", "sed *"], "default": "deny"}},
    )
    r = await start_runner(tmp_path, nats_url, cfg)
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, cfg.run_id)
    assert final_status(events)["status"] == "succeeded"
    recorded = changes(events)[2:]  # after the two write_file changes
    by_command: list[tuple[str, list[str]]] = []
    pending: list[str] = []
    for change in recorded:
        if change["type"] == "file-write":
            pending.append(change["relPath"])
        elif change["type"] == "command-run":
            assert change["filesChanged"] == len(pending), change
            by_command.append((change["cmd"], pending))
            pending = []
    assert by_command == [
        ("split -l 1 lines.txt piece", ["pieceaa", "pieceab"]),
        ("csplit -s -f part -b %03d.md lines.txt 2", ["part000.md", "part001.md"]),
        ("cp -r sub copied", ["copied/f.txt"]),
        ("sed -i.orig s/one/uno/ lines.txt", ["lines.txt", "lines.txt.orig"]),
    ]


@pytest.mark.skipif(
    os.getuid() == 0 and cgroups.parent("pids") is None,
    reason="root without a writable pids cgroup: nothing bounds a fork bomb here, so none is started",
)
async def test_a_fork_bomb_is_refused_and_the_run_goes_on_to_succeed(js, nats_url, tmp_path) -> None:
    marker = f"runner-bomb-{os.getpid()}-{time.monotonic_ns()}"
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    steps = [
        {"tool_calls": [{"name": "write_file", "args": {"path": "bomb.py", "content": bomb}}]},
        {"tool_calls": [{"name": "run_command", "args": {"cmd": f"python3 bomb.py {marker}"}}]},
        {"tool_calls": [{"name": "run_command", "args": {"cmd": "echo after"}}]},
        {"tool_calls": [{"name": "finish", "args": {"summary": "survived"}}]},
    ]
    cfg = config(
        json.dumps({"steps": steps}),
        permissions={"commands": {"allow": ["python3 bomb.py *", "echo *"], "default": "deny", "timeout_s": 60}},
    )
    r = await start_runner(tmp_path, nats_url, cfg)
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, cfg.run_id)
    end = final_status(events)
    assert end["status"] == "succeeded" and end["summary"] == "survived", end
    (refused,) = changes(events, "refused")
    assert refused["reason"] == "process-limit" and "more than 512 processes" in refused["detail"], refused
    assert [c["exitCode"] for c in changes(events, "command-run")][-1] == 0  # the next command ran
    deadline = time.monotonic() + 10
    while _with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _with_marker(marker) == []  # nothing the bomb started is left
