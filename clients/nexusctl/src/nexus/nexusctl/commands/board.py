"""`board` (the board as columns) and `board watch` (card moves as they happen)."""

import time
from typing import Annotated

import httpx
import typer

from nexus.domain.json_types import JsonObject
from nexus.nexusctl import events
from nexus.nexusctl.state import err, handled, out, state

app = typer.Typer(help="The internal board: columns of cards, and their moves live.", invoke_without_command=True)

WIDTH = 24


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def columns_text(board: JsonObject, width: int = WIDTH) -> str:
    """The board's columns side by side; each card is its title, then its run's status, approvals
    waiting and cost so far when it has them."""
    cols = board.get("columns", [])
    cells: list[list[str]] = []
    for col in cols:
        lines = []
        for c in col["cards"]:
            lines.append(_cut(c["title"], width))
            extra = [c["run"]["status"]] if c.get("run") else []
            if c.get("approvals_waiting"):
                extra.append(f"{c['approvals_waiting']} approval(s)")
            if c.get("cost_usd"):
                extra.append(f"${c['cost_usd']:.2f}")
            lines.append(_cut("  " + " · ".join(extra), width) if extra else "")
        cells.append(lines)
    header = " │ ".join(_cut(f"{c['title']} ({len(c['cards'])})", width).ljust(width) for c in cols)
    rule = "─┼─".join("─" * width for _ in cols)
    rows = [
        " │ ".join((cell[i] if i < len(cell) else "").ljust(width) for cell in cells)
        for i in range(max(map(len, cells), default=0))
    ]
    return "\n".join([header, rule, *rows])


@app.callback()
def board(
    ctx: typer.Context,
    goal: Annotated[str | None, typer.Option(help="only this goal's cards (goal id)")] = None,
    repository: Annotated[str | None, typer.Option(help="only this repository's cards (id or name)")] = None,
    assignee: Annotated[str | None, typer.Option(help="only this agent's cards (id or name)")] = None,
) -> None:
    """Print the board as columns."""
    params = {k: v for k, v in {"goal_id": goal, "repository": repository, "assignee": assignee}.items() if v}
    ctx.meta["board_params"] = params
    if ctx.invoked_subcommand is not None:
        return
    with handled():
        out(columns_text(state(ctx).client.get("/v1/board", **params)))


@app.command()
def watch(ctx: typer.Context) -> None:
    """Follow card moves as they happen (Ctrl-C to stop); a dropped connection resumes after the last move seen."""
    with handled():
        client = state(ctx).client
        last_id: str | None = None
        failures = 0
        while True:
            try:
                for ev in events._stream(client, "/v1/board/events", last_id, events.DEAD_AFTER_S):
                    failures = 0
                    last_id = ev.id or last_id
                    d = ev.data
                    if d.get("task_id"):
                        moved = f"{d.get('previous_column')} → " if d.get("previous_column") else ""
                        out(f"{ev.envelope.get('occurred_at', '')}  {d['task_id']}  {moved}{d.get('column')}")
            except (httpx.ReadTimeout, httpx.TransportError):
                failures += 1
                err(f"… connection lost; reconnecting (attempt {failures}) after event {last_id or '(none)'}")
                time.sleep(min(0.2 * 2 ** (failures - 1), 5.0))
