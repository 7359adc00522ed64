"""The bridge wire format: one JSON object per line, `{"type": ..., "payload": ...}`.

Specified in proto/bridge/README.md (with a JSON Schema beside it). Kernel to child:
`message` (deliver a Message), `shutdown` (finish and exit). Child to kernel: `register`
(first line: id and name), `response` (a reply Message), `message` (the child sends to
another agent), `log` and `error` (a handler failed on message_id).
"""

from __future__ import annotations

from typing import Any

import msgspec

from nexus.kernel.message import Message

PROTOCOL_VERSION = 1


class RegisterPayload(msgspec.Struct, kw_only=True):
    id: str
    name: str | None = None
    protocol: int = PROTOCOL_VERSION


class Register(msgspec.Struct, tag="register", tag_field="type"):
    payload: RegisterPayload


class MessageLine(msgspec.Struct, tag="message", tag_field="type"):
    payload: Message


class ResponseLine(msgspec.Struct, tag="response", tag_field="type"):
    payload: Message


class ShutdownLine(msgspec.Struct, tag="shutdown", tag_field="type"):
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


class LogPayload(msgspec.Struct, kw_only=True):
    message: str
    level: str = "info"


class LogLine(msgspec.Struct, tag="log", tag_field="type"):
    payload: LogPayload


class ErrorPayload(msgspec.Struct, kw_only=True):
    error: str
    message_id: str | None = None


class ErrorLine(msgspec.Struct, tag="error", tag_field="type"):
    payload: ErrorPayload


ChildLine = Register | MessageLine | ResponseLine | LogLine | ErrorLine

_decoder = msgspec.json.Decoder(ChildLine)
_encoder = msgspec.json.Encoder()
SHUTDOWN = _encoder.encode(ShutdownLine()) + b"\n"


def decode_child_line(line: bytes) -> ChildLine:
    return _decoder.decode(line)


def encode_delivery(message: Message) -> bytes:
    return _encoder.encode(MessageLine(message)) + b"\n"
