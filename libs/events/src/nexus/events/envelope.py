"""Every message on the bus is an Envelope; its ULID `id` doubles as JetStream's Nats-Msg-Id."""

from datetime import UTC, datetime
from typing import Any

import msgspec

from nexus.domain.ids import new_ulid


class Envelope(msgspec.Struct, kw_only=True):
    id: str
    type: str
    occurred_at: str
    source: str
    data: Any
    correlation_id: str | None = None
    causation_id: str | None = None


class RawEnvelope(msgspec.Struct, kw_only=True):
    """The decoding side: `data` stays raw until the catalog says which payload type it is."""

    id: str
    type: str
    occurred_at: str
    source: str
    data: msgspec.Raw
    correlation_id: str | None = None
    causation_id: str | None = None


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_envelope(
    type_: str,
    data: Any,
    *,
    source: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    id_: str | None = None,
) -> Envelope:
    return Envelope(
        id=id_ or new_ulid(),
        type=type_,
        occurred_at=utcnow_iso(),
        source=source,
        data=data,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )


_encoder = msgspec.json.Encoder()
_raw_decoder = msgspec.json.Decoder(RawEnvelope)


def encode(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode_raw(body: bytes) -> RawEnvelope:
    return _raw_decoder.decode(body)
