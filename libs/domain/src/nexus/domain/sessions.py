"""The session contract: what an AI actually did, change by change.

Field names on the wire are camelCase (relPath, exitCode, parentSessionId) as in the session contract."""

from typing import Literal

import msgspec

SessionStatus = Literal["active", "completed", "error"]


class _Change(msgspec.Struct, tag_field="type", rename="camel", kw_only=True, forbid_unknown_fields=True):
    timestamp: str
    seq: int = 0
    # Tamper evidence: each change carries the hash of the one before it and its own.
    prev_hash: str = ""
    hash: str = ""


class FileWriteChange(_Change, tag="file-write"):
    rel_path: str
    bytes: int = 0
    sha256: str = ""


class CommandRunChange(_Change, tag="command-run"):
    cmd: str
    exit_code: int
    duration_ms: int = 0
    output_truncated: bool = False
    # Files the command created, changed or deleted in the workspace, named or not: the first
    # `changeset.MAX_ITEMISED` are the file-write changes recorded just before this one.
    files_changed: int = 0


class NoteChange(_Change, tag="note"):
    message: str


class FileReadChange(_Change, tag="file-read"):
    rel_path: str


class GitCommitChange(_Change, tag="git-commit"):
    sha: str
    branch: str
    message: str = ""


class RefusedChange(_Change, tag="refused"):
    """A tool call the hypervisor refused: recorded, never silently dropped."""

    tool: str
    reason: str
    detail: str = ""


class ApprovalChange(_Change, tag="approval"):
    action: str
    decision: Literal["requested", "approved", "rejected", "expired"]
    approval_id: str = ""


class ChildSessionChange(_Change, tag="child-session"):
    child_session_id: str
    task_id: str = ""


SessionChange = (
    FileWriteChange
    | CommandRunChange
    | NoteChange
    | FileReadChange
    | GitCommitChange
    | RefusedChange
    | ApprovalChange
    | ChildSessionChange
)


class SessionState(msgspec.Struct, rename="camel", kw_only=True):
    session_id: str
    project_path: str
    parent_session_id: str | None = None
    backend: str = "scripted"
    # How the session's commands are confined: "bwrap", "landlock" or "none" (see the hypervisor's sandbox).
    sandbox: str = ""
    status: SessionStatus = "active"
    run_id: str | None = None
    notes: list[str] = msgspec.field(default_factory=list)
    changes: list[SessionChange] = msgspec.field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""
