"""A run's event stream: server-sent events read with resume (Last-Event-ID) after a dropped
connection, and each event turned into one readable line."""

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from nexus.domain.json_types import JsonObject
from nexus.nexusctl.client import ApiError, Client, seg

FINAL = {"succeeded", "failed", "cancelled", "timed_out"}


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    envelope: JsonObject

    @property
    def data(self) -> JsonObject:
        d = self.envelope.get("data")
        return d if isinstance(d, dict) else {}


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, str, str]]:
    """(id, event, data) per message; comment-only messages (keep-alives) are skipped."""
    ev_id = ev_type = ""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data and any(data):
                yield ev_id, ev_type, "\n".join(data)
            ev_type, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            ev_type = value
        elif name == "id":
            ev_id = value


# The server sends a keep-alive comment every 15 s (by default): a connection silent for much
# longer than that is dead, even if no error says so.
DEAD_AFTER_S = 45.0
# After a run's final status only stragglers (the worker's "exited") can follow.
DRAIN_S = 2.0


# What the server sends, and then ends the stream, when it cannot read the event stream for a while
# (the bus out of reach): the client reconnects after the last event it saw, as after a drop.
STREAM_ERROR = "error"


class _Unavailable(Exception):
    pass


def _is_final(ev: Event) -> bool:
    return ev.type == "run.status" and ev.data.get("status") in FINAL


def _stream(client: Client, path: str, last_event_id: str | None, read_timeout: float) -> Iterator[Event]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    with client.http.stream("GET", path, headers=headers, timeout=httpx.Timeout(10.0, read=read_timeout)) as r:
        if r.status_code >= 400:
            r.read()
            raise ApiError.from_response(r)
        for ev_id, ev_type, data in parse_sse(r.iter_lines()):
            try:
                envelope = json.loads(data)
            except ValueError:
                envelope = {"type": ev_type, "data": {"raw": data}}
            yield Event(ev_id, ev_type or envelope.get("type", ""), envelope)


def follow(
    client: Client,
    run_id: str,
    *,
    last_event_id: str | None = None,
    max_reconnects: int = 20,
    on_reconnect: Callable[[str | None, int], None] | None = None,
    idle_timeout: float | None = None,
) -> Iterator[Event]:
    """Every event of the run, resuming after the last one seen when the connection drops. Ends
    after the run's final status (and any stragglers), when the server ends the stream, or, with
    idle_timeout, when nothing arrived for that long."""
    failures = 0
    path = f"/v1/runs/{seg(run_id)}/events"
    final = False
    while True:
        try:
            for ev in _stream(client, path, last_event_id, DRAIN_S if final else idle_timeout or DEAD_AFTER_S):
                if ev.type == STREAM_ERROR:  # the server could not read the stream now: come back for the rest
                    raise _Unavailable
                failures = 0
                last_event_id = ev.id or last_event_id
                yield ev
                if _is_final(ev) and not final:
                    final = True
                    break  # don't rely on the server closing: collect stragglers on a short leash
            else:
                return
            continue
        except _Unavailable:
            failures += 1
        except httpx.ReadTimeout:
            if final or idle_timeout:
                return
            failures += 1
        except httpx.TransportError:
            if final:
                return
            failures += 1
        if failures > max_reconnects:
            raise ApiError(0, f"lost the event stream of run {run_id}", f"gave up after {max_reconnects} reconnects")
        if on_reconnect:
            on_reconnect(last_event_id, failures)
        time.sleep(min(0.2 * 2 ** (failures - 1), 5.0))


# ----------------------------------------------------------------------------- formatting


def _clock(envelope: JsonObject) -> str:
    at = str(envelope.get("occurred_at", ""))
    return at[11:19] if len(at) >= 19 else "--:--:--"


def _describe(ev: Event) -> tuple[str, str] | None:
    d, c = ev.data, ev.data.get("change") or {}
    kind = ev.type.removeprefix("run.")
    if kind == "status":
        extra = f" — {d['reason']}" if d.get("reason") else ""
        return "status", f"{d.get('status')} (attempt {d.get('attempt', 1)}){extra}"
    if kind == "runtime":
        code = f" exit {d['exit_code']}" if d.get("exit_code") is not None else ""
        detail = f" — {d['detail']}" if d.get("detail") else ""
        return "runtime", f"{d.get('phase')} on {d.get('runtime')} (attempt {d.get('attempt')}){code}{detail}"
    if kind == "llm":
        calls = ", ".join(d.get("tool_calls") or []) or "no tool calls"
        tokens = f"{d.get('input_tokens', 0)}+{d.get('output_tokens', 0)} tokens"
        return "llm", f"step {d.get('step')} {d.get('provider')}/{d.get('model')} → {calls} ({tokens})"
    if kind == "tool":
        return "tool", f"{d.get('tool')} ok" if d.get("ok") else f"{d.get('tool')} FAILED: {d.get('error', '')}"
    if kind == "file_write":
        return "write", f"{c.get('relPath')} ({c.get('bytes', 0)} bytes)"
    if kind == "file_read":
        return "read", str(c.get("relPath"))
    if kind == "command_run":
        return "command", f"$ {c.get('cmd')} → exit {c.get('exitCode')} in {c.get('durationMs', 0)} ms"
    if kind == "note":
        return "note", str(c.get("message", ""))
    if kind == "git_commit":
        title = (str(c.get("message") or "").splitlines() or [""])[0]
        return "commit", f"{str(c.get('sha', ''))[:12]} on {c.get('branch')}: {title}"
    if kind == "refused":
        return "refused", f"{c.get('tool')}: {c.get('reason')}" + (f" — {c['detail']}" if c.get("detail") else "")
    if kind == "approval":
        return "approval", f"{c.get('action')}: {c.get('decision')}"
    if kind == "child_session":
        return "child", f"spawned session {c.get('childSessionId')}" + (
            f" (task {c['taskId']})" if c.get("taskId") else ""
        )
    if kind == "approval_requested":
        return (
            "approval",
            f"{d.get('action')} needs a decision: nexusctl approvals approve {d.get('approval_id')}  (or reject)",
        )
    if kind == "approval_decided":
        return "approval", f"{d.get('decision')} by {d.get('decided_by') or '?'}" + (
            f": {d['reason']}" if d.get("reason") else ""
        )
    if kind == "child_finished":
        return "child", f"session {d.get('session_id')} (run {d.get('run_id')}) {d.get('status')}"
    if kind == "session":
        parent = f" under {d['parent_session_id']}" if d.get("parent_session_id") else ""
        return "session", f"{d.get('session_id')} {d.get('status')}{parent}"
    if kind == "log":
        return "log", f"[{d.get('level', 'info')}] {d.get('message', '')}"
    if kind == "heartbeat":
        return None
    return kind, json.dumps(d, ensure_ascii=False)[:300]


def pretty(ev: Event, *, verbose: bool = False) -> str | None:
    described = _describe(ev)
    if described is None:
        if not verbose:
            return None
        described = ("heartbeat", f"step {ev.data.get('step', 0)}")
    label, text = described
    indent = "\n" + " " * 20  # continuation lines of a multi-line note line up under its text
    return f"{_clock(ev.envelope)}  {label:<9} {indent.join(text.splitlines()) or text}"


def summary(run: JsonObject) -> list[str]:
    usage = run.get("usage") or {}
    lines = [f"run {run.get('id')} {run.get('status')}" + (f": {run['reason']}" if run.get("reason") else "")]
    for label, value in (
        ("summary", run.get("summary")),
        ("branch", run.get("branch")),
        ("commit", run.get("commit_sha")),
        ("ledger", run.get("ledger_hash")),
    ):
        if value:
            first, *rest = str(value).splitlines()
            lines.append(f"  {label + ':':<9} {first}")
            lines.extend(f"            {r}" for r in rest)
    if usage:
        tokens = f"{usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out tokens"
        lines.append(f"  {'usage:':<9} {tokens}, ${usage.get('cost_usd', 0)}")
    lines.append(f"  {'attempts:':<9} {len(run.get('attempts') or [])} of {run.get('max_attempts')}")
    return lines
