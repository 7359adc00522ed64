"""The per-message costs of nats-py's pull consumer, cut without changing what goes over the wire.

- `quick_next`: nats-py's `fetch` takes each message of a batch with `next_msg`, which makes two
  tasks, a uuid and a timer per message even when the message is already waiting in the
  subscription's queue (a fetch of 512 made over a thousand tasks). A message already waiting is now
  handed out at once; an empty queue still waits the way nats-py does. The fetch protocol (pull
  requests, status messages, timeouts) stays nats-py's own.
- `ack_all`: a handled group's acknowledgements leave as one write instead of one publish call each.
  Each message is still acknowledged on its own reply subject (no AckAll: several instances share
  a durable, and acking by sequence would acknowledge what another instance has not stored).
- `fetch_bounded`: a fetch bounded by bytes as well as by count (nats-py's `fetch` cannot ask for
  `max_bytes`, and takes the server's "max bytes reached" answer for silence, waiting out its timeout).

Both read attributes of nats-py's subscription and client (the version is locked in uv.lock); when
they are missing, the plain public calls are used."""

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any, cast

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import APIError

log = logging.getLogger("nexus.events.pull")


def quick_next(sub: Any) -> bool:
    """Let `sub` (a JetStream pull subscription) hand out waiting messages without a task each.
    Returns whether it could."""
    inner = getattr(sub, "_sub", None)
    queue = getattr(inner, "_pending_queue", None)
    if inner is None or queue is None or not hasattr(inner, "_pending_size") or not hasattr(inner, "_conn"):
        return False
    if getattr(inner, "_cb", None):
        return False
    waiting = inner.next_msg

    async def next_msg(timeout: float | None = 1.0) -> Msg:
        if queue.empty() or inner._conn.is_closed:  # nats-py's own path: its wait, its closed-connection error
            return cast(Msg, await waiting(timeout))  # nats-py's next_msg, unannotated: it returns a Msg
        msg = cast(Msg, queue.get_nowait())  # what nats-py's next_msg does once its wait is over; its queue holds Msgs
        inner._pending_size -= len(msg.data)
        queue.task_done()
        return msg

    inner.next_msg = next_msg
    return True


def _ack_line(msg: Msg) -> bytes:
    reply = msg.reply
    if not reply or " " in reply or "\r" in reply or "\n" in reply:
        raise ValueError(f"no ack subject on {msg.subject}")
    return b"PUB " + reply.encode() + b" 0\r\n\r\n"


async def ack_all(msgs: Sequence[Msg]) -> None:
    """Acknowledge every message (each on its own subject) in one write to the connection. Raises like
    `Msg.ack` when the connection cannot take it; the server then redelivers what was not acked."""
    msgs = [m for m in msgs if not m._ackd]
    if not msgs:
        return
    nc = msgs[0]._client
    send = getattr(nc, "_send_command", None)
    internals = hasattr(nc, "_flush_queue") and hasattr(nc, "_flush_pending")
    one_conn = getattr(nc, "is_connected", False) and all(m._client is nc for m in msgs)
    if send is None or not internals or not one_conn:
        for m in msgs:
            await m.ack()
        return
    await send(b"".join(_ack_line(m) for m in msgs))
    for m in msgs:
        m._ackd = True
    nc.stats["out_msgs"] += len(msgs)
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


# What one fetch may bring into memory, whatever its count allows: 2,048 run events that each carry a
# large output would otherwise be gigabytes. Small events never reach it (2,048 of them are ~1 MiB).
FETCH_MAX_BYTES = 8 * 1024 * 1024
# A message is counted by the server with its subject and ack subject: room for those on top of max_payload,
# so that the largest message the server accepts always fits in one fetch (else it would be stuck).
_FRAMING_BYTES = 8 * 1024
# Statuses that end a pull request quietly: no messages (404), expired (408). A 409 (max bytes reached, or
# a limit, or the consumer deleted) ends it too: after messages it is their end, before any it is an error.
_NOTHING = ("404", "408")


def max_bytes_for(sub: Any, wanted: int = FETCH_MAX_BYTES) -> int:
    """`wanted`, raised to what the largest message the server accepts needs."""
    payload = getattr(getattr(sub, "_nc", None), "max_payload", 0) or 0
    return max(wanted, int(payload) + _FRAMING_BYTES)


def _take_waiting(inner: Any, batch: int) -> list[Msg]:
    """Stream messages an earlier request delivered after its fetch had ended (status messages dropped)."""
    queue = inner._pending_queue
    out: list[Msg] = []
    while len(out) < batch and not queue.empty():
        msg = queue.get_nowait()
        queue.task_done()
        inner._pending_size -= len(msg.data)
        if not JetStreamContext.is_status_msg(msg):
            out.append(msg)
    return out


async def fetch_bounded(sub: Any, batch: int, max_bytes: int = FETCH_MAX_BYTES, timeout: float = 5.0) -> list[Msg]:
    """At most `batch` messages and about `max_bytes` bytes (never less than one message of the server's
    max_payload) from a JetStream pull subscription: one pull request that lingers up to `timeout` and
    ends as soon as something was delivered. Raises nats' TimeoutError when nothing came, like `fetch`."""
    inner = getattr(sub, "_sub", None)
    if inner is None or not all(hasattr(sub, a) for a in ("_nc", "_nms", "_deliver")):
        return cast(list[Msg], await sub.fetch(batch, timeout=timeout))  # internals moved: nats-py's own fetch
    msgs = _take_waiting(inner, batch)
    if msgs:
        return msgs
    request = {
        "batch": batch,
        "max_bytes": max_bytes_for(sub, max_bytes),
        "expires": int(timeout * 1_000_000_000) - 100_000,
        "no_wait": True,  # with expires: wait for the first message, then end at the stream's end
    }
    await sub._nc.publish(sub._nms, json.dumps(request).encode(), sub._deliver)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(msgs) < batch:
        left = deadline - loop.time()
        if left <= 0:
            break
        try:
            msg = await inner.next_msg(timeout=left)
        except (TimeoutError, NatsTimeout):
            break
        status = JetStreamContext.is_status_msg(msg)
        if not status:
            msgs.append(msg)
        elif status.startswith("1"):  # a heartbeat
            continue
        elif status in _NOTHING or msgs:
            break
        else:
            raise APIError.from_msg(msg)
    if not msgs:
        raise NatsTimeout
    return msgs
