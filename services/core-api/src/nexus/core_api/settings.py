"""core-api settings: every field is read from NEXUS_<FIELD> in main(), nowhere else."""

from nexus.observability.service import CommonSettings


class CoreSettings(CommonSettings, kw_only=True):
    mongodb_url: str = "mongodb://127.0.0.1:27017/"
    mongodb_db: str = "nexus"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    admin_key: str | None = None
    admin_key_file: str = ".nexus/admin.key"
    max_body_bytes: int = 1_048_576
    max_attempts: int = 3
    requeue_after_s: float = 30.0  # a queued run whose launch was never confirmed is commanded again
    # Tests only: pause between storing a run's end and carrying it out (its task, its announcements; SIGKILL tests).
    fault_pause_after_end_s: float = 0.0
    sse_keepalive_s: float = 15.0
    sse_streams_per_key: int = 256  # event streams one API key may hold open at once (per process)
    waits_per_key: int = 1024  # `?wait_s=` requests one API key may hold open at once (per process)
    approval_ttl_s: int = 3600
    # Events of one run this process stores; past it they are dropped and counted (runs/ingest.py). A runner
    # records at most 10,000 changes an attempt: this bounds what its stolen credential can add.
    run_events_max: int = 200_000
    # Approval requests stored for one run (each one reaches every approver: a Telegram message to each team
    # lead). A runner asks at most NEXUS_APPROVALS_MAX (50) an attempt; past this, more are dropped and counted.
    run_approvals_max: int = 500
    read_cache_ttl_s: float = 2.0  # 0 turns the by-id read cache off (see nexus.db.cache)
    secrets_dir: str = (
        ".nexus/secrets"  # secret references (e.g. board webhook secrets) resolve here or NEXUS_SECRET_<NAME>
    )
    ui_session_secret: str | None = None  # seals the web UI's session cookie; random per process when unset
    ui_session_ttl_s: float = 8 * 3600.0  # a web UI sign-in lasts this long
    nats_monitor_url: str = ""  # NATS monitoring endpoints (comma-separated), read into nexus_nats_*; empty: off
    nats_monitor_every_s: float = 30.0  # how often those, consumer lag and pending approvals are read
