"""The BoardProvider contract: what board-sync asks of any board, Plane, Jira or the internal one.

A provider maps the internal task status to its own states through five state groups (Plane's
words): backlog, unstarted, started, completed, cancelled."""

import re
from typing import Protocol

import msgspec

MARKER_SOURCE = "nexus"  # the external source under which items carry the task id
TITLE_MAX = 255  # Plane's work-item name and Jira's summary hold at most this many characters
DESCRIPTION_MAX = 32_767  # Jira's limit on a rich-text field (the task's own is far longer)
_BREAKS = re.compile(r"\s*[\r\n\t\v\f]+\s*")


def fit_title(title: str) -> str:
    """A task title as an external board can hold it: one line (Jira refuses a summary with a line
    break), at most TITLE_MAX characters (both refuse a longer one with a 400), cut with an ellipsis."""
    line = _BREAKS.sub(" ", title).strip()
    return line if len(line) <= TITLE_MAX else line[: TITLE_MAX - 1].rstrip() + "…"


def fit_description(text: str) -> str:
    """A task description as an external board can hold it: cut with an ellipsis past DESCRIPTION_MAX."""
    return text if len(text) <= DESCRIPTION_MAX else text[: DESCRIPTION_MAX - 1] + "…"


class Card(msgspec.Struct, kw_only=True):
    """What an item on an external board should show for one task."""

    task_id: str
    title: str
    description: str = ""
    status: str = "backlog"  # the internal task status
    assignee: str | None = None  # a provider's member id (mapped by configuration)
    labels: list[str] = msgspec.field(default_factory=list)


class Fields(msgspec.Struct, kw_only=True, omit_defaults=True):
    title: str | None = None
    description: str | None = None
    assignee: str | None = None
    labels: list[str] | None = None


class ExternalItem(msgspec.Struct, kw_only=True):
    id: str
    external_id: str  # the task id the item was created for
    title: str
    description: str
    group: str  # the state group the item is in
    key: str = ""  # a human key (PROJ-12), when the board has one
    assignee: str | None = None
    labels: list[str] = msgspec.field(default_factory=list)
    url: str = ""


class Comment(msgspec.Struct, kw_only=True):
    id: str
    text: str


def same_comment(comments: list[Comment], text: str) -> Comment | None:
    """The comment among `comments` that is `text`: a comment is known by its first line (each of board-sync's
    names there what it is about: a run, a webhook delivery), which a board keeps as it was written."""
    heading = text.split("\n", 1)[0]
    return next((c for c in comments if c.text.split("\n", 1)[0] == heading), None)


class ProviderError(Exception):
    """A provider call failed for a reason that will not go away by retrying (bad request)."""


class AuthFailed(ProviderError):
    """The credential was refused (401/403): a configuration problem, not an outage."""


class NotFound(ProviderError):
    pass


class Unavailable(Exception):
    """The provider is out (5xx, connection refused, or still rate-limited after retries):
    the change stays queued and is tried again."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(Unavailable):
    pass


GROUP_OF_STATUS = {
    "backlog": "backlog",
    "ready": "unstarted",
    "in_progress": "started",
    "in_review": "started",
    "done": "completed",
    "failed": "cancelled",
    "cancelled": "cancelled",
}


def group_of(status: str) -> str:
    return GROUP_OF_STATUS.get(status, "backlog")


class BoardProvider(Protocol):
    name: str

    async def create_item(self, card: Card) -> ExternalItem: ...

    async def find_by_external_id(self, task_id: str) -> ExternalItem | None: ...

    async def get_item(self, item_id: str) -> ExternalItem: ...

    async def update_status(self, item_id: str, group: str) -> None: ...

    async def update_fields(self, item_id: str, fields: Fields) -> None: ...

    # Each write below is made once, even when its answer is lost (looked for before it is sent again):
    # a comment is known by its first line (`same_comment`), a link by its URL.
    async def add_comment(self, item_id: str, text: str) -> Comment: ...

    async def link(self, item_id: str, title: str, url: str) -> None: ...

    async def list_comments(self, item_id: str) -> list[Comment]: ...

    async def aclose(self) -> None: ...
