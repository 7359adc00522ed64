"""The unit of communication between agents: one msgspec Struct, the same on every wire."""

from __future__ import annotations

import enum
import itertools
import os
import time
from typing import Any

import msgspec

# Ids must be unique, not sortable: a random per-process prefix plus a counter costs ~100 ns,
# a ULID or uuid4 costs 10x that on the hot path of every send.
_PREFIX = os.urandom(6).hex()
_counter = itertools.count(1)


def new_message_id() -> str:
    return f"{_PREFIX}{next(_counter):010x}"


class MessageKind(enum.StrEnum):
    COMMAND = "Command"
    EVENT = "Event"
    QUERY = "Query"
    RESPONSE = "Response"


# gc=False: messages are created by the hundred thousand and never form cycles on their own;
# keeping them out of the cycle collector removes most GC pauses from the send path.
class Message(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    """A message from one agent to another.

    `from_` is spelled `from` on the wire. `timestamp` is Unix time in seconds (float).
    Returning a Message from a handler makes the kernel route it to `message.to`.
    """

    from_: str = msgspec.field(name="from")
    to: str
    kind: MessageKind
    payload: Any = None
    id: str = msgspec.field(default_factory=new_message_id)
    timestamp: float = msgspec.field(default_factory=time.time)
    conversation_id: str | None = None
    reply_to: str | None = None
    trace_id: str | None = None

    def reply(self, from_: str, payload: Any = None) -> Message:
        """A Response to this message: back to its sender, same conversation and trace."""
        return Message(
            from_=from_,
            to=self.from_,
            kind=MessageKind.RESPONSE,
            payload=payload,
            conversation_id=self.conversation_id or self.id,
            reply_to=self.id,
            trace_id=self.trace_id,
        )


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Message)


def encode_message(message: Message) -> bytes:
    return _encoder.encode(message)


def decode_message(data: bytes | str) -> Message:
    return _decoder.decode(data)
