"""What a transition asks to happen after it stored its move; `engine.carry_out` does them in order."""

from dataclasses import dataclass, field
from typing import Any

from nexus.domain.json_types import JsonObject
from nexus.db.documents import Run, Task
from nexus.domain.tasks import TaskStatus
from nexus.events.payloads import RunConfig


@dataclass(frozen=True)
class Publish:
    """An event of the domain; `options` are the publisher's (correlation_id, run_id, msg_id)."""

    type: str
    payload: Any
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskMoved:
    """A task changed: its event (`task.created`, `task.status_changed`) and its card's move."""

    type: str
    task: Task


@dataclass(frozen=True)
class Launch:
    """Command the worker to launch the run's current attempt (with its config, when the step holds it)."""

    run: Run
    config: RunConfig | None = None


@dataclass(frozen=True)
class Dispatch:
    """A ready task becomes a run."""

    task: Task


@dataclass(frozen=True)
class TaskFollowsRun:
    """The run decided its task's fate."""

    task_id: str
    status: TaskStatus
    run_id: str
    ended: JsonObject | None = None  # the run as it ended: {"id", "status", "attempt", "cost_usd"}
    # The run's end is carried out again (its first carrying out may have died half-way): a task that
    # already follows it is announced again, not left as it is.
    again: bool = False


@dataclass(frozen=True)
class Promote:
    """A task is done: the backlog tasks it blocked may become ready."""

    done_task_id: str


@dataclass(frozen=True)
class NotifyParent:
    """A child run ended: its meta run hears of it on its own subject."""

    run: Run


@dataclass(frozen=True)
class RunEnded:
    """A run's end may move its goal and may have spent a budget."""

    run: Run


Followup = Publish | TaskMoved | Launch | Dispatch | TaskFollowsRun | Promote | NotifyParent | RunEnded
