"""worker settings: read from NEXUS_<FIELD> in main(), nowhere else."""

from typing import Literal

from nexus.observability.service import CommonSettings


class WorkerSettings(CommonSettings, kw_only=True):
    mongodb_url: str = "mongodb://127.0.0.1:27017/"
    mongodb_db: str = "nexus"
    worker_id: str = ""
    runtime: Literal["local", "kubernetes"] = "local"
    workspaces_dir: str = ".nexus/runs"
    secrets_dir: str = ".nexus/secrets"
    max_concurrent_runs: int = 100
    max_runs_per_agent: int = 20
    heartbeat_timeout_s: float = 30.0
    sweep_interval_s: float = 5.0
    launch_retries: int = 4
    # Local runtime limits for each runner process.
    run_memory_mb: int = 2048
    run_open_files: int = 1024
    run_cpu_seconds: int = 3600
    runner_heartbeat_s: float = 5.0
    # Kubernetes runtime.
    agent_namespace: str = "nexus-agents"
    runner_image: str = "nexus/agent-runner:dev"
