"""core-api records each ledger entry's hash as the run reports it; `GET /v1/runs/{id}/verify` checks
the stored ledger against that record, so a truncated or re-sealed ledger is caught even when the
run's final hash was forged to match it (the chain alone, and the reported hash alone, both pass)."""

import msgspec
import pytest

from nexus.core_api.ledger.record import collection, insert_records, records_of
from nexus.core_api.runs.ingest import handle_run_event
from nexus.db.documents import Run, SessionChangeRecord
from nexus.db.writes import update_document
from nexus.domain.ledger import seal, seal_one
from nexus.domain.sessions import NoteChange
from nexus.events import payloads as p
from nexus.events.catalog import spec
from nexus.events.consumer import Delivery
from nexus.events.envelope import decode_raw, encode, make_envelope
from nexus.nexusctl.verify import check_run
from tests.core_api.conftest import in_app, new_run

pytestmark = pytest.mark.infra


async def deliver(client, run_id: str, type_: str, data, seq: int) -> None:
    env = decode_raw(encode(make_envelope(type_, data, source="agent-runner", correlation_id=run_id)))
    subject = spec(type_).subject_for(run_id=run_id)
    ctx = client.app.state.ctx
    await in_app(client, handle_run_event, ctx, Delivery(env, data, subject, 1, seq))


async def report_run(client, run: dict, messages: list[str]) -> list:
    await deliver(client, run["id"], "run.status", p.RunStatusChanged(status="running"), 0)
    changes = seal(NoteChange(timestamp="2026-12-06T00:00:00Z", message=m) for m in messages)
    for i, change in enumerate(changes):
        await deliver(
            client, run["id"], "run.note", p.SessionChanged(session_id=run["session_id"], change=change), i + 1
        )
    await deliver(
        client, run["id"], "run.status", p.RunStatusChanged(status="succeeded", ledger_hash=changes[-1].hash), 99
    )
    return changes


async def tamper(client, run: dict, changes: list) -> None:
    """What someone with the database (or an offline copy) does: replace the ledger and the run's hash to match."""
    coll = SessionChangeRecord.get_pymongo_collection()
    await in_app(client, coll.delete_many, {"session_id": run["session_id"]})
    docs = [
        {
            "_id": SessionChangeRecord.key(run["session_id"], 1, c.seq),
            "session_id": run["session_id"],
            "run_id": run["id"],
            "attempt": 1,
            "seq": c.seq,
            "change": msgspec.to_builtins(c),
            "note": getattr(c, "message", None),
        }
        for c in changes
    ]
    if docs:
        await in_app(client, coll.insert_many, docs)
    await in_app(
        client, update_document, Run, run["id"], {"$set": {"ledger_hash": changes[-1].hash if changes else ""}}
    )


async def verify(client, run_id: str) -> dict:
    r = await client.get(f"/v1/runs/{run_id}/verify")
    assert r.status_code == 200, r.text
    return r.json()


async def test_an_honest_ledger_verifies(client) -> None:
    run = await new_run(client)
    changes = await report_run(client, run, ["one", "two", "three"])
    v = await verify(client, run["id"])
    assert v["ok"], v
    assert v["recorded_hash"] == changes[-1].hash == v["ledger_hash"]


async def test_a_truncated_ledger_with_a_matching_forged_hash_is_caught(client) -> None:
    run = await new_run(client)
    changes = await report_run(client, run, ["one", "two", "three"])
    await tamper(client, run, changes[:2])
    stored = (await client.get(f"/v1/runs/{run['id']}")).json()
    assert check_run(stored, stored["sessions"]).ok  # the chain and the forged hash agree with each other
    v = await verify(client, run["id"])
    assert not v["ok"]
    assert any("missing from the ledger" in x for s in v["sessions"] for x in s["problems"]), v
    assert any("reported ledger hash" in x for x in v["problems"]), v


async def test_a_resealed_ledger_with_a_matching_forged_hash_is_caught(client) -> None:
    run = await new_run(client)
    changes = await report_run(client, run, ["one", "two", "three"])
    edited = seal([changes[0], msgspec.structs.replace(changes[1], message="nothing to see"), changes[2]])
    await tamper(client, run, edited)
    v = await verify(client, run["id"])
    assert not v["ok"]
    problems = [x for s in v["sessions"] for x in s["problems"]]
    assert any("entry 1" in x and "re-sealed" in x for x in problems), v
    assert not any("entry 0" in x for x in problems), v  # the untouched entry still matches its record


async def test_an_entry_appended_after_the_fact_is_caught(client) -> None:
    run = await new_run(client)
    changes = await report_run(client, run, ["one"])
    extra = seal_one(
        NoteChange(timestamp="2026-12-06T00:00:01Z", message="added later"), seq=1, prev_hash=changes[0].hash
    )
    await tamper(client, run, [changes[0], extra])
    v = await verify(client, run["id"])
    assert not v["ok"]
    assert any("never reported" in x for s in v["sessions"] for x in s["problems"]), v


async def test_an_entry_reported_twice_with_different_hashes_is_a_conflict(client) -> None:
    run = await new_run(client)
    changes = await report_run(client, run, ["one", "two"])
    forged = seal_one(NoteChange(timestamp="2026-12-06T00:00:00Z", message="other"), seq=1, prev_hash=changes[0].hash)
    await deliver(client, run["id"], "run.note", p.SessionChanged(session_id=run["session_id"], change=forged), 50)
    v = await verify(client, run["id"])
    assert not v["ok"]
    assert any("reported again" in x for s in v["sessions"] for x in s["problems"]), v


async def test_verify_of_an_unknown_run_is_a_404(client) -> None:
    r = await client.get("/v1/runs/run_nope/verify")
    assert r.status_code == 404


async def test_ledger_records_in_one_batch_keep_the_first_report(client) -> None:
    """Run-event ingestion stores a fetch's ledger records with one insert_many: an entry reported
    twice keeps the hash that came first (in the batch, or stored before it), another hash becomes
    a conflict beside it, and a redelivery with the same hash changes nothing."""

    def rec(seq: int, hash_: str) -> dict:
        return {
            "_id": f"run_batch:1:ses_l:{seq}",
            "run_id": "run_batch",
            "attempt": 1,
            "session_id": "ses_l",
            "seq": seq,
            "hash": hash_,
            "prev_hash": "",
        }

    async def both() -> list[dict]:
        await insert_records(collection(), [rec(0, "h0"), rec(1, "h1"), rec(1, "forged"), rec(0, "h0")])
        await insert_records(
            collection(), [rec(1, "h1"), rec(2, "h2"), rec(0, "again")]
        )  # a redelivery, a new entry, a re-report
        return await records_of("run_batch")

    got = {r["seq"]: (r["hash"], sorted(r.get("conflicts", []))) for r in await in_app(client, both)}
    assert got == {0: ("h0", ["again"]), 1: ("h1", ["forged"]), 2: ("h2", [])}
