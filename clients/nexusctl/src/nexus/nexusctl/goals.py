"""`describe goal`: where the goal is, what it cost, what is left, its meta session and children."""

from nexus.domain.json_types import JsonObject
from nexus.nexusctl import render

# Shown as tables below the object instead of as raw YAML.
TABULATED = ("children", "report", "meta", "progress", "usage", "budget")


def _money(usd: float | None) -> str:
    return "-" if usd is None else f"{usd:.4f} USD"


def _cap(budget: JsonObject) -> str:
    """A goal's budget says what is spent and left; a child's share is only its part of the cap (what the
    child spent is in its USD and TOKENS columns), so it shows the amounts alone."""
    parts = []
    if budget.get("usd") is not None:
        spent = f" ({_money(budget.get('spent_usd'))} spent, {_money(budget.get('left_usd'))} left)"
        parts.append(_money(budget["usd"]) + (spent if "spent_usd" in budget else ""))
    if budget.get("tokens") is not None:
        spent = f" ({budget.get('spent_tokens')} spent, {budget.get('left_tokens')} left)"
        parts.append(f"{budget['tokens']} tokens" + (spent if "spent_tokens" in budget else ""))
    return "; ".join(parts) or "none"


def goal_sections(goal: JsonObject) -> list[str]:
    progress = goal.get("progress") or {}
    by_status = progress.get("by_status") or {}
    counts = ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())) or "no child tasks"
    usage = goal.get("usage") or {}
    lines = [
        f"Status: {goal['status']}" + (f" ({goal['status_reason']})" if goal.get("status_reason") else ""),
        f"Progress: {by_status.get('done', 0)} of {progress.get('total', 0)} child tasks done ({counts})",
        f"Cost: {_money(usage.get('cost_usd', 0.0))}, {usage.get('tokens', 0)} tokens",
        f"Budget: {_cap(goal['budget']) if goal.get('budget') else 'none'}",
    ]
    meta = goal.get("meta")
    if meta:
        lines.append(
            f"Meta session: {meta.get('session_id') or '-'} (run {meta.get('run_id') or '-'}, "
            f"{meta.get('run_status') or meta['task_status']}, {_money(meta.get('cost_usd'))}, "
            f"{meta.get('tokens', 0)} tokens)"
        )
    sections = ["\n".join(lines)]
    rows = [
        [
            c["task_id"],
            c["status"] + (f" (blocked: {c['blocked']})" if c.get("blocked") else ""),
            c.get("run_status") or "-",
            f"{c.get('cost_usd', 0.0):.4f}",
            c.get("tokens", 0),
            _cap(c["budget"]) if c.get("budget") else "-",
            c.get("branch") or "-",
            c["title"][:40],
        ]
        for c in goal.get("children") or []
    ]
    headers = ["TASK", "STATUS", "RUN", "USD", "TOKENS", "SHARE", "BRANCH", "TITLE"]
    sections.append(
        "Children: none"
        if not rows
        else "Children:\n" + "\n".join("  " + ln for ln in render.table(headers, rows).splitlines())
    )
    report = goal.get("report")
    if report:
        approvals = report.get("approvals") or []
        sections.append(
            f"Report: {report['status']} in {report.get('duration_s', 0):.1f}s, {_money(report.get('cost_usd'))}, "
            f"{report.get('tokens', 0)} tokens, {len(approvals)} approvals decided"
        )
    return sections
