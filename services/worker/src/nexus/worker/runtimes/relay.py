"""The worker's relay of a forked run's publishes onto its own NATS connection.

A runner forked from the zygote gets one end of a socket pair instead of opening a connection of its
own (its connect costs the child ~2.5–3 ms and nats-server a JWT checked three times). Each frame on it
is one JetStream publish the run asks for (nexus.events.relay); the worker publishes it as it came —
the same subject, the same envelope id as Nats-Msg-Id — and answers with JetStream's ack. The worker
knows whose socket it is: a subject the run's own credential would refuse (`run_streamed`, the patterns
that credential is built from), a frame past the bound, a header a run does not send or more publishes
outstanding than a run makes close the relay, the publish refused and said in the log. A closed relay
is the runner's cue to connect with its own credential and publish what was not acknowledged again."""

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError

from nexus.events import relay as frames
from nexus.events.permissions import RunIdentity, matches, run_streamed
from nexus.worker.metrics import RELAYED

log = logging.getLogger("nexus.worker.relay")
MAX_OUTSTANDING = 256  # a run awaits at most 64 events' acks (reporter.MAX_PENDING) plus a few of its own
PUBLISH_TIMEOUT_S = 5.0  # JetStream's usual wait; past it the runner publishes for itself


class RunRelay(asyncio.Protocol):
    """One forked run's end of the relay: frames in, JetStream publishes out, acks back."""

    def __init__(self, nc: NATS, run: RunIdentity, heard: Callable[[str, bytes], None] | None = None) -> None:
        self.nc = nc
        self.heard = heard
        self.run_id = run.run_id
        self.allowed, self.denied = run_streamed(run)
        # The largest publish the server takes, and what a frame adds around it.
        self.frames = frames.Frames(nc.max_payload + frames.REQUEST.size + frames.MAX_SUBJECT + frames.MAX_HEADERS)
        self.transport: asyncio.Transport | None = None
        self.outstanding: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a unix socket's transport

    def data_received(self, data: bytes) -> None:
        try:
            for body in self.frames.feed(data):
                self._take(*frames.parse_request(body))
        except frames.BadFrame as exc:
            self.refuse(str(exc))
        except Exception:  # whatever a runner sends, the worker goes on: the relay is closed, nothing more
            log.exception("run %s: relay failed on a frame", self.run_id)
            self.refuse("a frame the relay could not handle")

    def _take(self, seq: int, subject: str, headers: dict[str, str], payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if not any(matches(p, subject) for p in self.allowed) or any(matches(p, subject) for p in self.denied):
            raise frames.BadFrame(f"{subject} is not the run's to publish")
        if len(self.outstanding) >= MAX_OUTSTANDING:
            raise frames.BadFrame(f"more than {MAX_OUTSTANDING} publishes outstanding")
        task = asyncio.ensure_future(self._publish(seq, subject, headers, payload))
        self.outstanding.add(task)
        task.add_done_callback(self.outstanding.discard)

    async def _publish(self, seq: int, subject: str, headers: dict[str, str], payload: bytes) -> None:
        # What js.publish sends: a request whose answer is the stream's ack (or its error, passed on as is).
        try:
            msg = await self.nc.request(subject, payload, timeout=PUBLISH_TIMEOUT_S, headers=headers)
            answer = frames.reply(seq, frames.ACK, msg.data)
            RELAYED.labels("published").inc()
            if self.heard is not None:  # the worker's connection does not echo it back to its own sightings
                self.heard(subject, payload)
        except NoRespondersError:
            answer = frames.reply(seq, frames.NO_STREAM)
        except Exception as exc:  # noqa: BLE001 — timed out, reconnecting, closed: the runner publishes itself
            log.warning("run %s: relayed publish not answered (%r); the runner publishes it itself", self.run_id, exc)
            answer = frames.reply(seq, frames.UNAVAILABLE)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)

    def refuse(self, why: str) -> None:
        RELAYED.labels("refused").inc()
        log.warning("run %s: relay closed: %s", self.run_id, why)
        if self.transport is not None:
            self.transport.abort()

    # A runner that stops reading its acks stops being read: what the worker holds for it stays bounded.
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None  # publishes under way finish; their answers go nowhere


class Relays:
    """Hands a run forked from the zygote its end of a relay and serves the worker's end."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        # Told each relayed publish the stream took (subject, payload): the worker's sightings of its runs.
        self.heard: Callable[[str, bytes], None] | None = None

    def pair(self) -> tuple[socket.socket, socket.socket]:
        """(the worker's end, the run's end), neither inherited by a process the worker starts."""
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    async def serve(self, mine: socket.socket, run: RunIdentity) -> None:
        """Serve the worker's end; one that cannot be served is closed (the run then publishes itself)."""
        try:
            loop = asyncio.get_running_loop()
            await loop.create_unix_connection(lambda: RunRelay(self.nc, run, self.heard), sock=mine)
        except OSError as exc:
            log.warning("run %s: relay not served (%r); the runner publishes itself", run.run_id, exc)
            with contextlib.suppress(OSError):
                mine.close()
