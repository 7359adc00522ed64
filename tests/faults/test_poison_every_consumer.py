"""Poison on every subject that a durable consumer of a real service reads, table-driven from the subject
catalog and from the consumers the services made on the server, so a new subject or consumer is covered
the day it exists: core-api (run-event ingestion, goals, each command), the worker (launch, cancel),
board-sync and the telegram gateway.

Each subject gets bodies that are not JSON, not an envelope, an envelope missing or mistyping fields,
a type its subject does not carry, a payload of the wrong shape or with unknown fields, strings the
database cannot hold and integers past 64 bits, and a near-megabyte body; and each catalog subject's
last token is replaced by one the catalog does not know. Every consumer of the subject dead-letters
every one of them with a reason, keeps consuming (a good command after the poison is handled), holds
nothing unacknowledged, and nothing of the poison is stored."""

import asyncio
import hashlib
import uuid

import httpx
import msgspec
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from nexus.dev.stack import Stack
from nexus.events.bus import Publisher, connect
from nexus.events.catalog import BY_TYPE, DLQ_STREAM, MESSAGES, STREAMS
from nexus.events.envelope import decode_raw, encode, make_envelope
from nexus.events.payloads import CreateGoal, DeadLetter
from tests.e2e.conftest import api, stack  # noqa: F401 — the fixtures: every service, its API client

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

# The services' durables (tests and other processes make their own on the same server).
OWNERS = ("core-api", "worker", "board-sync", "telegram-gw")


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, `>` one or more at the end."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def subjects(run_id: str) -> dict[str, str]:
    """Every subject the catalog names (a run's on one run), and beside each the same subject with its last
    token one the catalog does not know: subject → the envelope type it carries ("" for the unknown)."""
    out: dict[str, str] = {}
    for m in MESSAGES:
        if m.stream in (None, DLQ_STREAM):
            continue
        subject = m.subject_for(run_id=run_id)
        out[subject] = m.type
        out.setdefault(subject.rsplit(".", 1)[0] + ".zz_unknown", "")
    return out


def envelope(type_: str, data: bytes) -> bytes:
    head = encode(make_envelope(type_, None, source="poison"))
    return head.replace(b'"data":null', b'"data":' + data)


def shaped(payload: type, text: str, integer: int) -> bytes:
    """A payload of the right shape whose every required string is `text` and integer `integer`."""
    schema = msgspec.json.schema(payload)
    defs = schema.get("$defs", {})

    def fill(node: dict) -> object:
        if "$ref" in node:
            return fill(defs[node["$ref"].rsplit("/", 1)[-1]])
        if "enum" in node:
            return node["enum"][0]
        if "anyOf" in node:
            return fill(next(n for n in node["anyOf"] if n.get("type") != "null"))
        kind = node.get("type")
        if kind == "object":
            return {k: fill(v) for k, v in node.get("properties", {}).items() if k in node.get("required", [])}
        return {"string": text, "integer": integer, "number": 1.5, "boolean": True, "array": []}.get(kind)

    return msgspec.json.encode(fill(schema))


def poisons(type_: str, tag: str) -> dict[str, bytes]:
    """The bodies every consumer of a subject carrying `type_` must dead-letter (each unique by `tag`)."""
    other = next(m.type for m in MESSAGES if m.type not in (type_, "dlq"))
    hostile = (
        b'{"zz": "' + tag.encode() + b'", "title": "a\\u0000b", "run_id": "\\ud800", '
        b'"attempt": 18446744073709551617, "step": 1e309}'
    )
    return {
        "not json": b"\xff\xfe{" + tag.encode(),
        "not an envelope": b'["' + tag.encode() + b'"]',
        "no data": b'{"id": "' + tag.encode() + b'", "type": "' + type_.encode() + b'"}',
        "mistyped envelope": b'{"id": 1, "type": ["'
        + tag.encode()
        + b'"], "occurred_at": 2, "source": null, "data": {}}',
        "other type": envelope(other, b'{"zz": "' + tag.encode() + b'"}'),
        "payload not an object": envelope(type_ or other, b'["' + tag.encode() + b'"]'),
        "payload unknown fields": envelope(type_ or other, b'{"zz_unknown": "' + tag.encode() + b'"}'),
        "payload hostile values": envelope(type_ or other, hostile),
        "near a megabyte": envelope(type_ or other, b'{"zz": "' + tag.encode() + b"x" * 1_000_000 + b'"}'),
    }


def hostile(type_: str, tag: str) -> dict[str, tuple[bytes, bool]]:
    """Payloads of the right shape holding what no store can keep, each with whether every reader must
    refuse it: a NUL in every required string (a run's own events may carry one: ingestion keeps them as
    bytes), an integer past 64 bits in every required integer. A variant whose payload has no such field
    is a valid message and left out."""
    payload = BY_TYPE[type_].payload
    nul = shaped(payload, f"{tag}\x00", 1)
    wide = shaped(payload, tag, 2**64 + 1)
    out = {}
    if b"\\u0000" in nul:
        out["payload holding a NUL"] = (envelope(type_, nul), not type_.startswith("run."))
    if str(2**64 + 1).encode() in wide:
        out["payload past 64 bits"] = (envelope(type_, wide), True)
    return out


async def consumers(js) -> dict[str, list[str]]:
    """The services' durable consumers: name → the subjects it filters on."""
    out: dict[str, list[str]] = {}
    for stream in STREAMS:
        if stream.name == DLQ_STREAM:
            continue
        for info in await js.consumers_info(stream.name):
            name = info.config.durable_name or info.name
            if name.startswith(OWNERS):
                out[name] = list(info.config.filter_subjects or []) or [info.config.filter_subject or ">"]
    return out


async def letters_since(js, start_seq: int, want: set[tuple[str, str]], deadline_s: float) -> dict:
    """Dead letters published after `start_seq`, by (consumer, original body's sha256), until every one
    of `want` arrived or the deadline passed."""
    found: dict[tuple[str, str], DeadLetter] = {}
    sub = await js.subscribe(
        "nexus.dlq.>",
        stream=DLQ_STREAM,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq + 1),
    )
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    try:
        while not want <= found.keys() and loop.time() < end:
            try:
                msg = await sub.next_msg(timeout=1)
            except TimeoutError:
                continue
            letter = msgspec.json.decode(decode_raw(msg.data).data, type=DeadLetter)
            found[(letter.consumer, letter.body_sha256)] = letter
    finally:
        await sub.unsubscribe()
    return found


async def settled(js, names: list[str], deadline_s: float) -> dict[str, tuple[int, int]]:
    """Wait until none of the consumers has anything pending or unacknowledged; what each still holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    held: dict[str, tuple[int, int]] = {}
    stream_of = {}
    for stream in STREAMS:
        if stream.name != DLQ_STREAM:
            for info in await js.consumers_info(stream.name):
                stream_of[info.name] = stream.name
    while loop.time() < end:
        held = {}
        for name in names:
            info = await js.consumer_info(stream_of[name], name)
            if info.num_pending or info.num_ack_pending:
                held[name] = (info.num_pending, info.num_ack_pending)
        if not held:
            return {}
        await asyncio.sleep(0.2)
    return held


async def test_every_consumer_dead_letters_every_poison_and_lives_on(stack: Stack, api: httpx.AsyncClient) -> None:
    tag = uuid.uuid4().hex[:10]
    nc = await connect(stack.nats_url or "", "faults-poison-all", creds=stack.creds("tools"))
    js = nc.jetstream()
    try:
        durables = await consumers(js)
        assert {n.split("-")[0] for n in durables} >= {"core", "worker", "board", "telegram"}, durables
        goals_before = (await api.get("/v1/goals", params={"limit": 500})).json()["items"]
        dlq_start = (await js.stream_info(DLQ_STREAM)).state.last_seq

        want: dict[tuple[str, str], str] = {}  # (consumer, sha256) → what was sent where
        covered: set[str] = set()
        run_id = f"run_poison{tag}"
        for subject, type_ in subjects(run_id).items():
            readers = [name for name, filters in durables.items() if any(matches(f, subject) for f in filters)]
            if not readers:
                continue
            covered.update(readers)
            for kind, body in poisons(type_, f"{tag}{len(want)}").items():
                await js.publish(subject, body)
                for reader in readers:
                    want[(reader, hashlib.sha256(body).hexdigest())] = f"{subject} [{kind}] at {reader}"
            for kind, (body, refused) in (hostile(type_, f"{tag}{len(want)}") if type_ else {}).items():
                await js.publish(subject, body)
                for reader in readers if refused else ():
                    want[(reader, hashlib.sha256(body).hexdigest())] = f"{subject} [{kind}] at {reader}"
        assert covered == set(durables), f"consumers no catalog subject reaches: {set(durables) - covered}"

        good = f"after the poison {tag}"
        await Publisher(js, "poison").publish("core.create_goal", CreateGoal(title=good))

        found = await letters_since(js, dlq_start, set(want), deadline_s=180)
        missing = [what for key, what in want.items() if key not in found]
        assert not missing, f"{len(missing)} of {len(want)} never dead-lettered:\n" + "\n".join(missing[:40])
        unexplained = [want[key] for key, letter in found.items() if key in want and not letter.reason]
        assert not unexplained, unexplained

        for _ in range(300):
            goals = (await api.get("/v1/goals", params={"limit": 500})).json()["items"]
            if any(g["title"] == good for g in goals):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the good command after the poison was never handled")
        assert {g["id"] for g in goals} - {g["id"] for g in goals_before} == {
            g["id"] for g in goals if g["title"] == good
        }, "something of the poison was stored as a goal"
        assert (await api.get(f"/v1/runs/{run_id}")).status_code == 404, "the poison's run was stored"
        held = await settled(js, sorted(durables), deadline_s=60)
        assert not held, f"consumers still holding poison (pending, unacknowledged): {held}"
        for name, port in stack.metrics_ports.items():
            r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            assert r.status_code == 200, (name, r.text)
        # Refused, each where it was read, and said so in a line: no handler or subscription raised.
        raised = {log.name: log.read_text(errors="replace") for log in sorted(stack.log_dir.glob("*.log"))}
        assert not {
            name: text[text.index("Traceback") - 300 :][:1500] for name, text in raised.items() if "Traceback" in text
        }
    finally:
        await nc.drain()
