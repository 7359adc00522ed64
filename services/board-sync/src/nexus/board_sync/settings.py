"""board-sync settings: every field is read from NEXUS_<FIELD> in main(), nowhere else."""

from nexus.observability.service import CommonSettings


class BoardSyncSettings(CommonSettings, kw_only=True):
    mongodb_url: str = "mongodb://127.0.0.1:27017/"
    mongodb_db: str = "nexus"
    secrets_dir: str = (
        ".nexus/secrets"  # provider credentials are secret references resolved here or NEXUS_SECRET_<NAME>
    )
    api_url: str = "http://127.0.0.1:8080"  # core-api, where a card's run link points
    drift_interval_s: float = 60.0  # how often linked items are compared with the internal board (0: never)
    outage_backoff_s: float = 2.0  # between tries while a provider is out; the change waits in JetStream meanwhile
    max_deliver: int = 20
    ack_wait_s: float = 30.0  # a change a crashed board-sync held is redelivered after this
    try_s: float = 300.0  # one try of a change, provider retries included; one past it is held like an outage
    # Fault injection for tests: when this file exists, board-sync removes it and dies right after
    # a provider created an item and before the link is written.
    crash_after_create_file: str | None = None
