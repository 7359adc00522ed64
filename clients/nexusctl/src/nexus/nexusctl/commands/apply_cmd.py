"""`apply -f`: create what is missing, update what changed, leave the rest — one line per object."""

from typing import Annotated

import typer

from nexus.nexusctl import manifests
from nexus.nexusctl.apply import apply_one
from nexus.nexusctl.client import ApiError
from nexus.nexusctl.manifests import ManifestError
from nexus.nexusctl.render import to_json
from nexus.nexusctl.state import api_failure, err, handled, out, state


def _manifest_field(field: str | None) -> str:
    """The API names body fields; in a manifest they sit under spec, except the name."""
    if not field:
        return "spec"
    return "metadata.name" if field == "name" else f"spec.{field}"


def apply(
    ctx: typer.Context,
    filename: Annotated[
        list[str], typer.Option("--filename", "-f", help="a file, a folder (recursive) or - for stdin; repeatable")
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Create or update resources from YAML manifests (Agent, Skill, Repository, MemoryItem, Task)."""
    with handled():
        items = manifests.load(filename)
    if not items:
        err("error: no manifests found in " + ", ".join(filename))
        raise typer.Exit(1)
    client = state(ctx).client
    failed = 0
    results = []
    for m in items:
        try:
            o = apply_one(client, m)
        except ManifestError as exc:
            failed += 1
            err(f"error: {m.ref} ({exc.source}): {exc.field}: {exc.message}")
            continue
        except ApiError as exc:
            if exc.status == 0:  # no API at all: nothing else will work either
                err("error: " + exc.lines()[0])
                raise typer.Exit(1) from None
            failed += 1
            exc.errors = [{**e, "field": _manifest_field(e.get("field"))} for e in exc.errors]
            lines = api_failure(exc)
            err(f"error: {m.ref} ({m.source}): {lines[0]}")
            for line in lines[1:]:
                err(line)
            continue
        results.append({"kind": m.kind.manifest, "name": m.name, "id": o.id, "action": o.action, "source": m.source})
        if output != "json":
            out(f"{m.ref.replace(' ', '-')} {o.action}" + (f" ({o.detail})" if o.detail else ""))
    if output == "json":
        out(to_json(results))
    if failed:
        err(f"{failed} of {len(items)} manifests failed")
        raise typer.Exit(1)
