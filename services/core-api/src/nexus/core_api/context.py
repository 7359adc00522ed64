"""What route handlers and consumers share at run time: database, bus, settings."""

from dataclasses import dataclass
from functools import cached_property

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from nexus.core_api.runs.feed import RunFeed
from nexus.core_api.settings import CoreSettings
from nexus.events.bus import Publisher
from nexus.observability.secrets import SecretStore


@dataclass
class Context:
    settings: CoreSettings
    nc: NATS
    js: JetStreamContext
    publisher: Publisher
    secrets: SecretStore | None = None  # webhook secrets of external boards, by reference

    @cached_property
    def run_feed(self) -> RunFeed:
        """The process's one live feed of run events, which its runs' event streams follow (started by the first)."""
        return RunFeed(self.nc, self.js)
