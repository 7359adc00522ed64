"""worker settings: read from NEXUS_<FIELD> in main(), nowhere else."""

from typing import Literal

from nexus.observability.service import CommonSettings


class WorkerSettings(CommonSettings, kw_only=True):
    mongodb_url: str = "mongodb://127.0.0.1:27017/"
    mongodb_db: str = "nexus"
    worker_id: str = ""
    runtime: Literal["local", "kubernetes"] = "local"
    # On disk: each run attempt's state directory and workspace (what the agent and git write).
    workspaces_dir: str = ".nexus/runs"
    # The runs' control files (the runner's record, environment, config and log): "" puts them in a directory
    # of this user's in /dev/shm when that is a tmpfs, else in `<workspaces_dir>/.run-files` (runtimes/run_files.py).
    run_files_dir: str = ""
    # The files of a run that ended (control files, state directory and workspace) are removed this long after
    # its last sign on this machine, at most run_retention_batch per sweep (local runtime); 0 keeps them for good.
    run_retention_s: float = 3 * 86400
    run_retention_batch: int = 256
    secrets_dir: str = ".nexus/secrets"
    max_concurrent_runs: int = 100
    max_runs_per_agent: int = 20
    # Launch commands held waiting for a slot (ordered by priority); beyond this the worker stops fetching.
    launch_backlog: int = 256
    # A launch or cancel held by a worker that died is redelivered after this; held ones say in_progress.
    launch_ack_wait_s: float = 10.0
    cancel_ack_wait_s: float = 5.0
    # Liveness in the nexus_workers KV: a beat every worker_beat_s; silent for worker_dead_after_s is dead
    # (its claimed launches are taken over, its runners adopted).
    worker_beat_s: float = 1.0
    worker_dead_after_s: float = 5.0
    heartbeat_timeout_s: float = 30.0
    sweep_interval_s: float = 5.0
    deadline_grace_s: float = 10.0
    launch_retries: int = 4
    # A launch on its first delivery, for a run no cancel was heard of, is launched without reading the run
    # (freshness.py); the margin covers core-api's store-to-command gap and clock skew. Off: every launch reads it.
    launch_fresh_without_read: bool = True
    launch_fresh_margin_s: float = 10.0
    # Local runtime limits for each runner process.
    run_memory_mb: int = 2048
    run_open_files: int = 1024
    run_cpu_seconds: int = 3600
    runner_heartbeat_s: float = 5.0
    # Fork runners from a warm zygote (imports done once per worker); off: every runner starts as a new process.
    zygote: bool = True
    # A forked runner's publishes ride the worker's NATS connection (runtimes/relay.py); off: it opens its own.
    relay: bool = True
    # The uid/gid runners run as when the worker runs as root (0: the worker's own).
    run_uid: int = 0
    run_gid: int = 0
    # Schedules: how often the clock is checked, and how late an occurrence may fire and still count as on time.
    schedule_tick_s: float = 1.0
    # A tick reads the schedules only when one is due, holds occurrences back, or this long after its last
    # read (a schedule created or changed is noticed within it; one due is always read fresh). 0: every tick.
    schedule_reread_s: float = 5.0
    schedule_grace_s: float = 60.0
    # What every run may do, handed to each runner whatever launches it (the local process, a zygote's fork,
    # a Kubernetes Job): the runner's settings of the same names (agent-runner's settings.py says what each
    # bounds). Unset: the runner's own default.
    sandbox: Literal["auto", "bwrap", "landlock", "none"] | None = None
    disk_budget_bytes: int | None = None
    ledger_max_changes: int | None = None
    approvals_max: int | None = None
    git_timeout_s: float | None = None
    log_limit: int | None = None
    # Tests only: widen the window between claiming a launch and starting the runtime (SIGKILL tests).
    fault_pause_after_claim_s: float = 0.0
    # Tests only: each runner lingers this long after its verdict, before it exits (SIGKILL tests).
    fault_runner_pause_after_verdict_s: float = 0.0
    # The key that signs each run attempt's own NATS credential (nexus.events.credentials); empty: runs get none.
    nats_run_signer_file: str = ""
    # Kubernetes runtime.
    agent_namespace: str = "nexus-agents"
    runner_image: str = "nexus/agent-runner:dev"
