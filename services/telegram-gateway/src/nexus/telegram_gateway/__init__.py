"""nexus-telegram-gateway."""

import os

# python-telegram-bot hands time periods (a 429's retry_after) as timedelta once this is set, as its next
# major version will always; without it every flood-control error warns that ints are deprecated.
os.environ.setdefault("PTB_TIMEDELTA", "true")
