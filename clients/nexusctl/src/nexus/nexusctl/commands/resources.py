"""get, describe, delete: the same verbs for every kind."""

from typing import Annotated, Any

import typer

from nexus.domain.json_types import JsonObject
from nexus.nexusctl import render
from nexus.nexusctl.client import ApiError, Client, seg
from nexus.nexusctl.goals import TABULATED, goal_sections
from nexus.nexusctl.kinds import KINDS, Kind, lookup
from nexus.nexusctl.state import fail, handled, out, state

KIND_HELP = "One of: " + ", ".join(k.name for k in KINDS) + " (singular and short forms work too)."
Output = Annotated[str, typer.Option("--output", "-o", help="table, wide, json, yaml or name")]


def _parse_filters(kind: Kind, raw: list[str], status: str | None) -> dict[str, str]:
    filters: dict[str, str] = {}
    for item in raw:
        k, sep, v = item.partition("=")
        if not sep or not k:
            fail(f"--filter takes key=value, got {item!r}", 2)
        filters[k] = v
    if status:
        filters["status"] = status
    if bad := sorted(set(filters) - set(kind.filters)):
        allowed = ", ".join(kind.filters) or "none"
        fail(f"{kind.name} cannot be filtered by {bad[0]!r} (filters: {allowed})", 2)
    return filters


def _check_format(fmt: str) -> None:
    if fmt not in render.FORMATS:
        fail(f"unknown output format {fmt!r}; use one of {', '.join(render.FORMATS)}", 2)


def get(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help=KIND_HELP)],
    names: Annotated[list[str] | None, typer.Argument(help="names or ids; none lists them all")] = None,
    output: Output = "table",
    limit: Annotated[int, typer.Option(min=1, help="list at most this many (pages are followed)")] = 100,
    filter_: Annotated[
        list[str] | None, typer.Option("--filter", "-l", help="key=value, e.g. status=ready (repeatable)")
    ] = None,
    status: Annotated[str | None, typer.Option(help="shorthand for --filter status=…")] = None,
) -> None:
    """Show one or many resources."""
    _check_format(output)
    with handled():
        k = lookup(kind)
        client = state(ctx).client
        if names:
            items = [client.get(f"{k.path}/{seg(n)}") for n in names]
            out(render.render_one(k, items[0], output) if len(items) == 1 else render.render_list(k, items, output))
            return
        filters = _parse_filters(k, filter_ or [], status)
        out(render.render_list(k, list(client.pages(k.path, limit=limit, params=filters)), output))


def _section(title: str, headers: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return f"{title}: none"
    body = render.table(headers, rows)
    return f"{title}:\n" + "\n".join("  " + line for line in body.splitlines())


def _related(client: Client, k: Kind, obj: JsonObject) -> list[str]:
    """What describe adds beyond the object itself."""
    sections = []
    if k.name == "agents":
        revs = client.get(f"{k.path}/{seg(obj['id'])}/revisions", limit=20)["items"]
        rows = [[r["revision"], r["created_at"], r.get("created_by")] for r in revs]
        sections.append(_section("Revisions", ["REVISION", "CREATED", "BY"], rows))
    elif k.name == "skills":
        vers = client.get(f"{k.path}/{seg(obj['id'])}/versions", limit=20)["items"]
        sections.append(_section("Versions", ["VERSION", "CREATED"], [[v["version"], v["created_at"]] for v in vers]))
    elif k.name == "tasks":
        runs = client.get("/v1/runs", task_id=obj["id"], limit=20)["items"]
        rows = [[r["id"], r["status"], r["attempt"], r["reason"]] for r in runs]
        sections.append(_section("Runs", ["RUN", "STATUS", "ATTEMPT", "REASON"], rows))
    elif k.name == "goals":
        sections += goal_sections(obj)
    elif k.name == "runs":
        sections.append(
            _section(
                "Attempts",
                ["N", "STATUS", "RUNTIME", "REASON"],
                [[a["n"], a["status"], a.get("runtime"), a.get("reason")] for a in obj.get("attempts") or []],
            )
        )
        for s in obj.get("sessions") or []:
            sections.append(_changes(s))
    elif k.name == "sessions":
        sections.append(_changes(obj))
    return sections


def _changes(session: JsonObject) -> str:
    rows = []
    for c in session.get("changes") or []:
        what = (
            c.get("relPath")
            or c.get("cmd")
            or c.get("message")
            or c.get("sha")
            or c.get("action")
            or c.get("childSessionId")
            or ""
        )
        if c.get("type") == "command-run":
            what = f"{what} → exit {c.get('exitCode')}"
        elif c.get("type") == "refused":
            what = f"{c.get('tool')}: {c.get('reason')}"
        rows.append([c.get("seq"), c.get("type"), " ".join(str(what).split())[:70], str(c.get("hash", ""))[:12]])
    return _section(f"Changes of session {session.get('sessionId')}", ["SEQ", "TYPE", "WHAT", "HASH"], rows)


def describe(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help=KIND_HELP)],
    name: Annotated[str, typer.Argument(help="name or id")],
) -> None:
    """Show one resource in detail, with what belongs to it (revisions, runs, changes…)."""
    with handled():
        k = lookup(kind)
        client = state(ctx).client
        obj = client.get(f"{k.path}/{seg(name)}")
        hidden = ("sessions", "config", *(TABULATED if k.name == "goals" else ()))
        shown = {key: v for key, v in obj.items() if key not in hidden}
        out(f"{k.singular.capitalize()} {k.ident(obj)}\n" + render.to_yaml(shown).rstrip())
        if obj.get("config"):
            cfg = obj["config"]
            out(
                f"Config: agent {cfg.get('agent_id')}@{cfg.get('agent_revision')}, "
                f"{len(cfg.get('skills') or [])} skills, "
                f"{len(cfg.get('memory') or [])} memory items, tools: {', '.join(cfg.get('tools') or []) or 'all'}"
            )
        for section in _related(client, k, obj):
            out(section)


def delete(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help=KIND_HELP)],
    names: Annotated[list[str], typer.Argument(help="names or ids")],
    ignore_not_found: Annotated[
        bool, typer.Option("--ignore-not-found", help="a missing resource is not an error")
    ] = False,
) -> None:
    """Delete agents, skills, repositories or memory items; revoke API keys."""
    with handled():
        k = lookup(kind)
        if not k.deletable:
            fail(f"{k.name} cannot be deleted" + ("; cancel them instead" if k.name in ("runs", "tasks") else ""), 2)
        client = state(ctx).client
        for name in names:
            try:
                client.delete(f"{k.path}/{seg(name)}")
            except ApiError as exc:
                if exc.status == 404 and ignore_not_found:
                    continue
                raise
            out(f"{k.singular.replace(' ', '-')}/{name} {'revoked' if k.name == 'keys' else 'deleted'}")
