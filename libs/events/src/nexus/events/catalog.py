"""The subject catalog: every subject, its stream and its payload. Names here are a contract."""

import builtins
from dataclasses import dataclass

from nexus.events import payloads as p

EVENTS_STREAM = "NEXUS_EVENTS"
CMDS_STREAM = "NEXUS_CMDS"
RUNS_STREAM = "NEXUS_RUNS"
DLQ_STREAM = "NEXUS_DLQ"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    retention: str  # "limits" | "workqueue"
    max_age_s: int
    duplicate_window_s: int = 120
    description: str = ""


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(EVENTS_STREAM, ("nexus.evt.>",), "limits", 7 * 86400, description="Domain facts, many consumers."),
    StreamSpec(CMDS_STREAM, ("nexus.cmd.>",), "workqueue", 86400, description="Commands, one consumer group each."),
    StreamSpec(RUNS_STREAM, ("nexus.run.>",), "limits", 14 * 86400, description="Per-run event log, replayable."),
    StreamSpec(DLQ_STREAM, ("nexus.dlq.>",), "limits", 30 * 86400, description="Messages no consumer could handle."),
)


@dataclass(frozen=True, slots=True)
class MessageSpec:
    type: str  # the envelope's `type`
    subject: str  # a pattern; `{run_id}` is filled in per message
    payload: builtins.type  # the field `type` above shadows the builtin in this class body
    stream: str | None
    summary: str

    def subject_for(self, **params: str) -> str:
        return self.subject.format(**params)


def _run(kind: str, payload: type, summary: str) -> MessageSpec:
    return MessageSpec(f"run.{kind}", f"nexus.run.{{run_id}}.{kind}", payload, RUNS_STREAM, summary)


def _evt(name: str, payload: type, summary: str) -> MessageSpec:
    return MessageSpec(name, f"nexus.evt.{name}", payload, EVENTS_STREAM, summary)


def _cmd(name: str, payload: type, summary: str) -> MessageSpec:
    return MessageSpec(name, f"nexus.cmd.{name}", payload, CMDS_STREAM, summary)


# Session change kinds become run-event kinds: "file-write" → nexus.run.<id>.file_write.
CHANGE_KINDS = ("file-write", "command-run", "note", "file-read", "git-commit", "refused", "approval", "child-session")

MESSAGES: tuple[MessageSpec, ...] = (
    _cmd("worker.launch_run", p.LaunchRun, "core-api asks the worker to launch one attempt of a run."),
    _cmd("worker.cancel_run", p.CancelRun, "core-api asks the worker to stop a run's execution."),
    _cmd("core.create_goal", p.CreateGoal, "A gateway asks core-api to create a goal."),
    _cmd("core.decide_approval", p.DecideApproval, "A gateway relays a lead's approve/reject."),
    _cmd("core.cancel_run", p.CancelRunRequest, "A chat asks core-api to cancel a run on behalf of a bound user."),
    # On the run's own subject, so a run's credential may send its plan and no other run's.
    MessageSpec(
        "core.plan_children",
        "nexus.cmd.core.plan_children.{run_id}",
        p.PlanChildren,
        CMDS_STREAM,
        "A meta session sends its child tasks (meta-plan.json).",
    ),
    _cmd("core.fire_schedule", p.FireSchedule, "The worker's clock fires one occurrence of a schedule."),
    _cmd("core.cancel_task", p.CancelTask, "board-sync relays a card cancelled on an external board."),
    _cmd("core.follow_goal", p.FollowGoal, "core-api derives a goal's status again after one of its tasks moved."),
    _run("status", p.RunStatusChanged, "The runner's view of the run: running, waiting_approval, final."),
    _run("log", p.RunLog, "A log line from the runner."),
    _run("llm", p.LLMCalled, "One model call: tokens, cost, tool calls asked for."),
    _run("tool", p.ToolCalled, "One tool call through the hypervisor and its outcome."),
    *(_run(k.replace("-", "_"), p.SessionChanged, f"A recorded `{k}` session change.") for k in CHANGE_KINDS),
    _run("file_diff", p.FileDiff, "A file write's diff (masked, capped), for people reading the run."),
    _run("command_output", p.CommandOutput, "A command's output tail (masked, capped), for people reading the run."),
    _run(
        "session",
        p.SessionOpened,
        "A session (meta or child) opened or changed status; its end rides on the run's final status.",
    ),
    _run("heartbeat", p.Heartbeat, "The runner is alive."),
    _run("runtime", p.RuntimeChanged, "The worker's view: launched, exited, lost, launch_failed."),
    _run("approval_requested", p.ApprovalRequested, "The run paused for a human decision."),
    _run("approval_decided", p.ApprovalDecided, "core-api relays the decision to the paused run."),
    _run("child_finished", p.ChildFinished, "core-api tells a meta session that a child run ended."),
    _evt("task.created", p.TaskChanged, "A task was created."),
    _evt("task.status_changed", p.TaskChanged, "A task moved on its state machine."),
    _evt("goal.created", p.GoalChanged, "A goal was created."),
    _evt("goal.status_changed", p.GoalChanged, "A goal moved: open → planning → in_progress → done|failed|cancelled."),
    _evt("goal.reported", p.GoalReport, "A goal ended: what each child did, what it cost, how long it took."),
    _evt("budget.warning", p.BudgetAlert, "A goal's, agent's (today) or run's budget is 80% spent."),
    _evt("budget.exceeded", p.BudgetAlert, "A budget is spent: the run was stopped, or work waits for a raise."),
    _evt("run.queued", p.RunChanged, "A run was stored and its launch commanded."),
    _evt("run.started", p.RunChanged, "A run's runner reported in."),
    _evt("run.succeeded", p.RunChanged, "A run ended well."),
    _evt("run.failed", p.RunChanged, "A run ended badly after its last attempt."),
    _evt("run.cancelled", p.RunChanged, "A run was cancelled."),
    _evt("run.timed_out", p.RunChanged, "A run passed its wall-clock limit."),
    _evt("approval.requested", p.ApprovalRequested, "A run waits for a human decision."),
    _evt("approval.decided", p.ApprovalDecided, "A human (or the clock) decided."),
    _evt("board.card_moved", p.BoardCardMoved, "A card changed column or rank on the internal board."),
    _evt("board.external_changed", p.BoardExternalChanged, "A verified external board webhook, for board-sync."),
    MessageSpec("dlq", "nexus.dlq.{original_subject}", p.DeadLetter, DLQ_STREAM, "A message no consumer could handle."),
)

BY_TYPE: dict[str, MessageSpec] = {m.type: m for m in MESSAGES}


def spec(type_: str) -> MessageSpec:
    return BY_TYPE[type_]


def run_subject(run_id: str, kind: str) -> str:
    return f"nexus.run.{run_id}.{kind}"


def run_filter(run_id: str) -> str:
    return f"nexus.run.{run_id}.>"


def dlq_subject(original: str) -> str:
    return f"nexus.dlq.{original}"


def change_kind(change_type: str) -> str:
    return change_type.replace("-", "_")
