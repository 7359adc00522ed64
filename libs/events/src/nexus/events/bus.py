"""Connecting, declaring streams and publishing. Kept light: agent-runner imports this at start."""

from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from nexus.events.catalog import STREAMS, StreamSpec, spec
from nexus.events.envelope import Envelope, encode, make_envelope


async def connect(url: str, name: str, *, creds: str = "", user: str | None = None, **options: Any) -> NATS:
    """Connect as `name`; with `creds` (a .creds file's path or its text) as that NATS user, whose
    reply subjects then live under its own inbox prefix (nexus.events.permissions)."""
    if creds:
        from nats.aio.client import RawCredentials

        from nexus.events.permissions import inbox_prefix

        options["user_credentials"] = RawCredentials(creds) if creds.lstrip().startswith("-----BEGIN") else creds
        options.setdefault("inbox_prefix", inbox_prefix(user or name))
    return await nats.connect(url, name=name, **{"max_reconnect_attempts": -1, "reconnect_time_wait": 0.5, "connect_timeout": 5, **options})


def _stream_config(s: StreamSpec) -> StreamConfig:
    return StreamConfig(
        name=s.name,
        subjects=list(s.subjects),
        retention=RetentionPolicy.WORK_QUEUE if s.retention == "workqueue" else RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=float(s.max_age_s),
        duplicate_window=float(s.duplicate_window_s),
        description=s.description,
    )


async def ensure_streams(js: JetStreamContext) -> None:
    """Create the streams, or bring their config up to date; safe to call from every service."""
    for s in STREAMS:
        cfg = _stream_config(s)
        try:
            await js.stream_info(s.name)
        except NotFoundError:
            try:
                await js.add_stream(cfg)
                continue
            except BadRequestError:  # another service created it in between
                pass
        await js.update_stream(cfg)


def trace_headers() -> dict[str, str]:
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class Publisher:
    """Publishes catalog messages as envelopes; the envelope id is JetStream's dedupe id."""

    def __init__(self, js: JetStreamContext, source: str) -> None:
        self.js = js
        self.source = source

    async def publish(
        self,
        type_: str,
        data: msgspec.Struct,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        msg_id: str | None = None,
        subject: str | None = None,
        **subject_params: str,
    ) -> Envelope:
        m = spec(type_)
        if not isinstance(data, m.payload):
            raise TypeError(f"{type_} carries {m.payload.__name__}, not {type(data).__name__}")
        env = make_envelope(
            type_, data, source=self.source, correlation_id=correlation_id, causation_id=causation_id, id_=msg_id
        )
        headers = {"Nats-Msg-Id": env.id, **trace_headers()}
        await self.js.publish(subject or m.subject_for(**subject_params), encode(env), headers=headers)
        return env
