"""agent-runner settings: what the runtime hands the runner, from NEXUS_<FIELD> (read in main())."""

import msgspec


class RunnerSettings(msgspec.Struct, kw_only=True):
    nats_url: str = "nats://127.0.0.1:4222"
    nats_creds: str = ""  # this run attempt's own NATS credential (text), minted by the worker
    # A forked run's end of the worker's relay (its publishes ride the worker's connection; relay.py); -1: none.
    relay_fd: int = -1
    run_config: str = "/etc/nexus/run-config.json"
    workspace: str = "/workspace"
    state_dir: str = ""
    attempt: int = 1
    heartbeat_s: float = 5.0
    # How long a paused run waits for a human before the action is denied, when the run config does not say
    # (core-api puts its `approval_ttl_s` there, so the two clocks agree).
    approval_timeout_s: float = 3600.0
    log_level: str = "info"
    log_format: str = "json"  # the worker passes its own ("text" under `make run`)
    # Characters the runner's stdout and stderr may take together (runner_log.py); what comes after is dropped.
    log_limit: int = 1 << 20
    otlp_endpoint: str | None = None  # spans go over OTLP/HTTP here when set (the worker passes its own)
    # How agent commands are confined: "auto" (bubblewrap if the kernel allows it, else Landlock, else
    # rlimits only), or one of "bwrap", "landlock", "none" to insist (tests use it to check the fallbacks).
    sandbox: str = "auto"
    # The bytes a run may add to its workspace and its commands' HOME (hypervisor/disk.py).
    disk_budget_bytes: int = 4 << 30
    # The changes one attempt's agent may record in its ledger (hypervisor.core.LEDGER_CAP); past it the run
    # fails with `ledger limit of N changes reached`.
    ledger_max_changes: int = 10_000
    # The approvals one attempt's agent may ask for (hypervisor.core.APPROVALS_CAP): each reaches every approver
    # and the database. Past it the request is refused and the run fails with `approval limit of N requests reached`.
    approvals_max: int = 50
    # The bound of each of the runner's own git calls (workspace.GIT_TIMEOUT_S): one past it fails the run.
    git_timeout_s: float = 600.0
    # Tests only: linger this long after the verdict is stored, before exiting (SIGKILL tests).
    fault_pause_after_verdict_s: float = 0.0


def secrets_from_env(environ: dict[str, str], names: list[str]) -> dict[str, str]:
    """NAME → value for the run's declared secrets, from NEXUS_SECRET_<NAME> set by the worker."""
    import re

    out = {}
    for name in names:
        value = environ.get("NEXUS_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper())
        if value is not None:
            out[name] = value
    return out
