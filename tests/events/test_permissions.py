"""NATS authorization against the real server: what a run's own credential and each service's user
may and may not do. Every refusal is the server's (a permissions violation), and what was refused
never reached a stream."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.events.catalog import CMDS_STREAM, RUNS_STREAM
from nexus.events.credentials import BusAuth, RunSigner
from nexus.events.payloads import ApprovalDecided, DecideApproval
from nexus.events.permissions import DECIDERS, SERVICES, RunIdentity, for_run, subject

pytestmark = pytest.mark.infra
WAIT_S = 5.0


class Conn:
    """A connection that collects the server's permission violations."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.heard = asyncio.Event()
        self.nc = None

    async def open(self, url: str, name: str, creds: str, user: str | None = None) -> "Conn":
        async def on_error(exc: Exception) -> None:
            self.violations.append(str(exc).lower())
            self.heard.set()

        self.nc = await connect(
            url, name, creds=creds, user=user, error_cb=on_error, max_reconnect_attempts=0, allow_reconnect=False
        )
        return self

    async def refused(self, what: str) -> bool:
        """Wait (bounded) for the server to call `what` a permissions violation."""

        async def seen() -> None:
            while not any("permissions violation" in v and f'"{what.lower()}"' in v for v in self.violations):
                self.heard.clear()
                await self.heard.wait()

        try:
            await asyncio.wait_for(seen(), WAIT_S)
            return True
        except TimeoutError:
            return False

    async def cannot_publish(self, subject_: str) -> bool:
        await self.nc.publish(subject_, b"{}")
        await self.nc.flush()
        return await self.refused(subject_)

    async def cannot_subscribe(self, subject_: str) -> bool:
        await self.nc.subscribe(subject_)
        await self.nc.flush()
        return await self.refused(subject_)


@pytest.fixture
def auth(nats_auth: Path | None) -> Path:
    if nats_auth is None:
        pytest.skip("the NATS server under test runs without authorization")
    return nats_auth


@pytest.fixture
async def tools(nats_url: str, nats_creds: str) -> AsyncIterator:
    nc = await connect(nats_url, "tests", creds=nats_creds)
    await ensure_streams(nc.jetstream())
    yield nc
    await nc.drain()


def new_run() -> RunIdentity:
    rid = f"run_{uuid.uuid4().hex[:12]}"
    return RunIdentity(rid, 1, f"ses_{rid[4:]}", parent_session_id=f"ses_parent{uuid.uuid4().hex[:6]}")


@pytest.fixture
async def as_run(nats_url: str, auth: Path) -> AsyncIterator:
    signer = RunSigner.parse((auth / "run-signer").read_text())
    opened: list[Conn] = []

    async def open_(who: RunIdentity) -> Conn:
        c = await Conn().open(nats_url, f"agent-runner-{who.run_id}", signer.mint(who, 60), user=who.run_id)
        opened.append(c)
        return c

    yield open_
    for c in opened:
        await c.nc.close()


@pytest.fixture
async def as_service(nats_url: str, auth: Path) -> AsyncIterator:
    opened: list[Conn] = []

    async def open_(name: str) -> Conn:
        c = await Conn().open(nats_url, name, str(auth / f"{name}.creds"))
        opened.append(c)
        return c

    yield open_
    for c in opened:
        await c.nc.close()


async def last_seq(tools, stream: str, subject_: str) -> int | None:
    """The stream's last sequence on a subject (None: nothing there). Other tests of the session
    publish service subjects on the same server, so a refusal is proven by this not moving."""
    try:
        return (await tools.jetstream().get_last_msg(stream, subject_)).seq
    except NotFoundError:
        return None


async def test_a_run_publishes_its_own_events_and_plan(as_run, tools) -> None:
    who = new_run()
    run = await as_run(who)
    ack = await run.nc.jetstream().publish(f"nexus.run.{who.run_id}.log", b"{}")
    assert ack.stream == RUNS_STREAM
    ack = await run.nc.jetstream().publish(subject("core.plan_children", run_id=who.run_id), b"{}")
    assert ack.stream == CMDS_STREAM
    await tools.jetstream().purge_stream(CMDS_STREAM, subject=subject("core.plan_children", run_id=who.run_id))
    assert not run.violations


@pytest.mark.parametrize(
    "target",
    [
        "nexus.cmd.worker.launch_run",
        "nexus.cmd.worker.cancel_run",
        "nexus.cmd.core.decide_approval",
        "nexus.cmd.core.create_goal",
        "nexus.evt.run.succeeded",
        "nexus.evt.approval.decided",
        "nexus.dlq.nexus.run.x.log",
        "other-run-log",
        "other-run-plan",
        "own-approval_decided",
        "own-child_finished",
        "unrelated-kernel-inbox",
    ],
)
async def test_a_run_cannot_publish_outside_its_own_subjects(as_run, tools, target: str) -> None:
    who, other = new_run(), new_run()
    subject_ = {
        "other-run-log": f"nexus.run.{other.run_id}.log",
        "other-run-plan": subject("core.plan_children", run_id=other.run_id),
        "own-approval_decided": f"nexus.run.{who.run_id}.approval_decided",
        "own-child_finished": f"nexus.run.{who.run_id}.child_finished",
        "unrelated-kernel-inbox": f"nexus.agent.{other.session_id}.inbox",
    }.get(target, target)
    run = await as_run(who)
    stream = RUNS_STREAM if subject_.startswith("nexus.run.") else CMDS_STREAM
    kept = subject_.startswith(("nexus.run.", "nexus.cmd."))
    before = await last_seq(tools, stream, subject_) if kept else None
    assert await run.cannot_publish(subject_)
    if kept:
        assert await last_seq(tools, stream, subject_) == before


@pytest.mark.parametrize(
    "target",
    [
        "other-run",
        "all-runs",
        "nexus.cmd.>",
        "nexus.evt.>",
        "_INBOX.>",
        "_INBOX.core-api.>",
        "other-run-inbox",
        ">",
    ],
)
async def test_a_run_cannot_subscribe_to_another_run_or_a_service(as_run, target: str) -> None:
    who, other = new_run(), new_run()
    subject_ = {
        "other-run": f"nexus.run.{other.run_id}.>",
        "all-runs": "nexus.run.>",
        "other-run-inbox": f"_INBOX.{other.run_id}.>",
    }.get(target, target)
    run = await as_run(who)
    assert await run.cannot_subscribe(subject_)


async def test_a_run_cannot_read_the_run_stream_through_a_consumer_of_its_own_making(as_run) -> None:
    who, other = new_run(), new_run()
    run = await as_run(who)
    # An unnamed consumer (any filter), one named like its own but filtering another run, and core-api's durable.
    for api in (
        f"$JS.API.CONSUMER.CREATE.{RUNS_STREAM}",
        f"$JS.API.CONSUMER.CREATE.{RUNS_STREAM}.{who.consumer('approval_decided')}.nexus.run.{other.run_id}.approval_decided",
        f"$JS.API.CONSUMER.MSG.NEXT.{RUNS_STREAM}.core-api-runs",
        f"$JS.API.CONSUMER.DELETE.{RUNS_STREAM}.core-api-runs",
    ):
        assert await run.cannot_publish(api), api


async def test_a_decision_reaches_a_run_only_from_core_api(as_run, as_service, tools) -> None:
    who = new_run()
    run = await as_run(who)
    decided = ApprovalDecided(approval_id="apr_1", run_id=who.run_id, decision="approved", decided_by="someone")
    # The run cannot say it to itself; the worker cannot say it either; core-api can.
    assert await run.cannot_publish(f"nexus.run.{who.run_id}.approval_decided")
    worker = await as_service("worker")
    assert await worker.cannot_publish(f"nexus.run.{who.run_id}.approval_decided")
    core = await as_service("core-api")
    await Publisher(core.nc.jetstream(), "core-api").publish("run.approval_decided", decided, run_id=who.run_id)
    # And the run reads it through the consumer its credential allows.
    from nexus.agent_runner.waiting import RunInbox

    inbox = RunInbox(run.nc.jetstream(), who)
    await inbox.start()
    try:
        got = await inbox.decision("apr_1", WAIT_S)
    finally:
        await inbox.close()
    assert got is not None and got.decided_by == "someone"


async def test_only_core_api_and_the_gateway_may_decide_approvals(as_service) -> None:
    assert set(DECIDERS) == {
        "telegram-gateway"
    }  # core-api applies it (its HTTP route decides directly); it never sends it
    cmd = DecideApproval(approval_id="apr_x", decision="approved", decided_by="x")
    gateway = await as_service("telegram-gateway")
    await Publisher(gateway.nc.jetstream(), "telegram-gateway").publish("core.decide_approval", cmd)
    for name in ("board-sync", "worker"):
        svc = await as_service(name)
        assert await svc.cannot_publish(subject("core.decide_approval")), name


@pytest.mark.parametrize(
    ("service", "target"),
    [
        ("board-sync", "nexus.evt.task.created"),
        ("board-sync", "nexus.cmd.worker.launch_run"),
        ("worker", "nexus.evt.run.succeeded"),
        ("worker", "nexus.cmd.worker.launch_run"),
        ("worker", "nexus.run.x.child_finished"),
        ("telegram-gateway", "nexus.run.x.log"),
        ("telegram-gateway", "nexus.cmd.worker.cancel_run"),
        ("core-api", "nexus.run.x.status"),
        ("core-api", "nexus.cmd.core.create_goal"),
        ("core-api", "$KV.nexus_launches.x"),
    ],
)
async def test_a_service_cannot_publish_outside_its_list(as_service, service: str, target: str) -> None:
    svc = await as_service(service)
    assert await svc.cannot_publish(target)


async def test_a_service_cannot_read_another_service_s_replies(as_service) -> None:
    worker = await as_service("worker")
    assert await worker.cannot_subscribe("_INBOX.core-api.>")
    assert await worker.cannot_subscribe("nexus.cmd.core.>")


async def test_no_credential_no_forged_credential(nats_url: str, auth: Path, tmp_path: Path) -> None:
    with pytest.raises(NatsError, match="Authorization Violation"):
        await connect(nats_url, "anonymous", max_reconnect_attempts=0, allow_reconnect=False)
    # A credential from another deployment (a key this server does not trust) is refused too.
    foreign = BusAuth.generate()
    with pytest.raises(NatsError, match="Authorization Violation"):
        await connect(
            nats_url,
            "foreign",
            creds=foreign.service_creds["core-api"],
            max_reconnect_attempts=0,
            allow_reconnect=False,
        )


def test_the_run_table_is_what_the_brief_of_confinement_says() -> None:
    who = RunIdentity("run_a", 2, "ses_a", "ses_p")
    p = for_run(who)
    assert "nexus.run.run_a.>" in p.pub_allow
    assert set(p.pub_deny) == {"nexus.run.run_a.approval_decided", "nexus.run.run_a.child_finished"}
    assert not [
        s
        for s in p.pub_allow
        if s.startswith(("nexus.cmd.", "nexus.evt.")) and s != "nexus.cmd.core.plan_children.run_a"
    ]
    assert not [
        s
        for s in (*p.pub_allow, *p.sub_allow)
        if "*" in s or s.endswith(">") and not s.startswith(("nexus.run.run_a.", "_INBOX.run_a."))
    ]
    assert set(SERVICES) == {"core-api", "worker", "board-sync", "telegram-gateway", "tools"}


async def test_the_run_signing_key_cannot_mint_more_than_a_run(nats_url: str, auth: Path) -> None:
    """The worker's key is a scoped signing key: a user it signs gets the run template's permissions,
    whatever the user JWT itself claims — it cannot make a service, or an all-powerful user."""
    import nkeys

    from nexus.events.credentials import creds_text, encode_jwt, new_seed, public_key

    signer = RunSigner.parse((auth / "run-signer").read_text())
    assert signer.seed.decode() not in repr(signer)
    who = new_run()
    user = new_seed(nkeys.PREFIX_BYTE_USER)
    greedy = {
        "pub": {"allow": [">"]},
        "sub": {"allow": [">"]},
        "tags": [f"session:{who.session_id}", "attempt:1"],
        "type": "user",
        "version": 2,
    }
    jwt = encode_jwt(signer.seed, public_key(user), who.run_id, greedy, issuer_account=signer.account_pub)
    try:
        c = await Conn().open(nats_url, "greedy", creds_text(jwt, user), user=who.run_id)
    except NatsError as exc:  # the server may refuse such a user outright
        assert "Authorization Violation" in str(exc)
        return
    try:
        assert await c.cannot_publish("nexus.cmd.worker.launch_run")
        assert await c.cannot_subscribe("nexus.run.>")
    finally:
        await c.nc.close()
