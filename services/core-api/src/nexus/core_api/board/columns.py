"""The board's columns, derived from the task's status (and, while it runs, its run's status)."""

from nexus.domain.tasks import TaskStatus

COLUMNS: tuple[tuple[str, str], ...] = (
    ("backlog", "Backlog"),
    ("ready", "Ready"),
    ("running", "Running"),
    ("waiting_approval", "Waiting approval"),
    ("in_review", "In review"),
    ("done", "Done"),
    ("failed_cancelled", "Failed / cancelled"),
)
COLUMN_IDS = tuple(c for c, _ in COLUMNS)

# Where a person may drop a card, and the task status that means. Running and waiting for an
# approval are entered only by a run.
TARGET_STATUS: dict[str, TaskStatus] = {
    "backlog": TaskStatus.BACKLOG,
    "ready": TaskStatus.READY,
    "in_review": TaskStatus.IN_REVIEW,
    "done": TaskStatus.DONE,
    "failed_cancelled": TaskStatus.CANCELLED,
}


def column_of(task_status: str, run_status: str | None = None) -> str:
    match task_status:
        case "in_progress":
            return "waiting_approval" if run_status == "waiting_approval" else "running"
        case "failed" | "cancelled":
            return "failed_cancelled"
        case status:
            return status if status in COLUMN_IDS else "backlog"
