"""telegram-gateway's metrics. Importing this module registers every family the gateway exports (the
dashboard check reads the live registry after importing each service's metrics module)."""

from nexus.events.consumer import CONSUMED, DEAD_LETTERS, LOOP_RESTARTS  # noqa: F401 — its subscribers'
from nexus.events.lag import PENDING  # noqa: F401 — its durable consumers' lag
from nexus.telegram_gateway.access import UPDATES  # noqa: F401 — chat updates by outcome
from nexus.telegram_gateway.outbox import OUTBOX  # noqa: F401 — sends by outcome
