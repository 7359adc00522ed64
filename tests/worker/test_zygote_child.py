"""A child forked by the runner zygote is the run's, not the zygote's or the worker's: its own
session and process group, the run's rlimits, cwd and environment (and only that), no inherited
descriptors; the run's environment file is claimed once and emptied."""

import asyncio
import json
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import pytest

from nexus.domain.settings import load_settings
from nexus.worker.main import build_runtime
from nexus.worker.runtimes.local import LocalProcessRuntime
from nexus.worker.runtimes.zygote import claim_env
from nexus.worker.runtimes.zygote_client import Zygote, ZygoteUnavailable
from nexus.worker.settings import WorkerSettings
from tests.worker.zygote_probe import OTLP_EXPORTER

REPO = Path(__file__).resolve().parents[2]


async def _started(**env: str) -> Zygote:
    z = Zygote(
        {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "ZYGOTE_ONLY": "1", **env},
        entry="tests.worker.zygote_probe:report",
    )
    await _ready(z)
    return z


async def _ready(z: Zygote) -> None:
    z.start()
    for _ in range(600):
        if z.ready:
            break
        await asyncio.sleep(0.05)
    assert z.ready, "the zygote never became ready"


@pytest.fixture
async def zygote():
    z = await _started()
    yield z
    await z.close()


async def _modules_seen(z: Zygote, tmp_path: Path) -> dict[str, str]:
    out = tmp_path / "seen.json"
    pid = await z.spawn(
        cwd=str(tmp_path), log_path=str(tmp_path / "runner.log"), env={"PROBE_OUT": str(out)}, limits=(1536, 77, 99)
    )
    assert await z.wait(pid) == 0, (tmp_path / "runner.log").read_text()
    modules: dict[str, str] = json.loads(out.read_text())["warm"]["modules"]
    return modules


async def test_a_forked_child_has_the_runs_env_limits_session_and_nothing_else(zygote: Zygote, tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "PROBE_OUT": str(out),
        "NEXUS_SECRET_TOKEN": "s3cr3t",
    }
    pid = await zygote.spawn(cwd=str(tmp_path), log_path=str(tmp_path / "runner.log"), env=env, limits=(1536, 77, 99))
    assert await zygote.wait(pid) == 0
    seen = json.loads(out.read_text())
    assert seen["pid"] == pid and seen["pgid"] == pid and seen["sid"] == pid  # a session and group of its own
    assert seen["env"] == env and seen["given"] == env  # the run's environment, not the zygote's (ZYGOTE_ONLY)
    assert seen["cwd"] == str(tmp_path)
    assert seen["limits"] == {"RLIMIT_AS": [1536 << 20, 1536 << 20], "RLIMIT_NOFILE": [77, 77], "RLIMIT_CPU": [99, 104]}
    assert max(seen["fds"]) <= 3 and seen["threads"] == 1  # stdio (+ the listing): none of the zygote's pipes
    assert not (tmp_path / "runner.env").exists()
    assert (
        tmp_path / f"runner.env.{pid}"
    ).read_bytes() == b""  # claimed, then emptied: the secret lives only in the run
    # Done once in the zygote, inherited: the sandbox probe, the tracing resource; and what the zygote
    # imported is frozen out of the collector's walks (no copy-on-write of it by a child's collections).
    assert seen["warm"]["sandbox_probed"] and seen["warm"]["tracing_resources"] == 1
    assert seen["warm"]["frozen_objects"] > 10_000
    assert seen["warm"]["rehearsals"] == 1  # one trivial run played in the zygote before it forked


async def test_a_relayed_child_holds_its_end_of_the_relay_and_nothing_it_executes_does(
    zygote: Zygote, tmp_path: Path
) -> None:
    out = tmp_path / "seen.json"
    mine, theirs = socket.socketpair()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PROBE_OUT": str(out)}
    pid = await zygote.spawn(
        cwd=str(tmp_path), log_path=str(tmp_path / "runner.log"), env=env, limits=(1536, 77, 99), relay=theirs
    )
    theirs.close()
    assert await zygote.wait(pid) == 0
    seen = json.loads(out.read_text())
    assert seen["relay"] == {"fd": 3, "inheritable": False}  # the zygote's dup, close-on-exec
    assert seen["env"] == {**env, "NEXUS_RELAY_FD": "3"}
    assert max(seen["fds"]) <= 4  # stdio, the relay (+ the listing)
    mine.settimeout(5)
    assert mine.recv(100) == b"hello from the run"
    assert mine.recv(100) == b""  # the child's exit closed the only other end: the zygote kept no copy
    mine.close()


async def test_the_runs_config_comes_in_its_environment_file_and_stays_there_alone(
    zygote: Zygote, tmp_path: Path
) -> None:
    """The worker hands the run's config over with the environment (one file made per launch, not two): the
    claimed file then holds the config and nothing of the environment, and the runner's NEXUS_RUN_CONFIG
    names it."""
    out = tmp_path / "seen.json"
    config = b'{"run_id":"run_probe","note":"line one\\nline two"}'  # a newline inside a JSON string
    env = {"PROBE_OUT": str(out), "NEXUS_SECRET_TOKEN": "s3cr3t", "NEXUS_RUN_CONFIG": str(tmp_path / "unused")}
    pid = await zygote.spawn(
        cwd=str(tmp_path), log_path=str(tmp_path / "runner.log"), env=env, limits=(1536, 77, 99), config=config
    )
    assert await zygote.wait(pid) == 0, (tmp_path / "runner.log").read_text()
    seen = json.loads(out.read_text())
    claimed = tmp_path / f"runner.env.{pid}"
    assert seen["env"]["NEXUS_RUN_CONFIG"] == str(claimed) and seen["config"] == config.decode()
    assert seen["env"]["NEXUS_SECRET_TOKEN"] == "s3cr3t"
    assert claimed.read_bytes() == config  # the secret lives only in the run
    assert claimed.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runner.env." + str(pid), "runner.log", "seen.json"]


async def test_exit_codes_and_signals_reach_the_worker(zygote: Zygote, tmp_path: Path) -> None:
    env = {"PROBE_OUT": str(tmp_path / "seen.json"), "PROBE_EXIT": "3"}
    assert (
        await zygote.wait(
            await zygote.spawn(cwd=str(tmp_path), log_path=str(tmp_path / "log"), env=env, limits=(1024, 64, 60))
        )
        == 3
    )
    bad = {
        "PROBE_OUT": str(tmp_path / "missing-dir" / "seen.json")
    }  # the entry raises: a traceback in the log, exit 126
    pid = await zygote.spawn(cwd=str(tmp_path), log_path=str(tmp_path / "bad.log"), env=bad, limits=(1024, 64, 60))
    assert await zygote.wait(pid) == 126
    assert "FileNotFoundError" in (tmp_path / "bad.log").read_text()


async def test_a_withdrawn_environment_is_never_run(zygote: Zygote, tmp_path: Path) -> None:
    """The worker voids the environment when the zygote fails mid-request; a late child then exits unstarted."""
    os.kill(zygote.pid or 0, signal.SIGSTOP)  # the zygote takes the request but cannot fork yet
    try:
        zygote.spawn_timeout_s = 0.5
        with pytest.raises(ZygoteUnavailable):  # timed out: voided, the zygote is replaced
            await zygote.spawn(
                cwd=str(tmp_path),
                log_path=str(tmp_path / "log"),
                env={"PROBE_OUT": str(tmp_path / "x")},
                limits=(1024, 64, 60),
            )
    finally:
        zygote.kill()
    assert not (tmp_path / "x").exists() and not (tmp_path / "runner.env").exists()
    assert claim_env(str(tmp_path / "runner.env"), "again") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another identity needs root")
async def test_a_child_that_drops_to_another_user_probes_the_sandbox_as_that_user_and_reads_its_config(
    zygote: Zygote, tmp_path: Path
) -> None:
    """The zygote's sandbox probe ran as the zygote's user; a child running as another one forgets it."""
    shared = Path(tempfile.mkdtemp(prefix="zygote-uid-"))  # reachable by that user (pytest's tmp_path is not)
    shared.chmod(0o777)
    out = shared / "seen.json"
    env = {"PATH": "/usr/bin:/bin", "PROBE_OUT": str(out)}
    pid = await zygote.spawn(
        cwd=str(shared),
        log_path=str(tmp_path / "runner.log"),
        env=env,
        limits=(1536, 77, 99),
        uid=65534,
        gid=65534,
        config=b'{"run_id":"run_probe"}',
    )
    assert await zygote.wait(pid) == 0, (tmp_path / "runner.log").read_text()
    try:
        seen = json.loads(out.read_text())
        assert seen["warm"]["sandbox_probed"] is False
        assert seen["config"] == '{"run_id":"run_probe"}'  # its config is readable as the run's user
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _thp_mode() -> str:
    try:  # e.g. "always [madvise] never": the bracketed one is in force
        return Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return "never"


@pytest.mark.skipif(
    _thp_mode() == "never" or tuple(map(int, os.uname().release.split(".")[:2])) < (6, 1),
    reason="huge pages for anonymous memory are off, or the kernel has no MADV_COLLAPSE (6.1+)",
)
async def test_the_zygote_forks_with_its_heap_in_huge_pages(zygote: Zygote, tmp_path: Path) -> None:
    """A fork copies one page-table entry per 4 KiB page the zygote maps, and each child's exit takes them
    all down again: the zygote's heap is in huge pages (an entry per 2 MiB) before it forks, and a child
    forked from it still becomes the run."""
    assert zygote.pid is not None
    rollup = Path(f"/proc/{zygote.pid}/smaps_rollup").read_text()
    huge_kb = int(rollup.split("AnonHugePages:")[1].split()[0])
    assert huge_kb >= 4096, rollup
    out = tmp_path / "seen.json"
    pid = await zygote.spawn(
        cwd=str(tmp_path), log_path=str(tmp_path / "runner.log"), env={"PROBE_OUT": str(out)}, limits=(1536, 77, 99)
    )
    assert await zygote.wait(pid) == 0, (tmp_path / "runner.log").read_text()
    assert json.loads(out.read_text())["pid"] == pid


def _minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


async def test_the_zygote_writes_few_of_its_own_pages_between_forks(tmp_path: Path) -> None:
    """Each fork shares all of the zygote's memory with the new child again, so every page the zygote writes
    before its next fork is copied: a page fault of its own (2-4 µs here), on every run. Forking runs that
    live on (as runs do), its loop writes ~120 pages a fork; it wrote ~190 (selectors, json's Python
    layers, an exception per wake-up, threading's lock). The bound sits between."""
    z = Zygote({"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}, entry="tests.worker.zygote_probe:hold")
    try:
        await _ready(z)
        assert z.pid is not None

        async def fork(i: int) -> int:
            (tmp_path / str(i)).mkdir()
            mine, theirs = socket.socketpair()  # a relay's end rides with each request, as the worker's do
            try:
                return await z.spawn(
                    cwd=str(tmp_path / str(i)),
                    log_path=str(tmp_path / str(i) / "log"),
                    env={"HOLD_S": "3"},
                    limits=(1024, 64, 60),
                    relay=theirs,
                )
            finally:
                mine.close()
                theirs.close()

        pids = [await fork(i) for i in range(5)]  # what a first request warms
        before, forks = _minor_faults(z.pid), 40
        pids += [await fork(i) for i in range(5, 5 + forks)]
        per_fork = (_minor_faults(z.pid) - before) / forks
        assert per_fork < 160, f"the zygote wrote {per_fork:.0f} of its own pages a fork"
        assert [await z.wait(pid) for pid in pids] == [0] * len(pids)
    finally:
        await z.close()


async def test_a_zygote_with_a_thread_alive_refuses_to_fork(tmp_path: Path) -> None:
    """A thread's locks would be copied into the child held: once one is alive in the zygote (here started
    by the import of a run's entry), no run is forked; each is refused, so the worker starts it cold."""
    z = Zygote({"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}, entry="tests.worker.zygote_threaded:start")
    try:
        await _ready(z)
        spawn = {"log_path": str(tmp_path / "runner.log"), "env": {}, "limits": (1024, 64, 60)}
        assert await z.wait(await z.spawn(cwd=str(tmp_path), **spawn)) == 0  # the thread starts with the import
        (tmp_path / "2").mkdir()
        with pytest.raises(ZygoteUnavailable, match="threads"):
            await z.spawn(cwd=str(tmp_path / "2"), **spawn)
    finally:
        await z.close()


async def test_the_zygote_holds_what_runs_use_and_not_what_they_never_do(zygote: Zygote, tmp_path: Path) -> None:
    """Every MiB the zygote holds is copied (its page table) by each fork and freed by each exit: httpx's
    command line (click, rich) and tenacity's tornado support are never imported, and the OTLP exporter only
    when runs export their spans."""
    modules = await _modules_seen(zygote, tmp_path)
    assert modules["httpx"] == "loaded"  # the model providers' client, warm
    assert modules["httpx._main"] == "blocked" and modules["click"] == "absent" and modules["tornado"] == "blocked"
    assert modules[OTLP_EXPORTER] == "absent"


async def test_a_zygote_whose_runs_export_spans_preloads_the_exporter(tmp_path: Path) -> None:
    z = await _started(NEXUS_OTLP_ENDPOINT="http://127.0.0.1:9")
    try:
        assert (await _modules_seen(z, tmp_path))[OTLP_EXPORTER] == "loaded"
    finally:
        await z.close()


def test_the_worker_tells_its_zygote_how_runs_trace(tmp_path: Path) -> None:
    environ = {
        "NEXUS_OTLP_ENDPOINT": "http://collector:4318",
        "NEXUS_WORKSPACES_DIR": str(tmp_path),
        "NEXUS_RUN_FILES_DIR": str(tmp_path / "run-files"),  # not in /dev/shm: nothing would remove it
    }
    runtime = build_runtime(load_settings(WorkerSettings, environ), {"PATH": "/usr/bin"})
    assert isinstance(runtime, LocalProcessRuntime) and runtime.zygote is not None
    assert runtime.zygote.env["NEXUS_OTLP_ENDPOINT"] == "http://collector:4318"
