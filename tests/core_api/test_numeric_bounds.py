"""Every number the API accepts has a range, found from the OpenAPI document (so a field added later is
covered the day it is added): each integer or number of a request body or query is sent its extremes
(below zero, zero, 10**18, 2**63-1, ±1e308, a fraction of a hair, a literal past a double) and the
ends of its documented range.

The bar for each answer: refused with a 422 naming that very field, or accepted and then usable — the
value is within its documented range, the object reads back, and an agent so written gets a run
dispatched (its config assembled and stored). No numeric field may accept ±10**18: nothing in Nexus
means that much, so a field that takes it has no range yet. Lists in bodies and text in queries are
held to a most items and a most length the same way, from the same document."""

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.core_api.conftest import new_agent

pytestmark = pytest.mark.infra

HUGE = 10**18
INT_PROBES: list[int | float] = [-HUGE, -1, 0, HUGE, 2**63 - 1]
NUMBER_PROBES: list[int | float] = [*INT_PROBES, -1e308, 1e308, 1e-300]
PAST_A_DOUBLE = "1e999"  # JSON allows it; no double holds it
STREAMS = ("/events",)

Base = Callable[[dict[str, str]], dict[str, Any]]


def _slug() -> str:
    return f"b-{uuid.uuid4().hex[:10]}"


# A valid request per operation that takes a number in its body: the probed field is set on top of it.
# An operation missing here fails the test, which names it: add its smallest valid body.
BASES: dict[tuple[str, str], Base] = {
    ("post", "/v1/agents"): lambda ids: {"name": _slug(), "system_prompt": "You help."},
    ("put", "/v1/agents/{agent_id}"): lambda ids: {"name": ids["agent_name"], "system_prompt": "You help."},
    ("post", "/v1/tasks"): lambda ids: {"title": "t", "status": "backlog"},
    ("patch", "/v1/tasks/{task_id}"): lambda ids: {},
    ("post", "/v1/goals"): lambda ids: {"title": "g"},
    ("put", "/v1/goals/{goal_id}/budget"): lambda ids: {},
    ("post", "/v1/memory"): lambda ids: {"scope": "global", "content": "a fact"},
    ("patch", "/v1/memory/{item_id}"): lambda ids: {},
    ("post", "/v1/schedules"): lambda ids: {
        "name": _slug(),
        "cron": "0 9 * * 1",
        "enabled": False,
        "task": {"title": "t", "assignee": ids["agent_id"]},
    },
    ("put", "/v1/schedules/{schedule_id}"): lambda ids: {
        "name": ids["schedule_name"],
        "cron": "0 9 * * 1",
        "enabled": False,
        "task": {"title": "t", "assignee": ids["agent_id"]},
    },
    ("put", "/v1/board/providers/{scope_ref}"): lambda ids: {
        "provider": "plane",
        "plane": {"base_url": "http://plane.invalid", "workspace_slug": "w", "project_id": "p", "api_key_secret": "K"},
        "jira": {
            "base_url": "http://jira.invalid",
            "project_key": "NX",
            "email": "a@b.c",
            "api_token_secret": "T",
        },
    },
    ("put", "/v1/budgets/agents/{agent_ref}"): lambda ids: {},
    ("put", "/v1/prices/{model}"): lambda ids: {"input_per_mtok": 1, "output_per_mtok": 1},
    ("post", "/v1/ui/login-links"): lambda ids: {"name": _slug(), "role": "viewer"},
}


class Field:
    """One number of an operation: where it goes (`body` and its dotted path, or a query parameter), its
    type and its documented range."""

    def __init__(self, where: str, path: str, kind: str, schema: dict[str, Any]) -> None:
        self.where, self.path, self.kind = where, path, kind
        self.lo, self.hi = schema.get("minimum"), schema.get("maximum")

    def __repr__(self) -> str:
        return f"{self.where}:{self.path}"

    def probes(self) -> list[int | float]:
        values = list(INT_PROBES if self.kind == "integer" else NUMBER_PROBES)
        for end in (self.lo, self.hi):
            if end is not None:
                values.append(int(end) if self.kind == "integer" else end)
        return values


def _resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = {
            **doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]],
            **{k: v for k, v in schema.items() if k != "$ref"},
        }
    return schema


RANGE_KEYS = ("minimum", "maximum", "maxItems")
# Lists a stored document must never be read cut from (nexus.domain.agents.CommandPolicy says why): only
# the body's size bounds them.
UNCUT = {"permissions.commands.deny", "permissions.ask", "llm.command"}


def _numbers(
    schema: dict[str, Any], doc: dict[str, Any], path: str, seen: frozenset[str] = frozenset()
) -> list[tuple[str, str, dict[str, Any]]]:
    """(dotted path, type, schema) of every integer, number and array under `schema`; a range stated
    beside a `oneOf` (how an optional field's is written) counts for its members."""
    ref = schema.get("$ref")
    if ref in seen:
        return []
    seen = seen | {ref} if ref else seen
    schema = _resolve(schema, doc)
    types = schema.get("type") if isinstance(schema.get("type"), list) else [schema.get("type")]
    found = [(path, kind, schema) for kind in ("integer", "number", "array") if kind in types]
    outer = {k: schema[k] for k in RANGE_KEYS if k in schema}
    for member in schema.get("oneOf", []) + schema.get("anyOf", []):
        found += _numbers(member if "$ref" in member else {**outer, **member}, doc, path, seen)
    for name, sub in (schema.get("properties") or {}).items():
        found += _numbers(sub, doc, f"{path}.{name}" if path else name, seen)
    if isinstance(schema.get("items"), dict):
        found += _numbers(schema["items"], doc, f"{path}[]", seen)
    return found


def unbounded_lists(doc: dict[str, Any]) -> list[str]:
    """Every list a request body takes that states no most items (each item may cost a lookup or a write)."""
    return [
        f"{method.upper()} {path} {at}"
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in ("post", "put", "patch")
        for at, kind, s in _numbers(_body_schema(op), doc, "")
        if kind == "array" and "maxItems" not in s and at not in UNCUT
    ]


def _body_schema(op: dict[str, Any]) -> dict[str, Any]:
    return (op.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("schema") or {}


def numeric_fields(doc: dict[str, Any]) -> dict[tuple[str, str], list[Field]]:
    out: dict[tuple[str, str], list[Field]] = {}
    for path, item in doc["paths"].items():
        if path.endswith(STREAMS):
            continue
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            fields = [
                Field("query", p["name"], kind, s)
                for p in op.get("parameters", [])
                if p["in"] == "query"
                for _, kind, s in _numbers(p.get("schema", {}), doc, "")
                if kind != "array"
            ]
            fields += [
                Field("body", at, kind, s) for at, kind, s in _numbers(_body_schema(op), doc, "") if kind != "array"
            ]
            if fields:
                out[(method, path)] = fields
    return out


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`body` with `value` at the dotted `path` (a `[]` step: a one-item list), made where missing."""
    here: Any = body
    steps = path.split(".")
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        name, listed = step.removesuffix("[]"), step.endswith("[]")
        leaf: Any = value if last else {}
        if listed:
            here[name] = [leaf]
        elif last or not isinstance(here.get(name), dict):
            here[name] = leaf
        if not last:
            here = here[name][0] if listed else here[name]
    return body


def _named(field: Field, names: list[str]) -> bool:
    want = field.path.replace("[]", "[0]")
    return any(n == want or n.startswith(want) or want.startswith(n + ".") for n in names)


def _fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return re.sub(r"\{[^}]+\}", "1", path)  # a resource this test made none of: its answer is a 404


@pytest.fixture(scope="module")
async def ids(client: AsyncTestClient) -> dict[str, str]:
    agent = await new_agent(client)
    made: dict[str, str] = {"agent_id": agent["id"], "agent_name": agent["name"], "agent_ref": agent["id"]}
    r = await client.post("/v1/tasks", json={"title": "t", "status": "backlog"})
    made["task_id"] = r.json()["id"]
    r = await client.post("/v1/goals", json={"title": "g"})
    made["goal_id"] = r.json()["id"]
    r = await client.post("/v1/memory", json={"scope": "global", "content": "a fact"})
    made["item_id"] = r.json()["id"]
    r = await client.post("/v1/schedules", json=BASES[("post", "/v1/schedules")](made))
    made["schedule_id"], made["schedule_name"] = r.json()["id"], r.json()["name"]
    made["scope_ref"], made["model"] = "default", "bounds-model"
    assert all(made.values()), made
    return made


async def _usable(client: AsyncTestClient, doc: dict[str, Any], method: str, path: str, url: str, r: Any) -> str | None:
    """What is wrong with an accepted value, or None: the object must read back, and an agent must run."""
    made = r.json() if method == "post" and r.content else None
    one = [p for p, item in doc["paths"].items() if p.rsplit("/", 1)[0] == path and p.endswith("}") and "get" in item]
    if isinstance(made, dict) and "id" in made and one:
        url = f"{url}/{made['id']}"
    elif "get" not in doc["paths"].get(path, {}):
        parent = path.rsplit("/", 1)[0]
        if "get" not in doc["paths"].get(parent, {}):
            return None  # nothing reads it back (a login link is used once, by its holder)
        url = url.rsplit("/", 1)[0]
    back = await client.get(url)
    if back.status_code >= 500 or (back.status_code >= 400 and back.status_code != 405):
        return f"accepted, then GET {url} answered {back.status_code}: {back.text[:200]}"
    if path == "/v1/agents" and method == "post":
        task = await client.post("/v1/tasks", json={"title": "run it", "assignee": r.json()["id"]})
        if task.status_code != 201 or not task.json().get("current_run_id"):
            return f"accepted, then its task answered {task.status_code}: {task.text[:300]}"
        run = await client.get(f"/v1/runs/{task.json()['current_run_id']}")
        if run.status_code != 200 or not run.json().get("config"):
            return f"accepted, then its run answered {run.status_code}: {run.text[:300]}"
    return None


def _verdict(field: Field, value: Any, r: Any) -> str | None:
    """What is wrong with the first answer, or None (an acceptance is judged further by `_usable`)."""
    if r.status_code >= 500:
        return f"{r.status_code}: {r.text[:300]}"
    if r.status_code < 300:
        if not isinstance(value, str) and (
            (field.lo is not None and value < field.lo) or (field.hi is not None and value > field.hi)
        ):
            return f"accepted outside its documented range [{field.lo}, {field.hi}]"
        if isinstance(value, str) or abs(value) >= HUGE:
            return "accepted: the field has no range"
        return None
    if not r.headers.get("content-type", "").startswith("application/problem+json"):
        return f"{r.status_code} is not problem+json: {r.text[:200]}"
    names = [e.get("field") or "" for e in r.json().get("errors") or []]
    if r.status_code == 422 and not _named(field, names):
        return f"422 names {names}, not {field.path}: {r.text[:300]}"
    return None


async def _probe(
    client: AsyncTestClient, doc: dict[str, Any], ids: dict[str, str], op: tuple[str, str], field: Field, value: Any
) -> str | None:
    method, path = op
    url = _fill(path, ids)
    if field.where == "query":
        body = BASES[op](ids) if op in BASES else ({} if method in ("post", "put", "patch") else None)
        r = await client.request(method.upper(), url, params={field.path: str(value)}, json=body)
    elif isinstance(value, str):  # a literal no JSON encoder writes: put in by hand
        sentinel = 1234.5678125
        raw = json.dumps(_set(BASES[op](ids), field.path, sentinel)).replace(str(sentinel), value)
        r = await client.request(method.upper(), url, content=raw, headers={"content-type": "application/json"})
    else:
        r = await client.request(method.upper(), url, json=_set(BASES[op](ids), field.path, value))
    problem = _verdict(field, value, r)
    if problem is None and r.status_code < 300 and method != "get":
        problem = await _usable(client, doc, method, path, url, r)
    return problem


async def test_every_number_has_a_range_and_is_usable_within_it(client: AsyncTestClient, ids: dict[str, str]) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    fields = numeric_fields(doc)
    assert sum(len(f) for f in fields.values()) >= 40, fields  # the agent document's limits are among them
    missing = [
        f"{m.upper()} {p}"
        for (m, p), fs in fields.items()
        if any(f.where == "body" for f in fs) and (m, p) not in BASES
    ]
    assert not missing, f"add a valid base body to BASES for: {missing}"
    failures: list[str] = []
    for op, op_fields in fields.items():
        for field in op_fields:
            probes: list[Any] = field.probes() + ([PAST_A_DOUBLE] if field.where == "body" else [])
            for value in probes:
                if (problem := await _probe(client, doc, ids, op, field, value)) is not None:
                    failures.append(f"{op[0].upper()} {op[1]} {field}={value!r} -> {problem}")
    assert not failures, "\n".join(failures[:60])


async def test_every_list_in_a_body_has_a_most_items(client: AsyncTestClient) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    assert not (found := unbounded_lists(doc)), found


async def test_every_text_query_parameter_has_a_most_length(client: AsyncTestClient) -> None:
    """A filter's value is looked up as sent: none is longer than an id or a name's ceiling."""
    doc = (await client.get("/schema/openapi.json")).json()
    found = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for p in op.get("parameters", []) if isinstance(op, dict) else []:
                s = p.get("schema", {})
                members = [s, *s.get("oneOf", [])]
                texts = [m for m in members if m.get("type") == "string" or "string" in (m.get("type") or [])]
                if p["in"] == "query" and texts and not any("maxLength" in m or "enum" in m for m in [s, *texts]):
                    found.append(f"{method.upper()} {path} {p['name']}")
    assert not found, found
