"""From a ready task to a commanded run: assemble the run config once, store the run, command the worker."""

import logging
from dataclasses import dataclass

import msgspec

from nexus.core_api.budgets.service import Blocked, allowance, block
from nexus.core_api.context import Context
from nexus.core_api.memory.select import select_memory
from nexus.core_api.prices.service import price_for
from nexus.core_api.runs.known import remember
from nexus.core_api.skills.service import resolve as resolve_skills
from nexus.core_api.workflow.followups import Followup, Launch, TaskMoved
from nexus.db.cache import cached_get
from nexus.db.connection import update_versioned
from nexus.db.documents import Agent, Repository, Run, Task
from nexus.db.run_configs import config_of, store_run
from nexus.db.writes import update_document, written
from nexus.domain.agents import LLMSpec, Limits, MemoryPolicy, Permissions
from nexus.domain.budgets import Cap
from nexus.domain.ids import new_id, new_ulid
from nexus.domain.json_types import JsonObject
from nexus.domain.limits import within_bounds
from nexus.domain.tasks import TaskStatus
from nexus.events.payloads import LaunchRun, RepoSpec, RunChanged, RunConfig, TaskBrief, TaskChanged

log = logging.getLogger("nexus.core_api.dispatch")


async def assemble_config(
    task: Task,
    agent: Agent,
    run_id: str,
    session_id: str,
    *,
    approval_ttl_s: float | None = None,
    budget: Cap | None = None,
    price: tuple[float, float] | None = None,
) -> RunConfig:
    """The run's config, built once: the agent's stored spec parts are read into their types here,
    and this value is what is stored (as a document) and sent."""
    spec = agent.spec
    skills = await resolve_skills(spec.get("skills", []))
    repo_doc = await Repository.get(task.repository_id) if task.repository_id else None
    policy = within_bounds(spec.get("memory_policy", {}), MemoryPolicy)
    memory = await select_memory(
        policy, agent_id=agent.id, repository_id=task.repository_id, query=f"{task.title}\n{task.description}"
    )
    repo = None
    secrets = list(spec.get("secrets", []))
    if repo_doc is not None:
        repo = RepoSpec(
            url=repo_doc.url,
            ref=repo_doc.default_branch,
            branch=f"nexus/{task.id}/{run_id}",
            target_branch=repo_doc.default_branch,
            credentials_secret=repo_doc.credentials_secret,
        )
        if repo_doc.credentials_secret:
            secrets.append(repo_doc.credentials_secret)
    return RunConfig(
        run_id=run_id,
        agent_id=agent.id,
        agent_revision=agent.revision,
        task_id=task.id,
        session_id=session_id,
        parent_session_id=task.parent_session_id,
        system_prompt=msgspec.convert(spec["system_prompt"], str),
        skills=[s.content for s in skills],
        memory=memory,
        tools=msgspec.convert(spec.get("tools", []), list[str]),
        permissions=within_bounds(spec.get("permissions", {}), Permissions),
        llm=within_bounds(spec.get("llm", {}), LLMSpec),
        limits=within_bounds(spec.get("limits", {}), Limits),
        secrets=sorted(set(secrets)),
        task=TaskBrief(
            title=task.title, description=task.description, goal_id=task.goal_id, target_files=list(task.target_files)
        ),
        repo=repo,
        meta=task.is_meta,
        approval_ttl_s=approval_ttl_s,
        budget=budget if budget is not None and not budget.empty else None,
        price=price,
    )


async def command_launch(ctx: Context, run: Run, config: RunConfig | None = None) -> None:
    """(Re)publish the launch of the run's current attempt. The message id is stored on the run, so a
    re-publish inside JetStream's duplicate window is dropped by the server, and the worker's own
    attempt check drops it after that. `config` is the run's, when the caller holds it; else it is
    read as stored (`stored_config`)."""
    msg_id = run.launch_msg_id or new_ulid()
    if not run.launch_msg_id:
        await update_document(Run, run.id, {"$set": {"launch_msg_id": msg_id}})
        run.launch_msg_id = msg_id
    cfg = config if config is not None else await stored_config(run.id)
    await ctx.publisher.publish(
        "worker.launch_run",
        LaunchRun(attempt=run.attempt, config=cfg, priority=run.priority),
        msg_id=msg_id,
        correlation_id=run.id,
    )


class NoConfig(LookupError):
    """A run whose config is not stored (it cannot be launched or retried)."""


async def stored_config(run_id: str) -> RunConfig:
    """The run's config as it was assembled (its own document, or inline on a run stored before)."""
    raw = await config_of(run_id)
    if raw is None:
        raise NoConfig(f"run {run_id} has no stored config")
    return within_bounds(raw, RunConfig)


@dataclass(frozen=True)
class Prepared:
    """A run made ready for a task (its config assembled), not yet stored: the task is claimed for it
    (a compare-and-set, or stored claimed when it is new), then `start` stores and launches it."""

    run: Run
    config: RunConfig
    agent: Agent


async def prepare(ctx: Context, task: Task) -> Prepared | None:
    """A run for a ready, assigned task, or None: no such agent, or a spent budget (the task then
    stays ready, saying why — `blocked` — until it is raised)."""
    if task.status != TaskStatus.READY.value or not task.assignee_agent_id:
        return None
    agent = await cached_get(Agent, task.assignee_agent_id)
    if agent is None or agent.deleted:
        log.warning("task %s is assigned to a missing agent %s", task.id, task.assignee_agent_id)
        return None
    try:
        budget = await allowance(ctx, task, agent)
    except Blocked as exc:
        await block(ctx, task, str(exc))
        return None
    run_id = new_id("run")
    session_id = task.session_id or new_id("ses")
    price = await price_for(agent.spec.get("llm", {}).get("model", "scripted"))
    config = await assemble_config(
        task, agent, run_id, session_id, approval_ttl_s=ctx.settings.approval_ttl_s, budget=budget, price=price
    )
    run = Run(
        id=run_id,
        task_id=task.id,
        agent_id=agent.id,
        agent_revision=agent.revision,
        goal_id=task.goal_id,
        session_id=session_id,
        parent_session_id=task.parent_session_id,
        parent_run_id=task.parent_run_id,
        wall_clock_s=config.limits.wall_clock_s,
        max_attempts=ctx.settings.max_attempts,
        priority=task.priority,
        launch_msg_id=new_ulid(),  # stored with the run: its launch command needs no second write
    )
    return Prepared(run, config, agent)


def claim(prepared: Prepared) -> JsonObject:
    """What a task claimed by the prepared run holds."""
    return {"status": TaskStatus.IN_PROGRESS.value, "current_run_id": prepared.run.id, "blocked": ""}


async def dispatch_task(ctx: Context, task: Task) -> Run | None:
    """Start a run for a ready, assigned task. Safe to call twice: only one caller wins the task."""
    prepared = await prepare(ctx, task)
    if prepared is None:
        return None
    # Claim the task first (compare-and-set on its version): a second dispatcher loses here.
    claimed = await update_versioned(
        Task, task.id, lambda t: claim(prepared) if t.status == TaskStatus.READY.value else None
    )
    if claimed is None:
        return None
    return await start(ctx, prepared, claimed)


async def start(ctx: Context, prepared: Prepared, claimed: Task) -> Run:
    """The prepared run of a task claimed for it: stored, announced, its launch commanded."""
    await store(prepared)
    return await announce_start(ctx, prepared, claimed)


async def store(prepared: Prepared) -> None:
    """The run and its config, stored queued. From here on it is not lost: were its launch never
    commanded (a crash, the bus out of reach), the requeue sweep commands it."""
    run, agent = prepared.run, prepared.agent
    await store_run(run, msgspec.to_builtins(prepared.config))  # with the runs concurrent dispatches store
    written.keep(Run, run.id, run)  # its first transition starts from it instead of reading it back
    remember(run.id, agent.id)  # its events are accepted, its model calls counted, without looking it up


async def announce_start(ctx: Context, prepared: Prepared, claimed: Task) -> Run:
    """The stored run's task announced as claimed, its launch commanded, the run announced queued."""
    run, agent = prepared.run, prepared.agent
    await ctx.publisher.publish(
        "task.status_changed",
        TaskChanged(
            task_id=claimed.id,
            status=claimed.status,
            title=claimed.title,
            goal_id=claimed.goal_id,
            assignee_agent_id=agent.id,
        ),
    )
    await command_launch(ctx, run, prepared.config)
    await ctx.publisher.publish(
        "run.queued",
        RunChanged(run_id=run.id, task_id=claimed.id, agent_id=agent.id, status=run.status, attempt=run.attempt),
    )
    log.info("dispatched task %s as run %s (agent %s rev %d)", claimed.id, run.id, agent.name, agent.revision)
    return run


def retried_config(old: Run, cfg: RunConfig, run_id: str, session_id: str) -> RunConfig:
    """A retry's config: the ended run's (`cfg`), as a new run with its own session and working branch."""
    repo = cfg.repo and msgspec.structs.replace(cfg.repo, branch=f"nexus/{old.task_id}/{run_id}")
    return msgspec.structs.replace(cfg, run_id=run_id, session_id=session_id, repo=repo)


async def retry_run(old: Run) -> tuple[Run, list[Followup]]:
    """A new run of the ended run's task, same pinned agent revision and config: stored, its task
    claimed; announcing the task and launching the run are its follow-ups."""
    run_id = new_id("run")
    session_id = new_id("ses")
    config = retried_config(old, await stored_config(old.id), run_id, session_id)
    run = Run(
        id=run_id,
        task_id=old.task_id,
        agent_id=old.agent_id,
        agent_revision=old.agent_revision,
        goal_id=old.goal_id,
        session_id=session_id,
        parent_session_id=old.parent_session_id,
        parent_run_id=old.parent_run_id,
        wall_clock_s=config.limits.wall_clock_s,
        max_attempts=old.max_attempts,
        priority=old.priority,
    )
    await store_run(run, msgspec.to_builtins(config))
    task = await update_versioned(
        Task, old.task_id, lambda t: {"status": TaskStatus.IN_PROGRESS.value, "current_run_id": run_id}
    )
    then: list[Followup] = [] if task is None else [TaskMoved("task.status_changed", task)]
    return run, [*then, Launch(run, config)]
