"""The worker's side of its warm runner zygote (`zygote.py`): start it, ask it to fork a run, hear
each forked runner's exit code, and restart it when it dies. While it is down (or starting) the
local runtime starts runs cold."""

import array
import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
from typing import Any, cast

from nexus.worker.metrics import ZYGOTE_UP
from nexus.worker.runtimes.files import write_file
from nexus.worker.runtimes.zygote import DEFAULT_ENTRY, claim_env

log = logging.getLogger("nexus.worker.zygote")
LOST = object()  # an exit the zygote can no longer report: it died while the runner lived


class ZygoteUnavailable(Exception):
    """The zygote is down, or died before it forked the run: the run was not started."""


class ZygoteUndecided(Exception):
    """The zygote stopped answering after the child took the run's environment: it runs, pid `pid`."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"forked runner {pid} started but the zygote did not answer")
        self.pid = pid


class Zygote:
    def __init__(
        self,
        env: dict[str, str],
        *,
        python: str = sys.executable,
        spawn_timeout_s: float = 30.0,
        entry: str = DEFAULT_ENTRY,
    ) -> None:
        self.env = env
        self.entry = entry
        self.cmd = [python, "-m", "nexus.worker.runtimes.zygote"]
        self.spawn_timeout_s = spawn_timeout_s
        self.proc: asyncio.subprocess.Process | None = None
        # the zygote's stdin: a Unix socket, so that a request can carry a descriptor
        self.requests: socket.socket | None = None
        self._sending = asyncio.Lock()  # one request at a time on it: a request is one line, never interleaved
        self.pid: int | None = None
        self.ready = False
        self.starts = 0
        self._seq = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._exits: dict[int, asyncio.Future[object]] = {}  # an exit code, or LOST
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        delay = 0.2
        while not self._closing:
            up = False
            try:
                up = await self._run_once()
            except Exception:  # a zygote that cannot start means cold starts, not a dead worker
                log.exception("runner zygote failed")
            self._down()
            if self._closing:
                return
            delay = 0.2 if up else min(delay * 2, 10.0)
            log.warning("runner zygote is down; starting runs cold, restarting it in %.1fs", delay)
            await asyncio.sleep(delay)

    async def _run_once(self) -> bool:
        """Run one zygote until it ends; True if it became ready."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.cmd,
                env=self.env,
                stdin=theirs.fileno(),
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 20,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        mine.setblocking(False)
        self.requests = mine
        try:
            return await self._serve_answers()
        finally:
            self.requests = None
            mine.close()

    async def _serve_answers(self) -> bool:
        assert self.proc is not None and self.proc.stdout is not None
        self.starts += 1
        ready = False
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            if "ready" in msg:
                self.pid, self.ready, ready = int(msg["ready"]), True, True
                ZYGOTE_UP.set(1)
                log.info("runner zygote %s ready", self.pid)
            elif "exit" in msg:
                fut = self._exit_future(int(msg["exit"]))
                if not fut.done():
                    fut.set_result(int(msg["code"]))
            elif (pending := self._pending.pop(int(msg["id"]), None)) is not None and not pending.done():
                pending.set_result(msg)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()
        return ready

    def _down(self) -> None:
        self.ready = False
        ZYGOTE_UP.set(0)
        self.pid = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ZygoteUnavailable("the runner zygote died"))
        self._pending.clear()
        for fut in self._exits.values():  # its children live on, adopted by init: watched by pid from now on
            if not fut.done():
                fut.set_result(LOST)
        self._exits.clear()

    def _exit_future(self, pid: int) -> asyncio.Future[object]:
        if pid not in self._exits:
            self._exits[pid] = asyncio.get_running_loop().create_future()
        return self._exits[pid]

    async def spawn(
        self,
        *,
        cwd: str,
        log_path: str,
        env: dict[str, str],
        limits: tuple[int, int, int],
        uid: int = 0,
        gid: int = 0,
        config: bytes = b"",
        relay: socket.socket | None = None,
    ) -> int:
        """Fork a runner; its pid. ZygoteUnavailable: nothing was started (start it cold);
        ZygoteUndecided: it was started, though the zygote did not say so. `config` (the run's, as JSON) is
        handed over in the environment's file; the child leaves it there and points NEXUS_RUN_CONFIG at it.
        `relay`, the run's end of the worker's relay, is handed to the child (the caller keeps its own copy)."""
        if not self.ready or self.proc is None or self.requests is None:
            raise ZygoteUnavailable("the runner zygote is not ready")
        env_file = os.path.join(cwd, "runner.env")
        # JSON escapes every newline it holds: the first one in the file ends the environment (zygote._take_launch)
        write_file(env_file, json.dumps(env).encode() + b"\n" + config, 0o600)
        self._seq += 1
        fut = asyncio.get_running_loop().create_future()
        self._pending[self._seq] = fut
        req: dict[str, Any] = {
            "id": self._seq,
            "cwd": cwd,
            "log": log_path,
            "env_file": env_file,
            "limits": list(limits),
            "uid": uid,
            "gid": gid,
            "entry": self.entry,
        }
        if relay is not None:
            req["relay"] = True
        try:
            await self._request(self.requests, json.dumps(req).encode() + b"\n", relay)
            answer = await asyncio.wait_for(fut, self.spawn_timeout_s)
        except (ZygoteUnavailable, TimeoutError, OSError) as exc:
            self._pending.pop(req["id"], None)
            if isinstance(exc, TimeoutError):
                self.kill()  # a zygote that stops answering is replaced
            raise self._undecided(env_file) from exc
        if "error" in answer:
            with contextlib.suppress(OSError):
                os.unlink(env_file)
            raise ZygoteUnavailable(answer["error"])
        pid = int(answer["pid"])
        self._exit_future(pid)  # an exit reported before anyone waits is kept
        return pid

    async def _request(self, sock: socket.socket, line: bytes, fd: socket.socket | None) -> None:
        """Send one request line, the descriptor (if any) riding with its first byte."""
        loop = asyncio.get_running_loop()
        async with self._sending:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd.fileno()]))] if fd else []
            while True:
                try:
                    sent = sock.sendmsg([line], ancillary)
                    break
                except BlockingIOError:
                    await _writable(loop, sock)
            if sent < len(line):
                await loop.sock_sendall(sock, line[sent:])

    def _undecided(self, env_file: str) -> Exception:
        """After a failed request: void the run's environment so a late child cannot start, unless a
        child already claimed it (then it runs, and its pid is in the claimed file's name)."""
        if claim_env(env_file, "void"):
            with contextlib.suppress(OSError):
                os.unlink(f"{env_file}.void")
            return ZygoteUnavailable("the runner zygote did not fork the run")
        folder, name = os.path.split(env_file)
        pids = [
            int(f.rsplit(".", 1)[1])
            for f in os.listdir(folder)
            if f.startswith(name + ".") and f.rsplit(".", 1)[1].isdigit()
        ]
        return ZygoteUndecided(pids[0]) if pids else ZygoteUnavailable("the run's environment vanished")

    async def wait(self, pid: int) -> int | None:
        """The exit code of a forked runner; None once the zygote that forked it is gone."""
        fut = self._exits.get(pid)
        if fut is None:
            return None
        code = await fut
        self._exits.pop(pid, None)
        return None if code is LOST else cast(int, code)  # what is not LOST is an exit code

    def exit_code(self, pid: int) -> int | None:
        fut = self._exits.get(pid)
        # what is not LOST is an exit code
        return cast(int, fut.result()) if fut is not None and fut.done() and fut.result() is not LOST else None

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def close(self) -> None:
        """Stop the zygote; runners it forked keep running (a restarted worker adopts them)."""
        self._closing = True
        if self.requests is not None:
            with contextlib.suppress(OSError):
                self.requests.shutdown(socket.SHUT_WR)  # the zygote reads its end: no more requests
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            except TimeoutError:
                self.kill()
                await self._task


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    writable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not writable.done():
            writable.set_result(None)

    loop.add_writer(sock, ready)
    try:
        await writable
    finally:
        loop.remove_writer(sock)
