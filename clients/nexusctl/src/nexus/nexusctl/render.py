"""Output: kubectl-style plain tables (grep-friendly, no box drawing), JSON and YAML."""

import json
from collections.abc import Sequence
from typing import Any, cast

import yaml

from nexus.domain.json_types import JsonObject
from nexus.nexusctl.kinds import Kind

FORMATS = ("table", "wide", "json", "yaml", "name")


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML ships no types: SafeDumper is Any here
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # Multi-line strings (prompts, skills, scripts) as literal blocks: readable and re-applyable.
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(obj: Any) -> str:
    # without a stream, yaml.dump returns the text
    return cast(str, yaml.dump(obj, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120))


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["   ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def render_list(kind: Kind, items: list[JsonObject], fmt: str) -> str:
    if fmt == "json":
        return to_json({"kind": kind.name, "items": items})
    if fmt == "yaml":
        return to_yaml({"kind": kind.name, "items": items})
    if fmt == "name":
        return "\n".join(f"{kind.singular.replace(' ', '-')}/{kind.ident(o)}" for o in items)
    if not items:
        return f"No {kind.name} found."
    columns = list(kind.columns)
    if fmt == "wide" and kind.id_field != "id" and "id" in items[0]:
        columns.insert(1, ("ID", lambda o: o.get("id")))
    return table([c[0] for c in columns], [[getter(o) for _, getter in columns] for o in items])


def render_one(kind: Kind, obj: JsonObject, fmt: str) -> str:
    if fmt == "json":
        return to_json(obj)
    if fmt == "yaml":
        return to_yaml(obj)
    if fmt == "name":
        return f"{kind.singular.replace(' ', '-')}/{kind.ident(obj)}"
    return render_list(kind, [obj], fmt)
