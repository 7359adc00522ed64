"""The local runtime: agent-runner as a child process in its own process group and workspace, with
CPU, memory and open-file limits, a scrubbed environment, and kill-on-cancel of the whole group.
A runner is forked from the worker's warm zygote when it is up (zygote.py), else started cold; a forked
runner's publishes ride the worker's own NATS connection when the worker relays them (relay.py).

Where a run's files live (run_files.py says why):
- control files, under the run files root (memory-backed when the machine has a tmpfs):
  `<run_id>/runner.json` (the runner's record) and `<run_id>/attempt-N/` (the runner's cwd and HOME:
  `runner.env`, claimed as `runner.env.<pid>` and then holding the run's config, or a cold runner's
  `run-config.json`; `runner.log`, the runner's stdout and stderr, bounded by the runner);
- what the agent and git write, on disk under `workspaces_dir`: `<run_id>.<N>/` (the runner's state
  directory: the session's state, the git directory, the hypervisor's rooms) and in it `workspace/`."""

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any
from pathlib import Path

import msgspec

from nexus.events.permissions import RunIdentity
from nexus.worker.metrics import RUNNER_STARTS
from nexus.worker.runtimes.files import write_file
from nexus.worker.runtimes.record import RECORD, RunnerRecord, read_record, write_record
from nexus.worker.runtimes.base import RunHandle, RunRequest, RuntimeError_, RuntimeStatus
from nexus.worker.runtimes.relay import Relays
from nexus.worker.runtimes.run_files import LINK, run_files_root
from nexus.worker.runtimes.zygote_client import Zygote, ZygoteUnavailable, ZygoteUndecided

log = logging.getLogger("nexus.worker.local")
KEEP_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "NEXUS_TOOLS_DIR")


def _limits(memory_mb: int, open_files: int, cpu_s: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024, memory_mb * 1024 * 1024))
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))

    return apply


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive; /proc tells.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def process_start(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (the 22nd field of /proc/<pid>/stat): with the pid it
    names one process for good. Pids are reused (32,768 of them by default, and every run spends several),
    so a pid written down earlier may name someone else's process now. None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_groups(root: int) -> set[int]:
    """The process groups of `root` and of all its descendants. The runner puts each command it runs
    in a session of its own, so killing the runner's group alone would leave them running."""
    children: dict[int, list[int]] = {}
    groups: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc (macOS): the runner's own group is all we can find
        return {root}
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(name)
        children.setdefault(int(fields[1]), []).append(pid)
        groups[pid] = int(fields[2])
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            found.add(groups.get(child, child))
    return found


def _made(path: Path) -> bool:
    """Make the directory `path` (and its parents when missing); whether it is new."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return False
    except FileNotFoundError:
        path.mkdir(parents=True, exist_ok=True)
    return True


GONE = ".gone."  # what prune moved aside to remove (one left by a worker killed while removing it goes next time)


def _older(path: Path, cutoff: float) -> bool:
    try:
        return os.stat(path).st_mtime < cutoff
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _aside(paths: list[Path]) -> list[Path]:
    """`paths` renamed out of the way (`.gone.<name>`), as they are now."""
    out = []
    for path in paths:
        aside = path if path.name.startswith(GONE) else path.with_name(GONE + path.name)
        with contextlib.suppress(OSError):
            path.rename(aside)
            out.append(aside)
    return out


def _remove(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _legacy_names(root: Path) -> list[str]:
    """The run directories an older worker made in `root` (`<run_id>/`, holding its runner's record); this
    worker's own entries there are `<run_id>.<N>` and dot-names."""
    try:
        return [e.name for e in os.scandir(root) if "." not in e.name and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _is_alive(record: RunnerRecord) -> bool:
    """The recorded runner is still that process: pids are reused (process_start)."""
    return process_start(record.pid) == record.started and pid_alive(record.pid)


def _killpgs(groups: set[int], sig: int) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


class LocalProcessRuntime:
    name = "local"

    def __init__(
        self,
        workspaces_dir: Path,
        *,
        parent_env: dict[str, str],
        memory_mb: int = 2048,
        open_files: int = 1024,
        cpu_seconds: int = 3600,
        runner_cmd: list[str] | None = None,
        kill_grace_s: float = 5.0,
        zygote: bool = False,
        zygote_env: Mapping[str, str] | None = None,
        run_uid: int = 0,
        run_gid: int = 0,
        run_files: str | None = None,
    ) -> None:
        """`run_files`: where the runs' control files go (run_files.py); "" picks a tmpfs when there is one,
        None keeps them on disk (`<workspaces_dir>/.run-files`)."""
        self.root = workspaces_dir  # the runs' state directories and workspaces, on disk
        self.root.mkdir(parents=True, exist_ok=True)
        self.parent_env = {k: v for k, v in parent_env.items() if k in KEEP_ENV}
        self.limits = (memory_mb, open_files, cpu_seconds)
        self.runner_cmd = runner_cmd or [sys.executable, "-m", "nexus.agent_runner.main"]
        self.kill_grace_s = kill_grace_s
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._forked: dict[str, int] = {}  # run id -> pid of a runner forked by the zygote
        # The runs whose runner may be alive: every run directory is read once (the first `list_runs`, which
        # finds runners an earlier worker left), then only these — the directories of ended runs stay on
        # disk, and reading each one's pid files every sweep made a worker at rest cost more with every run.
        self._maybe_live: set[str] | None = None
        self._starting: set[str] = set()
        # Only the stock runner can be forked warm; a custom command always starts cold.
        # `zygote_env`: what every run is given of how to log and trace (the zygote preloads what that needs).
        self.zygote = Zygote(self.parent_env | dict(zygote_env or {})) if zygote and runner_cmd is None else None
        # The run's identity, when the worker runs as root and one is configured.
        self.run_uid = run_uid if os.geteuid() == 0 else 0
        self.run_gid = (run_gid or run_uid) if self.run_uid else 0
        self.files = run_files_root(self.root, str(self.root / LINK) if run_files is None else run_files, self.run_gid)
        # Run directories a worker before the run files root kept beside the workspaces (`<root>/<run_id>/`):
        # read too while any is left, so their runners are still found, adopted and stopped.
        self._legacy = self.files != self.root and any(_legacy_names(self.root))
        self.relays: Relays | None = None  # set by `open` when the worker relays forked runs' publishes

    def open(self, relays: Relays | None = None) -> None:
        """Start the zygote (call from the running loop); until it is ready runs start cold. With `relays`,
        a forked run publishes through the worker's connection instead of opening its own."""
        self.relays = relays
        if self.zygote is not None:
            self.zygote.start()

    async def close(self) -> None:
        if self.zygote is not None:
            await self.zygote.close()

    def run_dir(self, run_id: str) -> Path:
        """The run's control files (its runner's record, each attempt's directory)."""
        return self.files / run_id

    def state_dir(self, run_id: str, attempt: int) -> Path:
        """The attempt's state directory on disk; its workspace is `workspace` in it."""
        return self.root / f"{run_id}.{attempt}"

    def _read(self, run_id: str) -> RunnerRecord | None:
        record = read_record(self.run_dir(run_id))
        if record is None and self._legacy:
            record = read_record(self.root / run_id)
        return record

    def _pid(self, run_id: str) -> int | None:
        """The pid of this run's runner, only while it is still that process. A runner that ended leaves
        its pid behind, and the kernel hands the number to a new process sooner or later — another run's
        runner, a git, a server: signalling it as this run's runner would kill the wrong work."""
        record = self._read(run_id)
        return record.pid if record is not None and _is_alive(record) else None

    def _record(self, d: Path, pid: int, attempt: int) -> None:
        # Read while the runner cannot have been reaped yet (it is our child, or the zygote's, which
        # reports its end through us); a runner already gone is recorded as such (start 0).
        write_record(d, RunnerRecord(pid, process_start(pid) or 0, attempt))

    async def start_run(self, request: RunRequest) -> RunHandle:
        self._starting.add(request.run_id)  # never pruned while it is being launched (`prune`)
        try:
            return await self._start_run(request)
        finally:
            self._starting.discard(request.run_id)

    async def _start_run(self, request: RunRequest) -> RunHandle:
        d = self.run_dir(request.run_id)
        attempt_dir = d / f"attempt-{request.attempt}"
        # A run this machine has seen before: its runner may still be there.
        if not _made(d) or self._legacy:
            existing = self._read(request.run_id)
            if existing is not None and _is_alive(existing):
                if existing.attempt == request.attempt:
                    if self._maybe_live is not None:
                        self._maybe_live.add(request.run_id)
                    return RunHandle(
                        run_id=request.run_id, attempt=request.attempt, runtime=self.name, ref=str(existing.pid)
                    )
                if existing.attempt > request.attempt:  # a stale launch: the run went on without it
                    raise RuntimeError_(
                        f"attempt {existing.attempt} of the run is running already; "
                        f"not starting attempt {request.attempt}",
                        transient=False,
                    )
                # An earlier attempt's runner: never two at once. Its attempt ended without a verdict (the
                # run went on to this one), so it is stopped without a word: told to cancel, it would report
                # `cancelled`, taken as its attempt's late verdict — and the earliest verdict decides the run.
                await self.cancel_run(request.run_id, silently=True)
        _made(attempt_dir)
        state_dir = self.state_dir(request.run_id, request.attempt)
        config = msgspec.json.encode(request.config)
        config_path = attempt_dir / "run-config.json"  # a cold runner's; a forked one's is named by its child
        env = {
            **self.parent_env,
            # The runner's own HOME is its attempt directory: a directory fewer to make per launch (commands
            # get a private HOME of their own from the hypervisor, never this one).
            "HOME": str(attempt_dir),
            "NEXUS_RUN_CONFIG": str(config_path),
            "NEXUS_WORKSPACE": str(state_dir / "workspace"),
            "NEXUS_STATE_DIR": str(state_dir),
            "NEXUS_ATTEMPT": str(request.attempt),
            **request.env,
        }
        if self.run_uid:  # the runner, as the run's user, writes in both (the workspace it makes in the state dir)
            os.chown(attempt_dir, self.run_uid, self.run_gid)
            _made(state_dir)
            os.chown(state_dir, self.run_uid, self.run_gid)
        pid = await self._fork(request, attempt_dir, env, config)
        RUNNER_STARTS.labels("cold" if pid is None else "forked").inc()
        if pid is None:
            write_file(config_path, config, 0o600)
            if self.run_uid:
                os.chown(config_path, self.run_uid, self.run_gid)
            pid = await self._start_cold(request.run_id, attempt_dir, env)
        self._record(d, pid, request.attempt)
        if self._maybe_live is not None:  # its pid is recorded: list_runs can tell whether it lives
            self._maybe_live.add(request.run_id)
        return RunHandle(run_id=request.run_id, attempt=request.attempt, runtime=self.name, ref=str(pid))

    async def _fork(self, request: RunRequest, attempt_dir: Path, env: dict[str, str], config: bytes) -> int | None:
        """The pid of a runner forked from the zygote; None when the run must start cold."""
        run_id = request.run_id
        if self.zygote is None or not self.zygote.ready:
            return None
        mine, theirs = self.relays.pair() if self.relays is not None else (None, None)
        try:
            pid = await self.zygote.spawn(
                cwd=str(attempt_dir),
                log_path=str(attempt_dir / "runner.log"),
                env=env,
                limits=self.limits,
                uid=self.run_uid,
                gid=self.run_gid,
                config=config,
                relay=theirs,
            )
        except ZygoteUnavailable as exc:
            log.warning("run %s: %s; starting it cold", run_id, exc)
            if mine is not None:
                mine.close()
            return None
        except ZygoteUndecided as exc:
            log.warning("run %s: %s; watching it by pid", run_id, exc)
            pid = exc.pid
        except BaseException:
            if mine is not None:
                mine.close()
            raise
        else:
            self._forked[run_id] = pid
        finally:
            if theirs is not None:
                theirs.close()  # the child holds its own
        if mine is not None and self.relays is not None:
            cfg = request.config
            # the run's identity, as its credential was minted for it (launcher.run_credentials)
            await self.relays.serve(mine, RunIdentity(run_id, request.attempt, cfg.session_id, cfg.parent_session_id))
        return pid

    async def _start_cold(self, run_id: str, attempt_dir: Path, env: dict[str, str]) -> int:
        identity: dict[str, Any] = (
            {"user": self.run_uid, "group": self.run_gid, "extra_groups": []} if self.run_uid else {}
        )
        log_file = open(attempt_dir / "runner.log", "ab")  # noqa: SIM115 — owned by the child
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.runner_cmd,
                cwd=str(attempt_dir),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_limits(*self.limits),
                **identity,
            )
        except OSError as exc:
            raise RuntimeError_(f"cannot start agent-runner: {exc}", transient=exc.errno in (11, 12, 23, 24)) from exc
        finally:
            log_file.close()
        self._procs[run_id] = proc
        return proc.pid

    async def wait(self, run_id: str) -> int | None:
        """The exit code of a process this worker started; None for one it only adopted."""
        proc = self._procs.get(run_id)
        if proc is not None:
            code = await proc.wait()
            self._procs.pop(run_id, None)
            return code
        forked = self._forked.pop(run_id, None)
        if forked is not None and self.zygote is not None:
            forked_code = await self.zygote.wait(forked)
            if forked_code is not None:
                return forked_code
        while self._pid(run_id):
            await asyncio.sleep(0.5)
        return None

    async def cancel_run(self, run_id: str, *, silently: bool = False) -> None:
        """The runner told to cancel (SIGTERM: it reports `cancelled`), killed after the grace; `silently`:
        killed at once, with no chance to say anything."""
        pid = self._pid(run_id)
        if not pid:
            return
        groups = process_groups(pid)  # found now: once the runner is gone its children are init's
        if silently:
            _killpgs(groups | {pid}, signal.SIGKILL)
            return
        _killpgs({pid}, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.kill_grace_s
        while self._pid(run_id) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        _killpgs(groups | process_groups(pid) if self._pid(run_id) else groups, signal.SIGKILL)

    async def get_logs(self, run_id: str) -> list[str]:
        d = self.run_dir(run_id)
        record = self._read(run_id)
        path = d / f"attempt-{record.attempt if record is not None and record.attempt else 1}" / "runner.log"
        if not path.exists():
            return []
        return path.read_text(errors="replace").splitlines()

    async def status(self, run_id: str) -> RuntimeStatus:
        proc = self._procs.get(run_id)
        if proc is not None and proc.returncode is not None:
            return RuntimeStatus(phase="succeeded" if proc.returncode == 0 else "failed", exit_code=proc.returncode)
        forked = self._forked.get(run_id)
        code = self.zygote.exit_code(forked) if forked is not None and self.zygote is not None else None
        if code is not None:
            return RuntimeStatus(phase="succeeded" if code == 0 else "failed", exit_code=code)
        if self._pid(run_id):
            return RuntimeStatus(phase="running")
        return RuntimeStatus(phase="missing")

    async def list_runs(self) -> list[str]:
        """The runs whose runner is alive on this machine: all run directories the first time, then the
        runs found alive then and those started since (a runner that ended is dropped for good)."""
        if self._maybe_live is None:
            names = [d.name for d in self.files.iterdir()] if self.files.exists() else []
            names += _legacy_names(self.root) if self._legacy else []
        else:
            names = sorted(self._maybe_live)
        out = [name for name in names if self._pid(name)]
        self._maybe_live = set(out)
        return out

    async def cleanup(self, run_id: str) -> None:
        await self.cancel_run(run_id)
        self._procs.pop(run_id, None)
        self._forked.pop(run_id, None)
        for d in (self.run_dir(run_id), self.root / run_id) if self._legacy else (self.run_dir(run_id),):
            for name in (RECORD, "runner.pid"):  # an older worker's record is `runner.pid` (record.py)
                with contextlib.suppress(OSError):
                    (d / name).unlink()

    async def prune(self, max_age_s: float, batch: int) -> int:
        """Remove the files of up to `batch` runs that ended more than `max_age_s` ago: their control files and
        their state directories (workspaces, git directories) on disk; how many entries went. A run whose
        runner lives, or that is being launched, is left alone. Without this, a worker's disk grows with
        every run it ever ran."""
        cutoff = time.time() - max_age_s
        # Chosen and moved aside with no await in between: a launch that comes later makes the run's directories
        # anew. The control files first, so the state directories of the same runs are found ownerless next.
        gone = _aside(self._ended(self.files, cutoff, batch, self._ended_run))
        gone += _aside(self._ended(self.root, cutoff, batch - len(gone), self._ended_on_disk))
        await asyncio.to_thread(_remove, gone)  # off the event loop: a workspace can be large
        return len(gone)

    def _ended(self, root: Path, cutoff: float, batch: int, ended: Callable[[str, float], bool]) -> list[Path]:
        out: list[Path] = []
        try:
            entries = os.scandir(root)
        except OSError:
            return out
        with entries:
            for entry in entries:
                if len(out) >= batch:
                    break
                name = entry.name
                if name.startswith(GONE) or (not name.startswith(".") and ended(name, cutoff)):
                    out.append(Path(entry.path))
        return out

    def _ended_run(self, run_id: str, cutoff: float) -> bool:
        """The run's control files were last touched before `cutoff` (its last launch, its log's last line)
        and its runner is not alive."""
        d = self.run_dir(run_id)
        if run_id in self._starting or run_id in (self._maybe_live or ()) or not _older(d, cutoff):
            return False
        record = self._read(run_id)
        if record is not None and _is_alive(record):
            return False
        attempt = record.attempt if record is not None and record.attempt else 1
        return _older(d / f"attempt-{attempt}" / "runner.log", cutoff)

    def _ended_on_disk(self, name: str, cutoff: float) -> bool:
        """A state directory whose run has no control files left (gone with a reboot's tmpfs, or pruned),
        or the run directory of a worker before the run files root, whose runner has ended."""
        run_id, dot, _ = name.rpartition(".")
        if not dot:  # an older worker's `<run_id>/`
            return self._legacy and _older(self.root / name, cutoff) and self._pid(name) is None
        return not self.run_dir(run_id).exists() and run_id not in self._starting and _older(self.root / name, cutoff)
