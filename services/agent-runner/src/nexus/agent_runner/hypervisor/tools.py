"""The tool table: each tool's argument type (validated with msgspec) and its JSON Schema,
as the LLM sees it. Tool names are a contract with agent documents and the runner."""

from functools import cache
from typing import Annotated

import msgspec

Doc = msgspec.Meta


class ToolResult(msgspec.Struct, kw_only=True):
    ok: bool
    output: str = ""
    error: str = ""


class ToolSpecJSON(msgspec.Struct, kw_only=True):
    name: str
    description: str
    parameters: dict


class _Args(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


RelPath = Annotated[str, Doc(description="A path relative to the workspace root (no absolute paths, no '..').")]


class ReadFileArgs(_Args):
    path: RelPath


class WriteFileArgs(_Args):
    path: RelPath
    content: Annotated[str, Doc(description="The whole new content of the file (UTF-8 text).")]


class EditFileArgs(_Args):
    path: RelPath
    old: Annotated[str, Doc(description="Exact text to replace; it must occur exactly once in the file.")]
    new: Annotated[str, Doc(description="The replacement text.")]


class ApplyPatchArgs(_Args):
    patch: Annotated[str, Doc(description="A unified diff (as produced by `git diff`), paths relative to the workspace.")]


class ListDirArgs(_Args):
    path: RelPath = "."


class SearchTextArgs(_Args):
    pattern: Annotated[str, Doc(description="An extended regular expression (grep -E syntax).")]
    path: RelPath = "."


class RunCommandArgs(_Args):
    cmd: Annotated[
        str,
        Doc(description="A command line, split like a POSIX shell would split it but run WITHOUT a shell "
            "(no pipes, redirection, globbing or $VARS). Use ${secret:NAME} to pass a secret."),
    ]
    timeout_s: Annotated[float, Doc(gt=0, description="Seconds before the command is killed (capped by policy).")] | None = None


class NoArgs(_Args):
    pass


class GitCommitArgs(_Args):
    message: Annotated[str, Doc(min_length=1, description="The commit message.")]


class NoteArgs(_Args):
    message: Annotated[str, Doc(min_length=1, description="A note for the session record.")]


class RequestApprovalArgs(_Args):
    action: Annotated[str, Doc(min_length=1, description="What you want to do, e.g. 'merge' or 'push_default_branch'.")]
    detail: Annotated[str, Doc(description="Why, and exactly what will happen.")] = ""


class SpawnChildArgs(_Args):
    title: Annotated[str, Doc(min_length=1)]
    description: str = ""
    target_files: Annotated[list[RelPath], Doc(description="Files the child session will write.")] = msgspec.field(default_factory=list)
    agent: Annotated[str, Doc(min_length=1, max_length=120, description="The agent (id or name) to run the child; default: this one.")] | None = None
    weight: Annotated[float, Doc(gt=0, le=1000, description="The child's share of the goal's budget relative to "
                                                           "its siblings; default 1 (even).")] = 1.0


class FinishArgs(_Args):
    summary: Annotated[str, Doc(min_length=1, description="What was done, for the humans reading the run.")]


TOOLS: dict[str, tuple[type[_Args], str]] = {
    "read_file": (ReadFileArgs, "Read a text file in the workspace."),
    "write_file": (WriteFileArgs, "Create or overwrite a file in the workspace (parent directories are created)."),
    "edit_file": (EditFileArgs, "Replace one exact occurrence of `old` with `new` in a file."),
    "apply_patch": (ApplyPatchArgs, "Apply a unified diff to the workspace (regular files only: no symlinks, submodules or .git)."),
    "list_dir": (ListDirArgs, "List a directory: directories end with '/', symlinks with '@'."),
    "search_text": (SearchTextArgs, "Search files under a path for a regular expression; returns path:line:text."),
    "run_command": (RunCommandArgs, "Run a command in the workspace under the agent's command policy."),
    "git_status": (NoArgs, "Show `git status --short --branch`."),
    "git_diff": (NoArgs, "Show the diff of the working tree against HEAD."),
    "git_log": (NoArgs, "Show the latest commits of the run's branch (hash, date, author, subject)."),
    "git_commit": (GitCommitArgs, "Stage every change and commit it."),
    "note": (NoteArgs, "Record a note in the session."),
    "request_approval": (RequestApprovalArgs, "Ask a human to approve an action; returns once they decide."),
    "spawn_child": (SpawnChildArgs, "Meta sessions only: start a child session for one sub-task."),
    "finish": (FinishArgs, "End the session with a summary. Call it exactly once, last."),
}


@cache
def _schema_json(args_type: type[_Args]) -> bytes:
    schema = msgspec.json.schema(args_type)
    body = dict(schema["$defs"][args_type.__name__])
    body.pop("title", None)
    body.setdefault("properties", {})
    body.setdefault("required", [])
    return msgspec.json.encode(body)


def _schema(args_type: type[_Args]) -> dict:
    """The arguments' JSON Schema, made once per process (a fresh copy each call: callers may change it)."""
    return msgspec.json.decode(_schema_json(args_type))


def warm() -> None:
    """Make every tool's schema now: the warm runner zygote calls this once, so no forked run does."""
    for args_type, _ in TOOLS.values():
        _schema_json(args_type)


def spec(name: str) -> ToolSpecJSON:
    args_type, description = TOOLS[name]
    return ToolSpecJSON(name=name, description=description, parameters=_schema(args_type))
