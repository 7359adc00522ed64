"""What a run's file writes and commands looked like: the runner reports a masked, capped diff per
file write (`run.file_diff`) and output tail per command (`run.command_output`) as run events;
the run page puts each beside the change it belongs to (session, attempt, seq)."""

from typing import Any

from nexus.db import run_events

SHOWN_TYPES = ["run.file_diff", "run.command_output"]
SHOWN_MAX = 1000  # contents a run page shows at most (the page lists the changes of the latest attempt)

Key = tuple[str, int, int]  # session id, attempt, seq


async def contents(run_id: str) -> dict[Key, dict[str, Any]]:
    """The stored contents of a run's changes, by the change they belong to (first report wins)."""
    found: dict[Key, dict[str, Any]] = {}
    for type_ in SHOWN_TYPES:  # one equality each: FerretDB pushes equalities down, not `$in`
        for _, d in (await run_events.of_type([run_id], type_))[:SHOWN_MAX]:
            found.setdefault((str(d.get("session_id")), int(d.get("attempt", 1)), int(d.get("seq", -1))), d)
    return found


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """(css class, line) per line of a unified diff; the template escapes the line."""
    out = []
    for line in diff.splitlines():
        cls = "" if line.startswith(("+++", "---")) else "add" if line[:1] == "+" else "del" if line[:1] == "-" else ""
        out.append((cls, line))
    return out
