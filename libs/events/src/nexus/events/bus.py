"""Connecting, declaring streams and publishing. Kept light: agent-runner imports this at start."""

import asyncio
import contextlib
import contextvars
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.kv import KeyValue
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError, NotFoundError, ServiceUnavailableError

from nexus.domain.ids import new_ulid
from nexus.events.catalog import STREAMS, StreamSpec, spec
from nexus.events.envelope import Envelope, encode, make_envelope

log = logging.getLogger("nexus.events.bus")


async def connect(url: str | list[str], name: str, *, creds: str = "", user: str | None = None, **options: Any) -> NATS:
    """Connect as `name`; with `creds` (a .creds file's path or its text) as that NATS user, whose
    reply subjects then live under its own inbox prefix (nexus.events.permissions). `url` may list
    several servers, comma-separated (the nodes of a cluster): the client starts with any that
    answers and, when its node goes, reconnects to another."""
    if creds:
        from nats.aio.client import RawCredentials

        from nexus.events.permissions import inbox_prefix

        options["user_credentials"] = RawCredentials(creds) if creds.lstrip().startswith("-----BEGIN") else creds
        options.setdefault("inbox_prefix", inbox_prefix(user or name))
    servers = [u.strip() for u in url.split(",") if u.strip()] if isinstance(url, str) else url
    own_cb = options.pop("reconnected_cb", None)
    made: list[NATS] = []

    async def reconnected() -> None:
        for event in list(_RECONNECT_WAITERS.get(made[0], ())) if made else ():
            event.set()
        if own_cb is not None:
            await own_cb()

    nc = NATS()
    try:
        await nc.connect(
            servers,
            name=name,
            reconnected_cb=reconnected,
            **{"max_reconnect_attempts": -1, "reconnect_time_wait": 0.5, "connect_timeout": 5, **options},
        )
    except BaseException:
        await nc.close()  # a first connect refused without reconnecting leaves its socket open in the client
        raise
    made.append(nc)
    return nc


# Who wants to hear that a connection made by `connect` came back: a pull request lingering on a server that
# restarted is gone with it, and its fetch would wait out its whole expiry for nothing.
_RECONNECT_WAITERS: "weakref.WeakKeyDictionary[NATS, set[asyncio.Event]]" = weakref.WeakKeyDictionary()


def on_reconnect(nc: Any, event: asyncio.Event) -> None:
    """Set `event` each time `nc` (made by `connect`) reconnects; `forget_reconnect` to stop."""
    if nc is not None:
        _RECONNECT_WAITERS.setdefault(nc, set()).add(event)


def forget_reconnect(nc: Any, event: asyncio.Event) -> None:
    if nc is not None:
        _RECONNECT_WAITERS.get(nc, set()).discard(event)


def _stream_config(s: StreamSpec, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        num_replicas=replicas,
        name=s.name,
        subjects=list(s.subjects),
        retention=RetentionPolicy.WORK_QUEUE if s.retention == "workqueue" else RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=float(s.max_age_s),
        duplicate_window=float(s.duplicate_window_s),
        description=s.description,
    )


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the streams, or bring their config up to date (replica count included: an existing
    stream is updated in place, never recreated, so nothing stored is lost); safe from every service."""
    for s in STREAMS:
        await _ensure_stream(js, _stream_config(s, replicas))


async def _ensure_stream(js: JetStreamContext, cfg: StreamConfig) -> None:
    if cfg.name is None:
        raise ValueError("a stream needs a name")
    try:
        await js.stream_info(cfg.name)
    except NotFoundError:
        try:
            await js.add_stream(cfg)
            return
        except BadRequestError:  # another service created it in between
            pass
    await js.update_stream(cfg)


async def ensure_key_value(
    js: JetStreamContext, bucket: str, *, ttl_s: float, history: int = 1, replicas: int = 1
) -> KeyValue:
    """A KV bucket with this config: created, or its backing stream updated in place (replicas too)."""
    try:
        return await js.create_key_value(KeyValueConfig(bucket=bucket, ttl=ttl_s, history=history, replicas=replicas))
    except BadRequestError:  # it exists with another config: update its stream, keep its keys
        info = await js.stream_info(f"KV_{bucket}")
        cfg = info.config
        cfg.num_replicas, cfg.max_age, cfg.max_msgs_per_subject = replicas, ttl_s, history
        await js.update_stream(cfg)
        return await js.key_value(bucket)


@dataclass
class Published:
    """What this process published to JetStream: messages, and the waits for their acks (one per publish
    awaited alone, one per batch an `Outbox` sent together). Plain counts: the runner imports this module,
    and a service exports them as metrics."""

    messages: int = 0
    waits: int = 0


PUBLISHED = Published()
# Set while an Outbox sends its batch: the publishes started then share one wait.
_TOGETHER: contextvars.ContextVar[bool] = contextvars.ContextVar("nexus_publish_together", default=False)


class Publisher:
    """Publishes catalog messages as envelopes; the envelope id is JetStream's dedupe id."""

    def __init__(self, js: JetStreamContext, source: str) -> None:
        self.js = js
        self.source = source

    def _enveloped(
        self, type_: str, data: msgspec.Struct, correlation_id: str | None, causation_id: str | None, msg_id: str | None
    ) -> tuple[Any, Envelope]:
        """The message's catalog entry and its envelope; a payload not of its type is refused."""
        m = spec(type_)
        if not isinstance(data, m.payload):
            raise TypeError(f"{type_} carries {m.payload.__name__}, not {type(data).__name__}")
        env = make_envelope(
            type_, data, source=self.source, correlation_id=correlation_id, causation_id=causation_id, id_=msg_id
        )
        return m, env

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
        m, env = self._enveloped(type_, data, correlation_id, causation_id, msg_id)
        from nexus.events.tracing import publishing

        subject = subject or m.subject_for(**subject_params)
        body = encode(env)
        headers = {"Nats-Msg-Id": env.id}
        PUBLISHED.messages += 1
        PUBLISHED.waits += 0 if _TOGETHER.get() else 1
        with publishing(subject, headers, msg_id=env.id, correlation_id=correlation_id, size=len(body)):
            await publish_retrying(self.js, subject, body, headers)
        return env

    async def publish_soon(self, type_: str, data: msgspec.Struct, **options: Any) -> bool:
        """As `publish`, for a message whose cause is stored already: if the bus is out of reach it is
        published in the background once the bus is back (`when_back`; the same envelope id, so a first
        attempt that did land is not stored twice), and False says so."""
        options.setdefault("msg_id", new_ulid())
        try:
            await self.publish(type_, data, **options)
            return True
        except BUS_UNAVAILABLE as exc:
            log.warning("the bus did not answer (%r); %s is published once it is back", exc, type_)
        when_back(lambda: self.publish(type_, data, **options), type_)
        return False


# Work handed to the background until the bus is back (`when_back`), held until done.
_LATER: set["asyncio.Task[None]"] = set()
LATER_RETRY_S = 2.0


def when_back(attempt: Callable[[], Awaitable[Any]], what: str) -> None:
    """Try `attempt` in the background until the bus lets it through: work whose cause is stored and
    whose caller was answered without it. Held in this process's memory only."""

    async def until_done() -> None:
        with answering(None):  # nobody waits for it any more: each try rides out the bus's absence
            while True:
                try:
                    await attempt()
                    return
                except BUS_UNAVAILABLE as exc:
                    log.warning("the bus still does not answer (%r); %s waits for it", exc, what)
                    await asyncio.sleep(LATER_RETRY_S)

    task = asyncio.create_task(until_done())
    _LATER.add(task)
    task.add_done_callback(_LATER.discard)


class Outbox(Publisher):
    """Stands in for a publisher while a step runs: what the step publishes is held, in order (a payload
    not of its type is refused at once, as the publisher would), and `release` publishes it through the
    publisher it stands in for, with the envelope ids `publish` returned."""

    def __init__(self, publisher: Publisher) -> None:
        super().__init__(publisher.js, publisher.source)
        self.publisher = publisher
        self.held: list[tuple[str, msgspec.Struct, dict[str, Any]]] = []

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
        m, env = self._enveloped(type_, data, correlation_id, causation_id, msg_id)
        options = {"correlation_id": correlation_id, "causation_id": causation_id, "msg_id": env.id, "subject": subject}
        self.held.append((type_, data, {**options, **subject_params}))
        return env

    async def release(self) -> None:
        """Everything held, published together: each publish is started in the order it was held and
        reaches the connection's buffer before its first wait, so they go out in that order, in one
        write, and their acks are awaited together — one round trip for all instead of one each. Each
        rides out an election on its own (`publish_retrying`), so only a publish retried through one may
        land after one held later; the first failure is raised once every publish has settled."""
        held, self.held = self.held, []
        if not held:
            return
        PUBLISHED.waits += 1
        together = _TOGETHER.set(True)  # the tasks below copy the context as it is now
        try:
            sent = [asyncio.ensure_future(self.publisher.publish(t, d, **o)) for t, d, o in held]
        finally:
            _TOGETHER.reset(together)
        outcomes = await asyncio.gather(*sent, return_exceptions=True)
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failed is not None:
            raise failed


# What a NATS call raises while the bus is briefly out of reach (a lost node, an election, a restart,
# a reconnect): the call may be tried again later; the caller's input was not at fault.
BUS_UNAVAILABLE: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    ServiceUnavailableError,
)


# While a cluster node is lost or a stream elects a new leader (seconds), JetStream answers "no
# responders" or times out. A publish is retried with backoff for this long: the message id makes
# a retry of a publish that did land a duplicate JetStream drops.
PUBLISH_RETRY_S = 30.0
# What a publish made while someone waits for an answer (an HTTP request) may wait instead: set by
# `answering`, None elsewhere (a consumer or a sweep rides out a restart of the bus).
_ANSWERING: contextvars.ContextVar[float | None] = contextvars.ContextVar("nexus_publish_answering", default=None)
ANSWERING_WAIT_S = 5.0


@contextlib.contextmanager
def answering(wait_s: float | None = ANSWERING_WAIT_S) -> Iterator[None]:
    """While someone waits for an answer: a publish waits for the bus at most `wait_s`, and not at all
    while the connection is down (a lost server is back in seconds or minutes, not in a request's time),
    raising what BUS_UNAVAILABLE lists so the caller answers at once. `None`: the full wait again (work
    handed on from a request to the background)."""
    token = _ANSWERING.set(wait_s)
    try:
        yield
    finally:
        _ANSWERING.reset(token)


# JetStream's answer to a retry whose first attempt is still being proposed to the stream's replicas
# (its answer was lost to a timeout): that one is not decided yet, so the retry waits and asks again.
DUPLICATE_IN_PROCESS = 10158


def _passing(exc: Exception) -> bool:
    if isinstance(exc, nats.errors.TimeoutError | NoStreamResponseError | ServiceUnavailableError):
        return True
    return isinstance(exc, APIError) and exc.err_code == DUPLICATE_IN_PROCESS


async def publish_retrying(
    js: JetStreamContext, subject: str, payload: bytes, headers: dict[str, str], budget_s: float | None = None
) -> None:
    """Publish and wait for the stream's ack, riding out an election. Past the budget (PUBLISH_RETRY_S, or
    `answering`'s) it raises nats.errors.TimeoutError: the message may or may not be stored, as with any
    unconfirmed publish."""
    answering_s = _ANSWERING.get()
    if answering_s is not None and not js._nc.is_connected:  # the client holds the publish until it reconnects
        raise nats.errors.ConnectionReconnectingError
    budget = budget_s if budget_s is not None else answering_s if answering_s is not None else PUBLISH_RETRY_S
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + budget, 0.1
    while True:
        try:
            wait = max(0.1, min(deadline - loop.time(), js._timeout))
            await js.publish(subject, payload, headers=headers, timeout=wait)
            return
        except (nats.errors.TimeoutError, NoStreamResponseError, APIError) as exc:
            if not _passing(exc):
                raise
            if loop.time() + delay > deadline:
                if isinstance(exc, nats.errors.TimeoutError):
                    raise
                raise nats.errors.TimeoutError from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
