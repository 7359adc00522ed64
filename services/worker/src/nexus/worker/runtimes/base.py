"""The AgentRuntime seam: start_run, cancel_run, get_logs — plus what recovery needs (status, list)."""

from typing import Literal, Protocol

import msgspec

from nexus.events.payloads import RunConfig

Phase = Literal["pending", "running", "succeeded", "failed", "missing"]


class RunRequest(msgspec.Struct, kw_only=True):
    run_id: str
    attempt: int
    config: RunConfig
    # Environment for the runner: NATS url, per-run token, NEXUS_SECRET_<NAME> values. Never logged.
    env: dict[str, str] = msgspec.field(default_factory=dict)
    wall_clock_s: int = 1800


class RunHandle(msgspec.Struct, kw_only=True):
    run_id: str
    attempt: int
    runtime: str
    ref: str  # a pid for local processes, a Job name for Kubernetes


class RuntimeStatus(msgspec.Struct, kw_only=True):
    phase: Phase
    exit_code: int | None = None
    detail: str = ""


class RuntimeError_(Exception):
    """A runtime failure. `transient` ones are retried with backoff; others fail the attempt."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class AgentRuntime(Protocol):
    name: str

    async def start_run(self, request: RunRequest) -> RunHandle: ...

    async def cancel_run(self, run_id: str) -> None: ...

    async def get_logs(self, run_id: str) -> list[str]: ...

    async def status(self, run_id: str) -> RuntimeStatus: ...

    async def list_runs(self) -> list[str]:
        """Run ids that have a live (or not yet cleaned up) runtime object: for orphan sweeps."""
        ...

    async def cleanup(self, run_id: str) -> None:
        """Remove what a finished run left behind (process records, Jobs, Secrets)."""
        ...
