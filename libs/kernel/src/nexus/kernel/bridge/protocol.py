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
    decoded: ChildLine = _decoder.decode(line)
    return decoded


_DELIVERY_HEAD = b'{"type":"message","payload":'


def encode_delivery(message: Message) -> bytes:
    """`{"type":"message","payload":<message>}` + newline, without building a MessageLine."""
    return b"".join((_DELIVERY_HEAD, _encoder.encode(message), b"}\n"))


KernelLine = MessageLine | ShutdownLine


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every line, both directions (proto/bridge/lines.schema.json)."""
    (to_child, to_kernel), defs = msgspec.json.schema_components([KernelLine, ChildLine], ref_template="#/$defs/{name}")
    defs["KernelToChild"] = to_child
    defs["ChildToKernel"] = to_kernel
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://nexus.dev/proto/bridge/lines.schema.json",
        "title": "Nexus bridge protocol line",
        "description": "One line of the kernel <-> child bridge protocol (newline-delimited JSON). "
        "Generated from nexus.kernel.bridge.protocol; see README.md beside it.",
        "anyOf": [{"$ref": "#/$defs/KernelToChild"}, {"$ref": "#/$defs/ChildToKernel"}],
        "$defs": dict(sorted(defs.items())),
    }
