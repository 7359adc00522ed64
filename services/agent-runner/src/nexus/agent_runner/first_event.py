"""The run's first event, published before anything heavy is imported.

The time from process start to the first event is the runner's cold start. nats-py plus the
event library cost ~150-250 ms of imports on this class of machine, so the first `run.status
running` goes out over a plain socket speaking the NATS protocol (CONNECT, HPUB with a
Nats-Msg-Id, wait for JetStream's ack) using only the standard library — and, when the run has its
own NATS credential, an Ed25519 signature of the server's nonce (`cryptography`, ~60 ms to import
against ~150 ms for nkeys/pynacl). Anything unusual (TLS, no ack) returns False and the regular
client publishes it instead."""

import base64
import io
import json
import os
import re
import socket
import time
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TIMEOUT_S = 2.0
# W3C trace context handed down by the worker's launch (carried as is; anything else is left out).
TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def new_ulid() -> str:
    n = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in reversed(range(26)))


def running_envelope(run_id: str, attempt: int) -> tuple[str, bytes]:
    """The same JSON the Publisher would send for RunStatusChanged(status="running")."""
    env_id = new_ulid()
    body = {
        "id": env_id,
        "type": "run.status",
        "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "source": "agent-runner",
        "data": {
            "status": "running",
            "attempt": attempt,
            "reason": "",
            "summary": "",
            "branch": "",
            "commit_sha": "",
            "ledger_hash": "",
            "usage": None,
        },
        "correlation_id": run_id,
        "causation_id": None,
    }
    return env_id, json.dumps(body, separators=(",", ":")).encode()


def parse_creds(text: str) -> tuple[str, str]:
    """(user JWT, user nkey seed) from a .creds text."""
    blocks = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("-", "*", "NKEY"))]
    jwt = next(b for b in blocks if b.startswith("ey"))
    seed = next(b for b in blocks if b.startswith("SU"))
    return jwt, seed


def sign_nonce(seed: str, nonce: str) -> str:
    """The nkey signature NATS expects: Ed25519 over the nonce, base64url without padding."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = base64.b32decode(seed + "=" * (-len(seed) % 8))[2:34]  # prefix (2 bytes), 32-byte seed, crc16
    return (
        base64.urlsafe_b64encode(Ed25519PrivateKey.from_private_bytes(raw).sign(nonce.encode())).rstrip(b"=").decode()
    )


def publish_js(
    url: str,
    subject: str,
    msg_id: str,
    payload: bytes,
    *,
    name: str,
    timeout_s: float = TIMEOUT_S,
    creds: str = "",
    inbox_prefix: str = "_INBOX",
    traceparent: str = "",
) -> bool:
    """Publish one message to JetStream and wait for its ack. False on anything unexpected."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    if parts.scheme not in ("nats", ""):
        return False
    connect: dict[str, object] = {
        "verbose": False,
        "pedantic": False,
        "headers": True,
        "no_responders": True,
        "lang": "python-min",
        "version": "0",
        "protocol": 1,
        "name": name,
    }
    if parts.username and parts.password is not None:
        connect.update(user=unquote(parts.username), **{"pass": unquote(parts.password)})
    elif parts.username:
        connect["auth_token"] = unquote(parts.username)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), timeout=timeout_s) as sock:
            reader = sock.makefile("rb")
            info = reader.readline()
            if not info.startswith(b"INFO ") or (server := json.loads(info[5:])).get("tls_required"):
                return False
            if creds:
                jwt, seed = parse_creds(creds)
                connect.update(jwt=jwt, sig=sign_nonce(seed, server.get("nonce", "")))
            inbox = f"{inbox_prefix}.{new_ulid()}"
            trace = f"traceparent: {traceparent}\r\n" if TRACEPARENT.fullmatch(traceparent) else ""
            headers = f"NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n{trace}\r\n".encode()
            sock.sendall(
                b"CONNECT "
                + json.dumps(connect).encode()
                + b"\r\n"
                + f"SUB {inbox} 1\r\nHPUB {subject} {inbox} {len(headers)} {len(headers) + len(payload)}\r\n".encode()
                + headers
                + payload
                + b"\r\nPING\r\n"
            )
            return _await_ack(sock, reader)
    except (OSError, ValueError):
        return False


def _await_ack(sock: socket.socket, reader: io.BufferedReader) -> bool:
    while True:
        line = reader.readline()
        if not line or line.startswith(b"-ERR"):
            return False
        if line.startswith(b"PING"):
            sock.sendall(b"PONG\r\n")
        elif line.startswith((b"MSG ", b"HMSG ")):
            size = int(line.split()[-1])
            body = reader.read(size + 2)[:size]
            if line.startswith(b"HMSG "):  # a status message, e.g. 503 no responders: no stream took it
                return False
            ack = json.loads(body)
            return "error" not in ack and "seq" in ack


def announce(environ: dict[str, str]) -> bool:
    """Publish `run.status running` for the run in NEXUS_RUN_CONFIG; True when JetStream stored it."""
    try:
        with open(environ.get("NEXUS_RUN_CONFIG", "/etc/nexus/run-config.json"), "rb") as fh:
            run_id = json.load(fh)["run_id"]
        attempt = int(environ.get("NEXUS_ATTEMPT") or 1)
        if not isinstance(run_id, str) or not run_id or any(c in run_id for c in " \t\r\n.*>"):
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return False  # the regular path reports the problem properly
    msg_id, payload = running_envelope(run_id, attempt)
    url = (environ.get("NEXUS_NATS_URL") or "nats://127.0.0.1:4222").split(",")[0].strip()
    creds = environ.get("NEXUS_NATS_CREDS", "")
    try:
        return publish_js(
            url,
            f"nexus.run.{run_id}.status",
            msg_id,
            payload,
            name=f"agent-runner-{run_id}",
            creds=creds,
            inbox_prefix=f"_INBOX.{run_id}" if creds else "_INBOX",
            traceparent=environ.get("TRACEPARENT", ""),
        )
    except (StopIteration, ValueError, ImportError):
        return False
