"""The frames a forked runner and its worker exchange on the socket pair the worker hands the run
(the worker's relay of a run's publishes onto its own NATS connection: services/worker runtimes/relay.py,
agent-runner relay.py). Nothing here is a new subject or a new message: a frame carries one JetStream
publish exactly as the runner would have sent it (subject, headers with the envelope id as Nats-Msg-Id,
the envelope's bytes), and the answer carries JetStream's own ack.

    runner → worker   u32 length, u32 seq, u16 subject length, u16 headers length, subject, headers, payload
    worker → runner   u32 length, u32 seq, u8 outcome, JetStream's answer (for ACK)

Headers are `Name: value` lines. Lengths are big-endian and count what follows them."""

import re
import struct

REQUEST = struct.Struct(">IHH")
REPLY = struct.Struct(">IB")
LENGTH = struct.Struct(">I")
ACK, NO_STREAM, UNAVAILABLE = 0, 1, 2  # JetStream answered; no stream took the subject; the worker could not ask
# Headers a run's publish carries: its envelope id (JetStream's dedupe id) and its trace context.
HEADERS = ("Nats-Msg-Id", "traceparent", "tracestate", "baggage")
MAX_SUBJECT = 256
MAX_HEADERS = 1024


class BadFrame(ValueError):
    """A frame that is not a publish a run may ask for; the relay that sent it is closed."""


def request(seq: int, subject: str, payload: bytes, headers: dict[str, str]) -> bytes:
    subj = subject.encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
    body = REQUEST.pack(seq, len(subj), len(head)) + subj + head + payload
    return LENGTH.pack(len(body)) + body


def reply(seq: int, outcome: int, data: bytes = b"") -> bytes:
    return LENGTH.pack(REPLY.size + len(data)) + REPLY.pack(seq, outcome) + data


# A subject one may publish to: tokens of printable ASCII without a space, a dot, `*` or `>` (no wildcard, and
# nothing the protocol line would split on).
_TOKEN = r"[!-)+\-/-=?-~]+"
PUBLISHABLE = re.compile(rf"{_TOKEN}(?:\.{_TOKEN})*")


def parse_request(body: bytes) -> tuple[int, str, dict[str, str], bytes]:
    """(seq, subject, headers, payload) of a runner's frame; BadFrame for anything else: a subject that is
    not plain printable tokens (no wildcard), a header not in HEADERS or without a message id."""
    if len(body) < REQUEST.size:
        raise BadFrame("short frame")
    seq, n_subj, n_head = REQUEST.unpack_from(body)
    if n_subj > MAX_SUBJECT or n_head > MAX_HEADERS or REQUEST.size + n_subj + n_head > len(body):
        raise BadFrame("subject or headers too long")
    at = REQUEST.size
    try:
        subject = body[at : at + n_subj].decode("ascii")
        lines = body[at + n_subj : at + n_subj + n_head].decode("ascii").split("\r\n")
    except UnicodeDecodeError as exc:
        raise BadFrame("not ASCII") from exc
    if not PUBLISHABLE.fullmatch(subject):
        raise BadFrame("not a subject one may publish to")
    headers: dict[str, str] = {}
    for line in lines[:-1] if lines[-1] == "" else lines:
        name, sep, value = line.partition(": ")
        if not sep or name not in HEADERS or name in headers or not value or not value.isprintable():
            raise BadFrame("a header a run does not send")
        headers[name] = value
    if "Nats-Msg-Id" not in headers:
        raise BadFrame("no message id")
    return seq, subject, headers, body[at + n_subj + n_head :]


class Frames:
    """Splits a byte stream into frame bodies, none longer than `max_body` (BadFrame past it)."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while len(self.buf) >= LENGTH.size:
            (size,) = LENGTH.unpack_from(self.buf)
            if size > self.max_body:
                raise BadFrame(f"a frame of {size} bytes")
            if len(self.buf) < LENGTH.size + size:
                break
            out.append(bytes(self.buf[LENGTH.size : LENGTH.size + size]))
            del self.buf[: LENGTH.size + size]
        return out
