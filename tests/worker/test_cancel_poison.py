"""Every worker hears every cancel on a plain subscription beside the durable consumer: a cancel it
cannot read (any of what the decoder refuses) is logged and dropped there, never raised into the
subscription (the durable consumer dead-letters it)."""

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from nexus.events.envelope import encode, make_envelope
from nexus.events.payloads import CancelRun, CreateGoal
from nexus.worker.launcher import Launcher

SUBJECT = "nexus.cmd.worker.cancel_run"


@dataclass
class _Msg:
    subject: str
    data: bytes


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        encode(make_envelope("core.create_goal", CreateGoal(title="a goal"), source="test")),  # another type
        encode(make_envelope("worker.cancel_run", CancelRun(run_id="r"), source="test")).replace(b'"r"', b'""'),
        b" " * 1_048_577,
    ],
    ids=["not json", "not an envelope", "another type", "field limit", "too large"],
)
async def test_a_cancel_broadcast_the_worker_cannot_read_is_dropped(body: bytes) -> None:
    heard: list[str] = []
    launcher = SimpleNamespace(
        freshness=SimpleNamespace(heard_cancel=heard.append), runtime=SimpleNamespace(name="k8s")
    )
    await Launcher.on_cancel_broadcast(launcher, _Msg(SUBJECT, body))  # type: ignore[arg-type]
    assert heard == []


async def test_a_cancel_broadcast_is_heard() -> None:
    heard: list[str] = []
    launcher = SimpleNamespace(
        freshness=SimpleNamespace(heard_cancel=heard.append), runtime=SimpleNamespace(name="k8s")
    )
    body = encode(make_envelope("worker.cancel_run", CancelRun(run_id="run_1"), source="test"))
    await Launcher.on_cancel_broadcast(launcher, _Msg(SUBJECT, body))  # type: ignore[arg-type]
    assert heard == ["run_1"]
