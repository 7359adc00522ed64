"""How things read in chat (HTML parse mode). Each function returns whole HTML blocks; `pack` makes
messages of them."""

from typing import Any

from nexus.domain.json_types import JsonObject
from nexus.telegram_gateway.text import LIMIT, bold, code, esc, pre, units

HELP = [
    ("start", "what this bot is and who you are here"),
    ("help", "this list"),
    ("goal", "<text> [in <repository>] [with <planner agent>] — create a goal; a planner splits it into tasks"),
    ("goals", "the latest goals"),
    ("status", "[goal|task|run|approval id] — one thing's status, or an overview"),
    ("runs", "active and recent runs, with status and cost"),
    ("approvals", "approvals waiting for a decision"),
    ("approve", "<approval id> [reason] — let the paused run go on"),
    ("reject", "<approval id> [reason] — refuse; the run stops, failed, with your reason"),
    ("cancel", "<run id> — cancel a run"),
    ("agents", "the agents that can be given work"),
    ("subscribe", "<goal id|all> — alerts here: approvals, failures, goals done"),
    ("unsubscribe", "[goal id] — stop alerts for one goal, or all of them"),
]


def help_blocks(identity: str, role: str) -> list[str]:
    lines = [f"Nexus — you are {bold(identity)} ({esc(role)})."]
    if role != "lead":
        lines.append("As a viewer you can read; creating goals and deciding approvals need a lead.")
    lines += [f"/{name} {esc(text)}" for name, text in HELP]
    return lines


def money(v: Any) -> str:
    return f"${float(v or 0):.4f}"


def run_line(r: JsonObject) -> str:
    return f"{code(r['id'])} {bold(r['status'])} {money(r.get('cost_usd'))}" + (
        f" — {esc(r['reason'])}" if r.get("reason") else ""
    )


def goal_line(g: JsonObject) -> str:
    return f"{code(g['id'])} {bold(g['status'])} {esc(g['title'])}"


def approval_line(a: JsonObject) -> str:
    expires = esc(a.get("expires_at") or "-")
    return f"{code(a['id'])} {esc(a['action'])}: {esc(a['detail'][:200])} (run {code(a['run_id'])}, expires {expires})"


def status_blocks(s: JsonObject) -> list[str]:
    kind = s.get("kind")
    if kind == "overview":
        return [
            f"Active runs: {bold(s['active_runs'])}",
            f"Pending approvals: {bold(s['pending_approvals'])}",
            f"Open goals: {bold(s['open_goals'])}",
        ]
    if kind == "goal":
        return [
            f"Goal {goal_line(s)}",
            f"Cost so far: {money(s.get('cost_usd'))}",
            *[f"• task {code(t['id'])} {bold(t['status'])} {esc(t['title'])}" for t in s.get("tasks", [])],
            *[
                f"• run {run_line(r)}" + (f" branch {code(r['branch'])}" if r.get("branch") else "")
                for r in s.get("runs", [])
            ],
        ]
    if kind == "task":
        return [
            f"Task {code(s['id'])} {bold(s['status'])} {esc(s['title'])}",
            f"Current run: {code(s['current_run_id'] or '-')}",
        ]
    if kind == "run":
        blocks = [f"Run {run_line(s)}", f"Task {code(s['task_id'])} · agent {code(s['agent_id'])}"]
        if s.get("branch"):
            blocks.append(f"Branch {code(s['branch'])} commit {code(s['commit_sha'][:12])}")
        return blocks + events_blocks(s.get("last_events", []))
    if kind == "approval":
        return approval_blocks(s)
    return [esc(s)]


def events_blocks(events: list[JsonObject]) -> list[str]:
    if not events:
        return []
    lines = []
    for e in events:
        d = e.get("data") or {}
        brief = d.get("message") or d.get("reason") or d.get("status") or d.get("tool") or ""
        lines.append(f"{e['type']}: {brief}")
    return ["Last events:", *pre("\n".join(lines))]


def approval_blocks(a: JsonObject) -> list[str]:
    who = a.get("agent_name") or a.get("agent_id") or "an agent"
    blocks = [
        f"⏸ {bold('Approval needed')} {code(a['id'])}",
        f"{bold(who)} wants to: {bold(a['action'])}",
    ]
    if a.get("task_title"):
        blocks.append(f"Task: {esc(a['task_title'])} ({code(a.get('task_id', ''))})")
    blocks.append(f"Run: {code(a['run_id'])}")
    blocks.extend(pre(a.get("detail") or "(no detail)"))
    blocks.append(f"Expires: {esc(a.get('expires_at') or 'never')}")
    return blocks


def decision_line(decision: str, decided_by: str, at: str, reason: str) -> str:
    mark = {"approved": "✅ Approved", "rejected": "❌ Rejected", "expired": "⌛ Expired"}.get(decision, decision)
    by = f" by {bold(decided_by)}" if decided_by and decision != "expired" else ""
    return f"{mark}{by} at {esc(at)}" + (f": {esc(reason)}" if reason and decision != "expired" else "")


def decided_text(alert: str, line: str) -> str:
    """The alert with its decision below; a too long alert keeps only its first block (the header),
    never half a tag."""
    base = alert if units(alert) + units(line) < LIMIT - 4 else alert.split("\n", 1)[0] + "\n…"
    return f"{base}\n\n{line}"
