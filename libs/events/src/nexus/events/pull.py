"""The per-message costs of nats-py's pull consumer, cut without changing what goes over the wire.

- `quick_next`: nats-py's `fetch` takes each message of a batch with `next_msg`, which makes two
  tasks, a uuid and a timer per message even when the message is already waiting in the
  subscription's queue (a fetch of 512 made over a thousand tasks). A message already waiting is now
  handed out at once; an empty queue still waits the way nats-py does. The fetch protocol (pull
  requests, status messages, timeouts) stays nats-py's own.
- `ack_all`: a handled group's acknowledgements leave as one write instead of one publish call each.
  Each message is still acknowledged on its own reply subject (no AckAll: several instances share
  a durable, and acking by sequence would acknowledge what another instance has not stored).

Both read attributes of nats-py's subscription and client (the version is locked in uv.lock); when
they are missing, the plain public calls are used."""

import logging
from collections.abc import Sequence
from typing import Any, cast

from nats.aio.msg import Msg

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
