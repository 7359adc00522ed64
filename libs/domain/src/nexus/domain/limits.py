"""Field and size limits shared by every way in: the HTTP API and commands over the bus check the
same ones, so a value refused over HTTP is refused over NATS too."""

from typing import Annotated

import msgspec

# The largest message or request body accepted (core-api's default max_body_bytes; NATS's max_payload).
MAX_BODY_BYTES = 1_048_576
Text = Annotated[str, msgspec.Meta(max_length=200_000)]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
# An id or a name someone refers to (agent, approval, session, run).
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
Who = Annotated[str, msgspec.Meta(max_length=200)]
