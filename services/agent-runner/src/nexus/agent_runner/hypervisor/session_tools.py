"""The session's own tools: notes, a human's approval, child sessions (meta sessions) and the end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec

from nexus.agent_runner.hypervisor.errors import Refused
from nexus.agent_runner.hypervisor.registry import tool
from nexus.agent_runner.hypervisor.state import now_iso
from nexus.agent_runner.hypervisor.tools import Args, Doc, ToolResult
from nexus.domain.sessions import ChildSessionChange, NoteChange
from nexus.events.payloads import MAX_TARGET_CHARS

if TYPE_CHECKING:
    from nexus.agent_runner.hypervisor.core import Hypervisor

MAX_NOTE_CHARS = 16_000


class FinishArgs(Args):
    summary: Annotated[str, Doc(min_length=1, description="What was done, for the humans reading the run.")]


class NoteArgs(Args):
    message: Annotated[str, Doc(min_length=1, description="A note for the session record.")]


class RequestApprovalArgs(Args):
    action: Annotated[
        str,
        Doc(min_length=1, max_length=200, description="What you want to do, e.g. 'merge' or 'push_default_branch'."),
    ]
    detail: Annotated[str, Doc(max_length=2000, description="Why, and exactly what will happen.")] = ""


class SpawnChildArgs(Args):
    title: Annotated[str, Doc(min_length=1, max_length=500)]
    description: Annotated[str, Doc(max_length=MAX_NOTE_CHARS)] = ""
    target_files: Annotated[
        list[Annotated[str, Doc(max_length=MAX_TARGET_CHARS)]],
        Doc(max_length=1000, description="Files the child session will write (paths relative to the workspace)."),
    ] = msgspec.field(default_factory=list)
    agent: (
        Annotated[
            str,
            Doc(
                min_length=1,
                max_length=120,
                description=(
                    "The agent (id or name) to run the child; default: this one. It must be allowed no more"
                    " than this one, or be named in this agent's delegates_to: otherwise the child is refused."
                ),
            ),
        ]
        | None
    ) = None
    weight: Annotated[
        float,
        Doc(
            gt=0,
            le=1000,
            description="The child's share of the goal's budget relative to its siblings; default 1 (even).",
        ),
    ] = 1.0


@tool("note", NoteArgs, "Record a note in the session.")
async def note(hv: Hypervisor, args: NoteArgs) -> ToolResult:
    if len(args.message) > MAX_NOTE_CHARS:
        raise Refused("too-large", f"notes are limited to {MAX_NOTE_CHARS} characters")
    hv.session.notes.append(hv.secrets.mask_forms(args.message))
    await hv.record(NoteChange(message=args.message, timestamp=now_iso()))
    return ToolResult(ok=True, output="noted")


@tool("request_approval", RequestApprovalArgs, "Ask a human to approve an action; returns once they decide.")
async def request_approval(hv: Hypervisor, args: RequestApprovalArgs) -> ToolResult:
    await hv.ask(args.action, args.detail)
    return ToolResult(ok=True, output=f"approved: {args.action}")


@tool("spawn_child", SpawnChildArgs, "Meta sessions only: start a child session for one sub-task.")
async def spawn_child(hv: Hypervisor, args: SpawnChildArgs) -> ToolResult:
    if hv.spawner is None:
        raise Refused("not-permitted", "spawn_child is only for meta sessions")
    for path in args.target_files:
        hv.check_path(path)
    targets = [hv.ws.resolve(path, writing=True) for path in args.target_files]
    # The plan leaves the run (a command to core-api, its tasks, a board, meta-plan.json on the branch): the
    # model's text in it is masked, in the encodings the canary knows too (else the canary refuses the push).
    mask = hv.secrets.mask_forms
    request: dict[str, object] = {
        "title": mask(args.title),
        "description": mask(args.description),
        "target_files": targets,
    }
    if args.agent:
        request["agent"] = mask(args.agent)
    if args.weight != 1.0:
        request["weight"] = args.weight
    try:
        result = await hv.spawner(request)
    except Refused:
        raise  # the plan's own bounds: named as they are
    except Exception as exc:  # noqa: BLE001 — the spawner's failure is the model's answer, and on the record
        raise Refused("spawn-failed", str(exc)) from None
    child_id = result.get("session_id") or result.get("sessionId")
    if not isinstance(child_id, str) or not child_id:
        raise Refused("spawn-failed", "the spawner returned no session id")
    task_id = result.get("task_id") or result.get("taskId") or ""
    await hv.record(ChildSessionChange(child_session_id=child_id, task_id=str(task_id), timestamp=now_iso()))
    return ToolResult(ok=True, output=msgspec.json.encode(result).decode())


@tool("finish", FinishArgs, "End the session with a summary. Call it exactly once, last.")
async def finish(hv: Hypervisor, args: FinishArgs) -> ToolResult:
    if len(args.summary) > MAX_NOTE_CHARS:
        raise Refused("too-large", f"the summary is limited to {MAX_NOTE_CHARS} characters")
    hv.finished = hv.secrets.mask_forms(args.summary)
    await hv.record(NoteChange(message=f"finished: {args.summary}", timestamp=now_iso()))
    return ToolResult(ok=True, output="session finished")
