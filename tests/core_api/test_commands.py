"""core-api's commands on FastStream, against a real nats-server as core-api's own NATS user: each command
subject has its own durable and handler; a payload of another type on a subject is dead-lettered, never
routed by its type; a poison message is dead-lettered and the subscriber lives on; a deleted durable is
made anew; and a command that waited in the work queue under the old catch-all durable (`core-api-cmds`)
is handled after the upgrade."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import msgspec
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from nexus.core_api.background import COMMAND_SUBSCRIBERS
from nexus.core_api.chat_bindings.service import bind
from nexus.core_api.commands import serve_commands
from nexus.core_api.context import Context
from nexus.core_api.settings import CoreSettings
from nexus.db.documents import Approval, Goal, Run, now
from nexus.events import payloads as p
from nexus.events.bus import Publisher, connect
from nexus.events.catalog import CMDS_STREAM, DLQ_STREAM, spec
from nexus.events.consumer import LOOPS
from nexus.events.envelope import decode_raw, encode, make_envelope
from nexus.events.permissions import COMMAND_DURABLES, LEGACY_COMMANDS, command_durable
from tests.conftest import creds_of
from tests.events.test_permissions import tools  # noqa: F401 — the fixture: the tests' own connection

pytestmark = pytest.mark.infra
T = TypeVar("T")


@pytest.fixture
async def ctx(fresh_db, nats_url: str, nats_auth, tools) -> AsyncIterator[Context]:
    """A Context connected as core-api itself (its permissions apply), with none of its command durables yet."""
    js = tools.jetstream()
    for d in (*COMMAND_DURABLES, LEGACY_COMMANDS):
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(d.stream, d.name)
    creds = creds_of(nats_auth, "core-api")
    nc = await connect(nats_url, "core-api", creds=creds)
    cjs = nc.jetstream()
    yield Context(
        settings=CoreSettings(nats_url=nats_url, nats_creds=creds), nc=nc, js=cjs, publisher=Publisher(cjs, "core-api")
    )
    await nc.drain()
    for d in COMMAND_DURABLES:  # leave the shared server as found
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(d.stream, d.name)


@contextlib.asynccontextmanager
async def serving(ctx: Context) -> AsyncIterator[None]:
    """core-api's command subscribers running, as `run_background` runs them."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve_commands(ctx, stop, COMMAND_SUBSCRIBERS))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until(check: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = 30.0) -> T:
    """Wait (bounded) until `check()` returns something truthy; polls state, asserts nothing about time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if found := await check():
            return found
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def publish(tools, type_: str, payload: msgspec.Struct, subject: str | None = None) -> int:
    """Publish a command as its sender would (an envelope of `type_`), on `subject` (its own by default)."""
    env = make_envelope(type_, payload, source="test")
    subject = subject or spec(type_).subject
    ack = await tools.jetstream().publish(subject, encode(env), headers={"Nats-Msg-Id": env.id})
    return ack.seq


class Letters:
    """Dead letters of the command subjects, read from the DLQ stream by an ordered consumer."""

    def __init__(self, sub) -> None:
        self.sub = sub
        self.seen: list[p.DeadLetter] = []

    async def wait(self, match: Callable[[p.DeadLetter], bool], what: str) -> p.DeadLetter:
        async def check() -> p.DeadLetter | None:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                msg = await self.sub.next_msg(timeout=0.5)
                self.seen.append(msgspec.json.decode(decode_raw(msg.data).data, type=p.DeadLetter))
            return next((letter for letter in self.seen if match(letter)), None)

        return await until(check, what)


@pytest.fixture
async def letters(tools) -> AsyncIterator[Letters]:
    sub = await tools.jetstream().subscribe(
        "nexus.dlq.nexus.cmd.core.>", stream=DLQ_STREAM, ordered_consumer=True, deliver_policy="new"
    )
    yield Letters(sub)
    await sub.unsubscribe()


async def lead() -> p.ChatPrincipal:
    uid = str(uuid.uuid4().int % 10**12)
    await bind("telegram", uid, f"lead-{uid}@example.com", "lead", created_by="test")
    return p.ChatPrincipal(user_id=uid, username=f"u{uid}")


async def pending_approval() -> Approval:
    apr = Approval(
        id=f"apr_{uuid.uuid4().hex}",
        run_id="run_missing",
        action="command",
        detail="make",
        expires_at=now() + timedelta(hours=1),
    )
    await apr.insert()
    return apr


async def running_run() -> str:
    run = Run(
        id=f"run_{uuid.uuid4().hex}",
        task_id=f"task_{uuid.uuid4().hex}",
        agent_id="agt_x",
        agent_revision=1,
        session_id=f"ses_{uuid.uuid4().hex}",
        status="running",
    )
    await run.insert()
    return run.id


async def cancelled(run_id: str) -> bool:
    return (await Run.get(run_id)).status == "cancelled"


def goal_id() -> str:
    return "goal_" + "0" * 20 + uuid.uuid4().hex[:6]


async def decided(apr: Approval) -> bool:
    return (await Approval.get(apr.id)).status != "pending"


async def test_each_command_subject_reaches_its_own_handler(ctx, tools, letters) -> None:
    who = await lead()
    apr, goal, run_id = await pending_approval(), goal_id(), await running_run()
    task_id, plan_run = f"task_{uuid.uuid4().hex}", f"run_{uuid.uuid4().hex}"
    schedule = f"sch_{uuid.uuid4().hex}"
    async with serving(ctx):
        await publish(
            tools, "core.decide_approval", p.DecideApproval(approval_id=apr.id, decision="approved", principal=who)
        )
        await publish(tools, "core.create_goal", p.CreateGoal(title="Ship it", goal_id=goal, principal=who))
        await publish(tools, "core.cancel_run", p.CancelRunRequest(run_id=run_id, principal=who))
        await publish(tools, "core.cancel_task", p.CancelTask(task_id=task_id, provider="plane", actor="someone"))
        await publish(
            tools,
            "core.plan_children",
            p.PlanChildren(run_id=plan_run, session_id="ses_x", children=[]),
            subject=spec("core.plan_children").subject_for(run_id=plan_run),
        )
        fired = await publish(
            tools,
            "core.fire_schedule",
            p.FireSchedule(schedule_id=schedule, occurrence_at="2026-01-01T00:00:00Z", occurrence_id=schedule),
        )

        await until(lambda: decided(apr), "the approval decided")
        await until(lambda: Goal.get(goal), "the goal created")
        await until(lambda: cancelled(run_id), "the run cancelled")
        # What the services refuse comes back, each from the durable and handler of its own subject.
        refusals = {
            "core.cancel_task": await letters.wait(lambda x: task_id in x.reason, "the cancel_task refusal"),
            "core.plan_children": await letters.wait(lambda x: plan_run in x.reason, "the plan refusal"),
        }

        async def fire_handled() -> (
            bool
        ):  # an unknown schedule's occurrence changes nothing: acked, gone from the queue
            info = await tools.jetstream().consumer_info(CMDS_STREAM, command_durable("core.fire_schedule").name)
            return (info.ack_floor.stream_seq or 0) >= fired

        await until(fire_handled, "the occurrence acknowledged by its own durable")
    assert (await Approval.get(apr.id)).status == "approved"
    for type_, letter in refusals.items():
        assert letter.consumer == command_durable(type_).name, letter
        assert letter.original_subject.startswith(spec(type_).subject.split("{")[0]), letter
    assert refusals["core.cancel_task"].reason.startswith("rejected: refused: 404")
    assert f"plan for unknown run {plan_run}" in refusals["core.plan_children"].reason
    with pytest.raises(NotFoundError):  # handled: a work queue keeps nothing acknowledged
        await tools.jetstream().get_msg(CMDS_STREAM, fired)


async def test_a_payload_of_another_type_is_dead_lettered_not_routed_by_type(ctx, tools, letters) -> None:
    who, goal = await lead(), goal_id()
    async with serving(ctx):
        # A goal's creation, sent on the approval-decision subject.
        await publish(
            tools,
            "core.create_goal",
            p.CreateGoal(title="Smuggled", goal_id=goal, principal=who),
            subject=spec("core.decide_approval").subject,
        )
        letter = await letters.wait(lambda x: goal in x.body, "the mismatched command's dead letter")
        # The subscriber lives on: a right command on the same subject is handled after it.
        apr = await pending_approval()
        await publish(
            tools, "core.decide_approval", p.DecideApproval(approval_id=apr.id, decision="rejected", principal=who)
        )
        await until(lambda: decided(apr), "the next decision applied")
    assert letter.original_subject == "nexus.cmd.core.decide_approval"
    assert letter.consumer == command_durable("core.decide_approval").name
    assert "envelope type 'core.create_goal' disagrees with subject nexus.cmd.core.decide_approval" in letter.reason
    assert await Goal.get(goal) is None  # its type's handler never saw it


async def test_poison_is_dead_lettered_and_the_subscriber_lives_on(ctx, tools, letters) -> None:
    who, goal = await lead(), goal_id()
    subject = spec("core.create_goal").subject
    async with serving(ctx):
        await tools.jetstream().publish(subject, b"{not json", headers={"Nats-Msg-Id": uuid.uuid4().hex})
        letter = await letters.wait(lambda x: x.body == "{not json", "the poison's dead letter")
        await publish(tools, "core.create_goal", p.CreateGoal(title="After the poison", goal_id=goal, principal=who))
        await until(lambda: Goal.get(goal), "the next command handled")
    assert letter.original_subject == subject and letter.reason.startswith("undecodable")
    assert letter.consumer == command_durable("core.create_goal").name


async def test_a_deleted_durable_is_made_anew(ctx, tools) -> None:
    who, goal = await lead(), goal_id()
    durable = command_durable("core.create_goal")
    js = tools.jetstream()
    async with serving(ctx):
        await until(lambda: _exists(js, durable.name), "the durable made at start")
        await js.delete_consumer(durable.stream, durable.name)
        await publish(tools, "core.create_goal", p.CreateGoal(title="After the deletion", goal_id=goal, principal=who))
        await until(lambda: Goal.get(goal), "the command handled by the durable made anew")
    assert durable.name not in LOOPS.down


async def _exists(js, name: str) -> bool:
    try:
        await js.consumer_info(CMDS_STREAM, name)
    except NotFoundError:
        return False
    return True


async def test_commands_left_under_the_old_durable_are_handled_after_the_upgrade(ctx, tools) -> None:
    """The old core-api read every command through `core-api-cmds`: one command it fetched and never
    acknowledged (it was stopped mid-way) and one it never fetched both wait in the work queue. The new
    core-api retires that durable (the server would refuse its per-subject ones beside it) and handles both."""
    js = tools.jetstream()
    await js.add_consumer(
        CMDS_STREAM,
        ConsumerConfig(
            durable_name=LEGACY_COMMANDS.name,
            filter_subject=LEGACY_COMMANDS.filter,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=300,
        ),
    )
    with pytest.raises(Exception, match="not unique"):  # why the old durable must go first
        await js.add_consumer(
            CMDS_STREAM,
            ConsumerConfig(
                durable_name=command_durable("core.create_goal").name, filter_subject=spec("core.create_goal").subject
            ),
        )
    who, apr, goal = await lead(), await pending_approval(), goal_id()
    fetched_seq = await publish(
        tools, "core.create_goal", p.CreateGoal(title="Fetched, never acked", goal_id=goal, principal=who)
    )
    old = await js.pull_subscribe(LEGACY_COMMANDS.filter, durable=LEGACY_COMMANDS.name, stream=CMDS_STREAM)
    held: list = []

    async def fetched_it() -> bool:  # the old instance fetches (earlier leftovers of the shared stream included)
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            held.extend(await old.fetch(256, timeout=1))
        return any(m.metadata.sequence.stream == fetched_seq for m in held)

    await until(fetched_it, "the old durable fetching the command")
    await old.unsubscribe()
    waiting_seq = await publish(
        tools, "core.decide_approval", p.DecideApproval(approval_id=apr.id, decision="approved", principal=who)
    )
    info = await js.consumer_info(CMDS_STREAM, LEGACY_COMMANDS.name)
    assert info.num_ack_pending >= 1 and info.num_pending >= 1 and waiting_seq > fetched_seq

    async with serving(ctx):
        await until(lambda: Goal.get(goal), "the fetched-but-unacknowledged command handled")
        await until(lambda: decided(apr), "the never-fetched command handled")
    assert not await _exists(js, LEGACY_COMMANDS.name)
    assert (await Approval.get(apr.id)).status == "approved"


async def test_a_durable_that_cannot_be_made_again_keeps_core_api_not_ready(ctx, tools) -> None:
    """Deleted, and refused when made again (another consumer on the work queue holds its subject): core-api
    says not ready until it has its durable back, and the commands that waited are handled then."""
    who, goal = await lead(), goal_id()
    durable = command_durable("core.create_goal")
    js = tools.jetstream()
    async with serving(ctx):
        await until(lambda: _exists(js, durable.name), "the durable made at start")
        await until(_ready, "ready once every durable is made")
        await js.delete_consumer(durable.stream, durable.name)
        await js.add_consumer(
            CMDS_STREAM,
            ConsumerConfig(durable_name="intruder", filter_subject=durable.filter, ack_policy=AckPolicy.EXPLICIT),
        )
        try:
            await until(lambda: _down(durable.name), "the durable reported down")
            assert not LOOPS.healthy() and "not unique" in LOOPS.down[durable.name], LOOPS.down
        finally:
            await js.delete_consumer(CMDS_STREAM, "intruder")
        await publish(tools, "core.create_goal", p.CreateGoal(title="Once it is back", goal_id=goal, principal=who))
        await until(lambda: Goal.get(goal), "the command handled by the durable made again")
        await until(_ready, "ready again")


async def _ready() -> bool:
    return LOOPS.healthy()


async def _down(name: str) -> bool:
    return name in LOOPS.down
