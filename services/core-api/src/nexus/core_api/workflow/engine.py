"""The run workflow's one door: each entry point takes a step (`runs`, `tasks`, `launch`) and carries
out the follow-ups it returns, in order, a follow-up's own follow-ups before the next one. This is
the only module that composes features (tasks, budgets, goals, approvals, sessions' plans); features
call it instead of calling each other."""

import asyncio
import contextlib
import dataclasses
import logging
from datetime import timedelta
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from pymongo.errors import DuplicateKeyError

from nexus.core_api.audit.service import record
from nexus.core_api.budgets.service import check_alerts, shares_for
from nexus.core_api.context import Context
from nexus.core_api import idempotency
from nexus.core_api.errors import DomainError
from nexus.core_api.goals.lifecycle import cancel_goal as stop_goal
from nexus.core_api.goals.lifecycle import reconcile
from nexus.core_api.goals.report import finish as report_goal
from nexus.core_api.board.service import publish_moved
from nexus.core_api.workflow.delegation import check_child_agent
from nexus.core_api.tasks import service as tasks_store
from nexus.core_api.tasks.schemas import TaskCreate
from nexus.core_api.workflow import ends, launch, runs, tasks
from nexus.core_api.workflow.followups import (
    Dispatch,
    Followup,
    Launch,
    NotifyParent,
    Promote,
    Publish,
    RunEnded,
    TaskFollowsRun,
    TaskMoved,
)
from nexus.db.cache import cached_get
from nexus.db.documents import Agent, Goal, Run, Task, no_run_ended, now
from nexus.db.connection import update_versioned
from nexus.db.writes import update_document, written
from nexus.domain.budgets import Cap
from nexus.domain.goals import GoalStatus
from nexus.domain.ids import derived_id, derived_ulid, new_id
from nexus.domain.json_types import JsonObject
from nexus.domain.run_facts import RUNTIME_ENDS, RuntimeFact, StatusFact
from nexus.domain.runs import RUN_FINAL, RunStatus
from nexus.domain.tasks import TASK_FINAL, TaskStatus
from nexus.events.bus import BUS_UNAVAILABLE, Outbox, when_back
from nexus.events.payloads import (
    ChildFinished,
    ChildPlan,
    FollowGoal,
    GoalChanged,
    PlanChildren,
    RunStatusChanged,
    RuntimeChanged,
    TaskChanged,
)
from nexus.observability.tracing import span, tracer

log = logging.getLogger("nexus.core_api.workflow")
TRACER = tracer("nexus.core_api")


async def carry_out(ctx: Context, then: list[Followup]) -> None:
    """Each follow-up in order, a follow-up's own follow-ups before the next one."""
    await _carry_out(ctx, list(then))


async def _carry_out(ctx: Context, pending: list[Followup]) -> None:
    """Carries out `pending` from its head; what is left stays in it when one raises (`carry_out_soon`)."""
    while pending:
        pending[:1] = await _one(ctx, pending[0])


async def _one(ctx: Context, f: Followup) -> list[Followup]:
    """One follow-up; what it asks for next."""
    match f:
        case Publish():
            await ctx.publisher.publish(f.type, f.payload, **f.options)
        case TaskMoved():
            t = f.task
            await ctx.publisher.publish(
                f.type,
                TaskChanged(
                    task_id=t.id,
                    status=t.status,
                    title=t.title,
                    goal_id=t.goal_id,
                    assignee_agent_id=t.assignee_agent_id,
                ),
                # Named by the task's version that made the move: a move announced again is taken once.
                msg_id=derived_ulid(t.id, f.type, str(t.version)),
            )
            await publish_moved(ctx, t, msg_id=derived_ulid(t.id, "board.card_moved", str(t.version)))
            if t.goal_id:  # its goal follows it (goals/handlers.py); a task in no goal asks nothing
                await ctx.publisher.publish(
                    "core.follow_goal",
                    FollowGoal(goal_id=t.goal_id, task_id=t.id),
                    msg_id=derived_ulid(t.id, "core.follow_goal", str(t.version)),
                )
        case Launch():
            await launch.command_launch(ctx, f.run, f.config)
        case Dispatch():
            await launch.dispatch_task(ctx, f.task)
        case TaskFollowsRun():
            return await tasks.follow_run(f.task_id, f.status, f.run_id, f.ended, again=f.again)
        case Promote():
            return await tasks.promote_unblocked(f.done_task_id)
        case NotifyParent():
            await _notify_parent(ctx, f.run)
        case RunEnded():
            run = f.run
            ends.stored(run.id)
            await check_alerts(ctx, goal_id=run.goal_id, agent_id=run.agent_id, run_id=run.id, reason=run.reason)
            await reconcile(ctx, run.goal_id)
    return []


async def carry_out_soon(ctx: Context, then: list[Followup]) -> bool:
    """As `carry_out`; but if the bus is out of reach, what is left is carried out in the background
    once it is back (`when_back`), and False says so: the step itself is stored, the caller can answer
    that it was taken instead of keeping its client waiting for the bus."""
    pending = list(then)
    try:
        await _carry_out(ctx, pending)
        return True
    except BUS_UNAVAILABLE as exc:
        log.warning("the bus did not answer (%r); %d follow-up(s) carried out once it is back", exc, len(pending))
    when_back(lambda: _carry_out(ctx, pending), f"{len(pending)} follow-up(s)")
    return False


# ---------------------------------------------------------------- runs
async def on_run_facts(
    ctx: Context, run_id: str, events: list[tuple[RunStatusChanged | RuntimeChanged, int]], *, again: bool = False
) -> None:
    """A run's status and runtime events of one fetch (stream order, with their sequences) as ONE write
    of the run: each recorded as it would have been alone, each transition's follow-ups carried out in
    order once the run is stored. An exit whose attempt's verdict is among them needs no look at the stream;
    one whose verdict the run holds already changes nothing and costs nothing. `again`: the events were
    handed out before and not acknowledged (the process they went to may have died after storing the
    run's end and before carrying it out): a verdict found stored already has the run's end carried out
    once more."""
    decided = _stored_verdicts(run_id)
    # An attempt's runtime end after its stored verdict changes nothing (nexus.domain.run_facts.record):
    # not even read back to be declined.
    events = [(ev, seq) for ev, seq in events if not (_runtime_end(ev) and ev.attempt in decided)]
    if not events:
        return
    facts: list[tuple[StatusFact | RuntimeFact, JsonObject]] = []
    verdicts = set(decided)  # attempts whose verdict is stored or among the facts
    for ev, seq in events:
        if isinstance(ev, RunStatusChanged):
            facts.append(runs.status_fact(ev, seq))
            if RunStatus(ev.status) in RUN_FINAL:
                verdicts.add(ev.attempt)
            continue
        if ev.phase in RUNTIME_ENDS and ev.attempt not in verdicts:
            found = await runs.verdict_in_stream(ctx, run_id, ev.attempt)
            if found is not None:  # the verdict outran its delivery to us: it, not the exit, decides the attempt
                facts.append(runs.status_fact(*found))
                verdicts.add(ev.attempt)
        facts.append((runs.runtime_fact(ev, seq), {}))
    statuses = [f for f, _ in facts if isinstance(f, StatusFact)]
    # Ingestion's step that moves the run, traced when the runner's word is among the facts (the last
    # status named); the worker's word alone (launched, exited) has no span of its own, as before.
    traced = (
        span(
            TRACER,
            "apply run.status",
            attributes={
                "nexus.run_id": run_id,
                "nexus.run.status": statuses[-1].status,
                "nexus.attempt": statuses[-1].attempt,
                "nexus.run.facts": len(facts),
            },
        )
        if statuses
        else contextlib.nullcontext()
    )
    with traced:
        _, then = await runs.apply_facts(run_id, facts, again=again)
        if ctx.settings.fault_pause_after_end_s and any(isinstance(f, TaskFollowsRun) for f in then):
            await asyncio.sleep(ctx.settings.fault_pause_after_end_s)  # the fault matrix's `ending` point
        await carry_out(ctx, then)


def _runtime_end(ev: RunStatusChanged | RuntimeChanged) -> bool:
    return isinstance(ev, RuntimeChanged) and ev.phase in RUNTIME_ENDS


def _stored_verdicts(run_id: str) -> set[int]:
    """Attempts whose verdict the run, as this process last wrote it, holds already: their exit needs
    no look at the stream (a verdict once stored is never taken back, so the copy can only lack one)."""
    run = written.peek(Run, run_id)
    return {a["n"] for a in run.attempts if a.get("verdict")} if run is not None else set()


async def cancel_run(ctx: Context, run_id: str, reason: str) -> tuple[Run | None, bool]:
    """The run ended by an operator, stored at once; True when its runner was told to stop too, False when
    the bus was out of reach: the worker is told (and the end announced) once it is back."""
    run, then = await runs.cancel(run_id, reason)
    return run, await carry_out_soon(ctx, then)


async def retry_run(ctx: Context, old: Run) -> Run:
    run, then = await launch.retry_run(old)
    await carry_out(ctx, then)
    return run


async def dispatch(ctx: Context, task: Task) -> Run | None:
    return await launch.dispatch_task(ctx, task)


async def requeue_stale(ctx: Context) -> int:
    """A run still `queued` long after its launch was commanded (core-api died before publishing,
    or the message was lost) is commanded again; the worker drops duplicates."""
    cutoff = now() - timedelta(seconds=ctx.settings.requeue_after_s)
    n = 0
    async for run in Run.find({"status": "queued", "updated_at": {"$lt": cutoff}}):
        try:
            await launch.command_launch(ctx, run)
        except launch.NoConfig:  # its store was cut between the run and its config (they go out together)
            log.error("run %s is queued but has no stored config; it cannot be launched: failed", run.id)
            _, then = await runs.finish(run.id, RunStatus.FAILED, "its config was not stored: it cannot be launched")
            await carry_out(ctx, then)
            continue
        await update_document(Run, run.id, {"$set": {"updated_at": now()}})
        n += 1
    return n


async def release_orphans(ctx: Context) -> int:
    """A task claimed for a run that was never stored (core-api lost between the claim and the run's
    insert) would wait for that run forever: its claim is released and it is dispatched again. A task
    still in progress whose run ended (core-api lost after storing the run's end and before carrying it
    out, or its end left for a bus that came back after this process died) has the run's end carried out
    again. Only claims and ends older than the requeue delay are looked at, so a dispatch or an end
    under way is never taken for one."""
    cutoff = now() - timedelta(seconds=ctx.settings.requeue_after_s)
    claims = {
        doc["current_run_id"]: doc["_id"]
        async for doc in Task.get_pymongo_collection().find(
            {"status": TaskStatus.IN_PROGRESS.value, "updated_at": {"$lt": cutoff}}, {"current_run_id": 1}
        )
        if doc.get("current_run_id")
    }
    if not claims:
        return 0
    stored = {
        doc["_id"]: doc["status"]
        async for doc in Run.get_pymongo_collection().find({"_id": {"$in": list(claims)}}, {"status": 1})
    }
    n = 0
    for run_id in claims.keys() - stored.keys():
        task_id = claims[run_id]
        released = await update_versioned(Task, task_id, _unclaim(run_id))
        if released is None:
            continue
        log.warning("task %s was claimed for run %s, which was never stored: dispatched again", task_id, run_id)
        await launch.dispatch_task(ctx, released)
        n += 1
    ended = [run_id for run_id, status in stored.items() if RunStatus(status) in RUN_FINAL]
    if ended:
        async for run in Run.find({"_id": {"$in": ended}, "updated_at": {"$lt": cutoff}}):
            log.warning(
                "run %s ended %s, and its task still waits for it: its end is carried out again", run.id, run.status
            )
            await carry_out(ctx, runs.end_followups(run, again=True))
            n += 1
    return n


async def dispatch_waiting(ctx: Context) -> int:
    """A ready, assigned task is always dispatched: one stored by a core-api that died before dispatching
    it (a goal's planning task, a planned child, a task its blockers' end made ready) is dispatched here
    once it has waited longer than the requeue delay. A task a spent budget holds back (`blocked`) waits
    for the budget's raise; one whose agent is gone waits for it to be assigned anew."""
    cutoff = now() - timedelta(seconds=ctx.settings.requeue_after_s)
    n = 0
    async for task in Task.find(
        {"status": TaskStatus.READY.value, "assignee_agent_id": {"$ne": None}, "updated_at": {"$lt": cutoff}}
    ):
        if task.blocked:
            continue
        agent = await cached_get(Agent, task.assignee_agent_id or "")
        if agent is None or agent.deleted:
            continue
        if await launch.dispatch_task(ctx, task) is not None:
            log.warning("task %s was ready and never dispatched: dispatched now", task.id)
            n += 1
    return n


def _unclaim(run_id: str) -> Callable[[Task], JsonObject | None]:
    def mutate(t: Task) -> JsonObject | None:
        claimed = t.status == TaskStatus.IN_PROGRESS.value and t.current_run_id == run_id
        return {"status": TaskStatus.READY.value, "current_run_id": None} if claimed else None

    return mutate


# ---------------------------------------------------------------- tasks
async def create_task(ctx: Context, data: TaskCreate, *, actor: str, **extra: Any) -> Task:  # extra: Task fields
    task = await tasks_store.create(data, actor=actor, **extra)
    await announce_created(ctx, task)
    return task


async def submit_task(
    ctx: Context,
    data: TaskCreate,
    *,
    actor: str,
    audit: Callable[[Task], Awaitable[None]],
    task_id: str | None = None,
) -> Task:
    """A task asked for over the API: stored and audited before anything is announced. When it can run
    at once it is stored already claimed by its run — one write of the task instead of an insert and
    a claim; nobody else can claim a task not yet stored — and its events are those of a task created
    (ready) then claimed, in that order."""
    task = await tasks_store.build(data, actor=actor, task_id=task_id)
    prepared = await launch.prepare(ctx, task)
    created = task.model_copy()  # as created, before the claim: what `task.created` says
    if prepared is not None:
        for name, value in launch.claim(prepared).items():
            setattr(task, name, value)
    await tasks_store.store(task)
    if prepared is not None:
        # The claim's run and the audit entry, written at once (the task they name is stored); both
        # before anything is announced. One failing fails the request: a run stored without its audit
        # entry is launched by the requeue sweep, a claim whose run was not stored is released.
        await asyncio.gather(launch.store(prepared), audit(task))
    else:
        await audit(task)
    # Announced together, in order: one round trip to the bus for all of them instead of one each.
    outbox = Outbox(ctx.publisher)
    announcing = dataclasses.replace(ctx, publisher=outbox)
    await announce_created(announcing, created)
    if prepared is not None:
        await launch.announce_start(announcing, prepared, task)
    try:
        await outbox.release()
    except BUS_UNAVAILABLE as exc:
        # Everything is stored: the task is created, its run queued, and the requeue sweep commands the
        # launch once the bus answers. Failing the request would only invite a second, duplicate task.
        log.warning(
            "task %s stored%s, but the bus did not answer its announcements (%r); its run's launch is left to "
            "the requeue sweep",
            task.id,
            f" with run {prepared.run.id} queued" if prepared else "",
            exc,
        )
    return task


async def submit_task_once(
    ctx: Context, data: TaskCreate, key: str | None, *, actor: str, audit: Callable[[Task], Awaitable[None]]
) -> Task:
    """`submit_task`, made once per idempotency key (`nexus.core_api.idempotency`): asked again, the task
    the first request stored (its run included), or, when that request died before storing it, made now
    under the id it chose."""
    if key is None:
        return await submit_task(ctx, data, actor=actor, audit=audit)
    got = await idempotency.claim(actor, "task", key, data, "task")
    if not got.first and (task := written.peek(Task, got.resource_id) or await Task.get(got.resource_id)):
        return task
    try:
        return await submit_task(ctx, data, actor=actor, audit=audit, task_id=got.resource_id)
    except DuplicateKeyError:  # the same request, asked at once, stored it first
        return written.peek(Task, got.resource_id) or await Task.get(got.resource_id)  # type: ignore[return-value]


async def announce_created(ctx: Context, task: Task) -> None:
    await carry_out(ctx, [TaskMoved("task.created", task)])


async def move_task(ctx: Context, task_id: str, target: TaskStatus) -> Task:
    task, then = await tasks.move(task_id, target)
    await carry_out(ctx, then)
    return task


async def release(ctx: Context, query: JsonObject) -> list[str]:
    """After a budget's raise: every ready task the query finds that a budget held back is tried again."""
    started = []
    async for task in Task.find({**query, "status": TaskStatus.READY.value, "blocked": {"$gt": ""}}):
        await update_document(Task, task.id, {"$set": {"blocked": ""}})
        task.blocked = ""
        if await launch.dispatch_task(ctx, task) is not None:
            started.append(task.id)
    return started


# ---------------------------------------------------------------- goals
async def create_goal(
    ctx: Context,
    title: str,
    description: str,
    *,
    created_by: str,
    meta_agent_id: str | None = None,
    repository_id: str | None = None,
    goal_id: str | None = None,
    budget: Cap | None = None,
) -> Goal:
    goal = Goal(
        id=goal_id or new_id("goal"),
        title=title,
        description=description,
        created_by=created_by,
        meta_agent_id=meta_agent_id,
        repository_id=repository_id,
        budget=msgspec.to_builtins(budget) if budget is not None and not budget.empty else {},
    )
    await goal.insert()
    await _announce_goal(ctx, goal)
    if meta_agent_id:
        await start_meta_session(ctx, goal)
    return goal


async def _announce_goal(ctx: Context, goal: Goal) -> None:
    # named by its goal: announced again by the sweep after a crash, it is taken once
    await ctx.publisher.publish(
        "goal.created",
        GoalChanged(goal_id=goal.id, title=goal.title, status=GoalStatus.OPEN.value),
        msg_id=derived_ulid(goal.id, "goal.created"),
    )


def planning_task_id(goal_id: str) -> str:
    """A goal's planning task is named by its goal: a second start (the sweep after a core-api died
    between storing the goal and its planning task, two sweeps at once) finds it instead of making one."""
    return derived_id("task", goal_id, "plan")


async def start_meta_session(ctx: Context, goal: Goal) -> None:
    """The goal's decomposition is itself a task, run by the meta agent as a session with no parent."""
    task = Task(
        id=planning_task_id(goal.id),
        title=f"Plan: {goal.title}",
        description=goal.description,
        goal_id=goal.id,
        status="ready",
        assignee_agent_id=goal.meta_agent_id,
        repository_id=goal.repository_id,
        is_meta=True,
        created_by=goal.created_by,
        run_brief=no_run_ended(),
    )
    try:
        await task.insert()
    except DuplicateKeyError:
        stored = await Task.get(task.id)
        if stored is None:
            raise
        task = stored
    run = await launch.dispatch_task(ctx, task)
    await _note_meta_run(goal, run.id if run is not None else task.current_run_id)
    await reconcile(ctx, goal.id)


async def _note_meta_run(goal: Goal, run_id: str | None) -> None:
    if run_id and goal.meta_run_id != run_id:
        await update_document(Goal, goal.id, {"$set": {"meta_run_id": run_id}})
        goal.meta_run_id = run_id


async def plan_unplanned_goals(ctx: Context) -> int:
    """A goal stored by a core-api that died before its planning task was (or before the task's run was
    noted on the goal) is planned here once it has waited longer than the requeue delay. A goal still
    `open` that long has not started planning; its planning task is created if missing (named by the
    goal, so once), dispatched by `dispatch_waiting` if it was stored and not dispatched, and its run
    noted on the goal once it has one."""
    cutoff = now() - timedelta(seconds=ctx.settings.requeue_after_s)
    n = 0
    async for goal in Goal.find({"status": GoalStatus.OPEN.value, "created_at": {"$lt": cutoff}}):
        n += await ensure_planned(ctx, goal)
    return n


async def ensure_planned(ctx: Context, goal: Goal) -> bool:
    """What a goal's create left undone, done (True when something was): its announcement and planning
    task when it has none, its planning run noted on it. Safe beside a create still under way."""
    if not goal.meta_agent_id or GoalStatus(goal.status) != GoalStatus.OPEN:
        return False
    task = await Task.find_one({"goal_id": goal.id, "is_meta": True})
    if task is None:
        log.warning("goal %s was stored without its planning task: announced and planned now", goal.id)
        await _announce_goal(ctx, goal)
        await start_meta_session(ctx, goal)
        return True
    if task.current_run_id and goal.meta_run_id is None:
        await _note_meta_run(goal, task.current_run_id)
        await reconcile(ctx, goal.id)
        return True
    return False


async def create_goal_once(ctx: Context, key: str | None, body: msgspec.Struct, **create: Any) -> Goal:
    """`create_goal`, made once per idempotency key (`nexus.core_api.idempotency`): asked again, the
    goal the first request stored, with whatever that request did not live to do done now."""
    if key is None:
        return await create_goal(ctx, **create)
    got = await idempotency.claim(create["created_by"], "goal", key, body, "goal")
    if not got.first and (goal := await Goal.get(got.resource_id)) is not None:
        await ensure_planned(ctx, goal)
        return goal
    try:
        return await create_goal(ctx, **create, goal_id=got.resource_id)
    except DuplicateKeyError:  # the same request, asked at once, stored it first
        return await Goal.get(got.resource_id)  # type: ignore[return-value]  # stored: its insert refused ours


async def cancel_goal(ctx: Context, goal_id: str, by: str) -> Goal:
    """A user ends the goal: cancelled at once, then every run still going is cancelled and every
    task not yet final with it. 409 naming the rule when the goal already ended."""
    work = await stop_goal(ctx, goal_id, by)
    # The meta session first: it must not end on its own when it hears its children were cancelled.
    for task in sorted(work, key=lambda t: not t.is_meta):
        if TaskStatus(task.status) in TASK_FINAL:
            continue
        run = (
            (await cancel_run(ctx, task.current_run_id, f"goal {goal_id} cancelled by {by}"))[0]
            if task.current_run_id
            else None
        )
        if run is None:
            try:
                await move_task(ctx, task.id, TaskStatus.CANCELLED)
            except Exception as exc:  # noqa: BLE001 — a task that moved on meanwhile is left where it is
                log.info("goal %s: task %s not cancelled: %s", goal_id, task.id, exc)
    await report_goal(ctx, goal_id)
    return await Goal.get(goal_id)  # type: ignore[return-value]  # read above: it exists


# ---------------------------------------------------------------- meta sessions
async def plan_children(ctx: Context, cmd: PlanChildren) -> list[Task]:
    """A meta run's plan becomes child tasks (each a run with its parent session set), each given
    its share of what is left of the goal's budget; a child that cannot exist is reported ended."""
    parent = await Run.get(cmd.run_id)
    if parent is None:
        raise ValueError(f"plan for unknown run {cmd.run_id}")
    parent_task = await Task.get(parent.task_id)
    created: list[Task] = []
    # The goal's budget (what is left of it) is split among the children planned together.
    shares = await shares_for(parent.goal_id, [c.weight for c in cmd.children])
    for child, share in zip(cmd.children, shares, strict=True):
        existing = await Task.find_one({"session_id": child.session_id})
        if existing is not None:  # a redelivered plan creates nothing twice…
            created.append(existing)
            # …and dispatches what the first handling stored and did not live to dispatch (a no-op otherwise).
            await launch.dispatch_task(ctx, existing)
            continue
        try:
            task = await _create_child(ctx, parent, parent_task, cmd.session_id, child, share)
        except DomainError as exc:  # the plan names an agent that does not exist, or one it may not delegate to
            log.warning("meta run %s: child %s cannot be planned: %s", parent.id, child.session_id, exc.detail)
            await record(None, "session.child_refused", f"runs/{parent.id}", after_id=child.session_id)
            await _report_unplannable(ctx, parent, child.session_id, exc.detail)
            continue
        created.append(task)
        await launch.dispatch_task(ctx, task)
    log.info("meta run %s planned %d children", parent.id, len(created))
    await reconcile(ctx, parent.goal_id)
    return created


async def _create_child(
    ctx: Context, parent: Run, parent_task: Task | None, meta_session_id: str, child: ChildPlan, share: Cap
) -> Task:
    assignee = await check_child_agent(parent, child.agent_id)
    return await create_task(
        ctx,
        TaskCreate(
            title=child.title,
            description=child.description,
            goal_id=parent.goal_id,
            assignee=assignee,
            repository=parent_task.repository_id if parent_task else None,
        ),
        actor=f"run:{parent.id}",
        parent_run_id=parent.id,
        parent_session_id=meta_session_id,
        session_id=child.session_id,
        target_files=list(child.target_files),
        budget=msgspec.to_builtins(share),
        budget_weight=child.weight,
    )


async def _report_unplannable(ctx: Context, parent: Run, session_id: str, reason: str) -> None:
    """The meta session waits for every child it planned: one that cannot exist ends at once, failed."""
    await ctx.publisher.publish(
        "run.child_finished",
        ChildFinished(session_id=session_id, run_id="", task_id="", status="failed", reason=f"not planned: {reason}"),
        run_id=parent.id,
    )


async def _notify_parent(ctx: Context, run: Run) -> None:
    """Each child's end is reported on its meta run's own subject, where the meta runner waits."""
    await ctx.publisher.publish(
        "run.child_finished",
        ChildFinished(
            session_id=run.session_id,
            run_id=run.id,
            task_id=run.task_id,
            status=run.status,
            summary=run.summary,
            reason=run.reason,
        ),
        run_id=run.parent_run_id or "",
        msg_id=derived_ulid(run.id, "run.child_finished", run.status),  # told again after a crash: taken once
    )
