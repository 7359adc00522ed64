"""A second worker beside the stack's own, for the cases where one worker is frozen and the other judges
it dead: both read the same launch commands and the same runs' files, as two workers of one machine do."""

import json
import signal
import socket
import subprocess
import sys

from nats.js.errors import KeyNotFoundError

from nexus.dev.stack import SERVICES, Stack
from nexus.events.bus import connect
from nexus.worker.launcher import LAUNCH_BUCKET, claim_key


class Peer:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self.proc is not None:
            return
        env = self.stack.service_env("worker")
        with socket.socket() as s:  # its own ops port (the stack's worker has the usual one)
            s.bind(("127.0.0.1", 0))
            env["NEXUS_METRICS_PORT"] = str(s.getsockname()[1])
        logs = self.stack.log_dir or self.stack.home / "logs"
        with open(logs / "worker-2.log", "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", SERVICES["worker"]],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


async def claimer_pid(stack: Stack, run_id: str, attempt: int = 1) -> int | None:
    """The pid of the worker holding the launch claim of the run's attempt (its id ends in its pid)."""
    nc = await connect(stack.nats_url or "", "faults-claimer", creds=stack.creds("tools"))
    try:
        kv = await nc.jetstream().key_value(LAUNCH_BUCKET)
        entry = await kv.get(claim_key(run_id, attempt))
        return int(str(json.loads(entry.value or b"{}")["worker"]).rsplit("-", 1)[1])
    except (KeyNotFoundError, KeyError, ValueError, IndexError):
        return None
    finally:
        await nc.close()
