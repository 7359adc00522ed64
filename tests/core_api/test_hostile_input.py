"""Hostile input the schema-driven generator does not think of, thrown at every operation of the
OpenAPI document (so a new route is covered the day it is added): NUL, lone surrogates and bytes that
are not UTF-8 in path and query values, ids of the wrong shape, integers past 64 bits, repeated query
parameters, tampered cursors, bodies of the wrong type, huge or deep, unknown fields, odd headers, and
SSE routes resumed from a Last-Event-ID that is not a sequence.

The bar for each answer: never a 5xx; an error is application/problem+json whose 422 names the
failing field; no body carries a stack trace or a secret; nothing is half-stored."""

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.infra

METHODS = ("get", "post", "put", "patch", "delete")
STREAMS = re.compile(r"/events$")
LEAKS = re.compile(r"Traceback|File \"|\.py\", line|mongodb://|nats://|nxk_test_admin_|-----BEGIN", re.I)
# Percent-encoded path and query values: NUL, a lone surrogate (CESU bytes), bytes that are not
# UTF-8, an overlong id, dot segments, an encoded slash, unicode, and a value of the wrong shape.
HOSTILE_VALUES = {
    "nul": "a%00b",
    "surrogate": "%ED%A0%80",
    "not-utf8": "%FF%FE",
    "long": "x" * 4000,
    "dots": "..",
    "slash": "a%2Fb",
    "unicode": "%E2%80%AE%F0%9F%92%A9",
    "json": "%7B%22%24gt%22%3A%22%22%7D",
    "regex": ".%2A",
}
HOSTILE_NUMBERS = {
    "2**63": str(2**63),
    "2**64+1": str(2**64 + 1),
    "-1": "-1",
    "1e309": "1e309",
    "nan": "NaN",
    "word": "ten",
    "float": "1.5",
    "huge": "9" * 400,
}


@pytest.fixture(scope="module")
def sync(server_url: str, settings) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server_url, headers={"Authorization": f"Bearer {settings.admin_key}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture(scope="module")
def schema(sync: httpx.Client) -> dict[str, Any]:
    r = sync.get("/schema/openapi.json")
    assert r.status_code == 200, r.text
    return r.json()


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    ops = [
        (method, path, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in METHODS and not STREAMS.search(path)
    ]
    assert len(ops) >= 60, [f"{m} {p}" for m, p, _ in ops]
    return ops


def params_of(op: dict[str, Any], where: str) -> list[dict[str, Any]]:
    return [p for p in op.get("parameters", []) if p["in"] == where]


def is_integer(param: dict[str, Any]) -> bool:
    s = param.get("schema", {})
    types = s.get("type") if isinstance(s.get("type"), list) else [s.get("type")]
    return "integer" in types or any("integer" == o.get("type") for o in s.get("oneOf", []))


def fill(path: str, op: dict[str, Any], override: dict[str, str] | None = None) -> str:
    """The path with each parameter set: a plausible value, or the override given for it."""
    for p in params_of(op, "path"):
        value = (override or {}).get(p["name"]) or ("1" if is_integer(p) else f"nothing-{uuid.uuid4().hex[:6]}")
        path = path.replace("{" + p["name"] + "}", value)
    return path


def verdict(r: httpx.Response, *, field: str | None = None) -> str | None:
    """What is wrong with this answer to a bad request, or None."""
    if r.status_code >= 500:
        return f"{r.status_code}: {r.text[:300]}"
    if LEAKS.search(r.text):
        return f"leaks internals: {r.text[:300]}"
    if r.status_code < 400:
        return None
    if not r.headers.get("content-type", "").startswith("application/problem+json"):
        return f"{r.status_code} is not problem+json: {r.headers.get('content-type')} {r.text[:200]}"
    body = r.json()
    if not (body.get("title") and body.get("detail") and body.get("status") == r.status_code):
        return f"not a problem document: {r.text[:300]}"
    if r.status_code == 422:
        fields = [e.get("field") for e in body.get("errors") or []]
        if not fields or not all(fields):
            return f"422 names no field: {r.text[:300]}"
        if field is not None and not any(f == field or f.startswith(field) for f in fields):
            return f"422 names {fields}, not {field}: {r.text[:300]}"
    return None


def check(failures: list[str], what: str, r: httpx.Response | str, *, field: str | None = None) -> None:
    if isinstance(r, str):
        failures.append(f"{what} -> {r}")
    elif (problem := verdict(r, field=field)) is not None:
        failures.append(f"{what} -> {problem}")


def raw(client: httpx.Client, method: str, url: str, **kw: Any) -> httpx.Response | str:
    """A request whose URL goes out byte for byte as written (percent escapes kept); a request the
    server dropped without an answer is that failure, said."""
    request = client.build_request(method.upper(), url, **kw)
    try:
        return client.send(request)
    except httpx.TransportError as exc:
        return f"no answer: {exc!r}"


def test_hostile_path_values_are_refused_by_name(sync: httpx.Client, schema: dict[str, Any]) -> None:
    failures: list[str] = []
    for method, path, op in operations(schema):
        for param in params_of(op, "path"):
            values = {**HOSTILE_VALUES, **(HOSTILE_NUMBERS if is_integer(param) else {})}
            for name, value in values.items():
                url = fill(path, op, {param["name"]: value})
                what = f"{method.upper()} {path} {param['name']}={name}"
                check(failures, what, raw(sync, method, url, json={} if method in ("post", "put", "patch") else None))
    assert not failures, "\n".join(failures[:40])


def test_hostile_query_values_are_refused_by_name(sync: httpx.Client, schema: dict[str, Any]) -> None:
    failures: list[str] = []
    for method, path, op in operations(schema):
        if method != "get":
            continue
        for param in params_of(op, "query"):
            values = {**HOSTILE_VALUES, **(HOSTILE_NUMBERS if is_integer(param) else {})}
            if param["name"] == "cursor":
                values |= {"tampered": "01J0000000000000000000000Z", "padded": "%20" * 50, "array": "%5B%5D"}
            for name, value in values.items():
                url = f"{fill(path, op)}?{param['name']}={value}"
                check(failures, f"GET {path} ?{param['name']}={name}", raw(sync, "get", url))
            twice = f"{fill(path, op)}?{param['name']}=1&{param['name']}=2"
            check(failures, f"GET {path} ?{param['name']} repeated", raw(sync, "get", twice))
        check(failures, f"GET {path} unknown query", raw(sync, "get", f"{fill(path, op)}?zz%00z=1&=&&"))
    assert not failures, "\n".join(failures[:40])


BODIES: dict[str, tuple[str, bytes]] = {
    "text/plain": ("text/plain", b"hello"),
    "xml": ("application/xml", b"<a/>"),
    "form": ("application/x-www-form-urlencoded", b"a=1&b=2"),
    "multipart": (
        "multipart/form-data; boundary=x",
        b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--",
    ),
    "no type": ("", b'{"name": "x"}'),
    "json charset": ("application/json; charset=latin-1", b'{"name": "caf\xe9"}'),
    "empty": ("application/json", b""),
    "null": ("application/json", b"null"),
    "array": ("application/json", b"[]"),
    "string": ("application/json", b'"x"'),
    "number": ("application/json", b"1e309"),
    "deep": ("application/json", b"[" * 100_000 + b"]" * 100_000),
    "nul key": ("application/json", b'{"\\u0000": 1}'),
    "lone surrogate": ("application/json", b'{"name": "\\ud800", "title": "\\udfff"}'),
    "duplicate keys": ("application/json", b'{"name": "a", "name": "b"}'),
    "bom": ("application/json", b'\xef\xbb\xbf{"name": "x"}'),
}


def test_hostile_bodies_are_refused_by_name(sync: httpx.Client, schema: dict[str, Any], settings) -> None:
    failures: list[str] = []
    huge = b'{"name": "' + b"x" * (settings.max_body_bytes + 10) + b'"}'
    for method, path, op in operations(schema):
        if method not in ("post", "put", "patch"):
            continue
        url = fill(path, op)
        for name, (ctype, body) in {**BODIES, "huge": ("application/json", huge)}.items():
            headers = {"content-type": ctype} if ctype else {}
            check(
                failures, f"{method.upper()} {path} body {name}", raw(sync, method, url, content=body, headers=headers)
            )
    assert not failures, "\n".join(failures[:40])


def _fields(schema: dict[str, Any], op: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The top-level properties of an operation's JSON body (references resolved)."""
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    while "$ref" in body:
        body = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    return dict(body.get("properties", {}))


def _typed(prop: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    while "$ref" in prop:
        prop = schema["components"]["schemas"][prop["$ref"].rsplit("/", 1)[-1]]
    kinds = prop.get("type") if isinstance(prop.get("type"), list) else [prop.get("type")]
    for alt in prop.get("oneOf", []) + prop.get("anyOf", []):
        kinds += list(_typed(alt, schema))
    return {k for k in kinds if k}


OVERFLOW = ["9223372036854775808", "18446744073709551617", "-1", "1e309", "-1e309", "1" + "0" * 400]


def test_hostile_field_values_are_refused_by_name(sync: httpx.Client, schema: dict[str, Any]) -> None:
    """Each body field alone set to a value its type cannot hold (a number past 64 bits, a float
    past double, a NUL, a lone surrogate, the wrong JSON type), and an unknown field."""
    failures: list[str] = []
    for method, path, op in operations(schema):
        if method not in ("post", "put", "patch"):
            continue
        url = fill(path, op)
        fields = _fields(schema, op)
        for field, prop in fields.items():
            kinds = _typed(prop, schema)
            values = ['"a\\u0000b"', '"\\udc00"', '{"$gt": ""}', "[[[[[]]]]]", "true"]
            if kinds & {"integer", "number"}:
                values += OVERFLOW
            for value in values:
                body = f'{{"{field}": {value}}}'.encode()
                r = raw(sync, method, url, content=body, headers={"content-type": "application/json"})
                check(failures, f"{method.upper()} {path} {field}={value[:30]}", r)
        if fields:
            body = b'{"zz_unknown": 1}'
            r = raw(sync, method, url, content=body, headers={"content-type": "application/json"})
            check(failures, f"{method.upper()} {path} unknown field", r)
    assert not failures, "\n".join(failures[:40])


HEADERS: dict[str, dict[str, bytes]] = {
    "authorization not ascii": {"authorization": b"Bearer \xff\xfe\xc3\x28"},
    "authorization empty bearer": {"authorization": b"Bearer"},
    "authorization other scheme": {"authorization": b"Basic YTpi"},
    "authorization huge": {"authorization": b"Bearer " + b"k" * 6000},
    "if-match games": {"if-match": b'W/"\xff", *, "x"', "if-none-match": b"*", "if-modified-since": b"yesterday"},
    "accept odd": {"accept": b"application/\xff; q=abc"},
    "forwarding headers not ascii": {"x-forwarded-for": b"\xff", "x-request-id": b"\xe2\x80\xae"},
}


def test_hostile_headers_are_refused_cleanly(server_url: str, settings, schema: dict[str, Any]) -> None:
    failures: list[str] = []
    key = f"Bearer {settings.admin_key}".encode()
    with httpx.Client(base_url=server_url, timeout=30) as client:
        for method, path, op in operations(schema):
            if method != "get":
                continue
            for name, headers in HEADERS.items():
                sent = {"authorization": key, **headers}
                check(failures, f"GET {path} {name}", raw(client, "get", fill(path, op), headers=sent))
    assert not failures, "\n".join(failures[:40])


LAST_EVENT_IDS = ["-1", "abc", str(2**63), str(2**64 + 1), "1e309", "9" * 400, "\xe9", "1, 2", "0x10"]


def _stream_urls(sync: httpx.Client, schema: dict[str, Any]) -> list[str]:
    """Every SSE route of the schema, those of one resource on a resource that exists."""
    agent = sync.post("/v1/agents", json={"name": f"sse-{uuid.uuid4().hex[:8]}", "system_prompt": "hi"}).json()
    task = sync.post("/v1/tasks", json={"title": "streamed", "assignee": agent["id"]}).json()
    goal = sync.post("/v1/goals", json={"title": "streamed"}).json()
    ids = {"run_id": task["current_run_id"], "goal_id": goal["id"]}
    urls = []
    for path, item in schema["paths"].items():
        if STREAMS.search(path) and "get" in item:
            urls.append(re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path))
    assert len(urls) >= 4, urls
    return urls


def _opening(r: httpx.Response, lines: int = 6) -> list[str]:
    """The first lines of an event stream: its comments and keep-alives, or the error it ended on."""
    seen: list[str] = []
    for line in r.iter_lines():
        seen.append(line)
        if len(seen) >= lines:
            break
    return seen


def test_event_streams_resumed_from_a_bad_last_event_id_are_refused_by_name(
    sync: httpx.Client, schema: dict[str, Any]
) -> None:
    """An SSE route given a Last-Event-ID that is no stream sequence refuses it with a 422 naming the
    header, before the stream opens: past JetStream's range it would break a stream already under way."""
    failures: list[str] = []
    for url in _stream_urls(sync, schema):
        for value in LAST_EVENT_IDS:
            what = f"GET {url} Last-Event-ID {value[:20]!r}"
            try:
                with sync.stream("GET", url, headers={"last-event-id": value.encode("latin-1")}) as r:
                    if r.status_code == 200:
                        failures.append(f"{what} -> opened: {_opening(r)}")
                        continue
                    r.read()
                    check(failures, what, r, field="Last-Event-ID")
                    if r.status_code != 422:
                        failures.append(f"{what} -> {r.status_code}")
            except httpx.HTTPError as exc:
                failures.append(f"{what} -> {exc!r}")
    assert not failures, "\n".join(failures[:40])


def test_event_streams_resumed_from_a_sequence_open(sync: httpx.Client, schema: dict[str, Any]) -> None:
    """The largest sequence accepted still opens a stream that stays open (keep-alives, no error)."""
    for url in _stream_urls(sync, schema):
        for value in ("0", "7", str(2**63 - 1)):
            with sync.stream("GET", url, headers={"last-event-id": value}) as r:
                assert r.status_code == 200, (url, value, r.read())
                lines = _opening(r)
                assert lines[0] == ": connected" and not any("error" in line for line in lines), (url, value, lines)


def test_a_body_too_large_closes_its_connection_and_says_so(sync: httpx.Client, settings) -> None:
    """The rest of a refused body is never read, so the connection cannot carry the next request: the
    413 says `Connection: close`, and the client's next request goes out on a new connection."""
    huge = b'{"name": "' + b"x" * (settings.max_body_bytes + 10) + b'"}'
    for _ in range(3):
        r = sync.post("/v1/agents", content=huge, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.headers.get("connection") == "close", (r.status_code, r.headers)
        assert r.json()["errors"] == [{"field": "body", "message": r.json()["detail"]}]
        assert sync.get("/v1/agents").status_code == 200


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/plain", b"hello"), ("application/x-www-form-urlencoded", b"name=a"), ("application/xml", b"<a/>")],
)
def test_a_body_that_says_it_is_not_json_is_a_415_naming_the_content_type(
    sync: httpx.Client, content_type: str, body: bytes
) -> None:
    r = sync.post("/v1/agents", content=body, headers={"content-type": content_type})
    assert r.status_code == 415, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in r.json()["errors"]] == ["content-type"]


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"", "a JSON body is required"), (b"null", "got `null`"), (b"[]", "got `array`"), (b'"x"', "got `str`")],
)
def test_a_body_that_is_no_object_is_a_422_naming_the_body(sync: httpx.Client, body: bytes, message: str) -> None:
    r = sync.post("/v1/agents", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    (error,) = r.json()["errors"]
    assert error["field"] == "body" and message in error["message"], error


def test_a_page_stream_started_past_any_sequence_is_refused(app, server_url: str, settings) -> None:
    """The UI's streams take their start in a query too: bounded like Last-Event-ID."""
    from tests.core_api.test_ui import csrf_of

    with httpx.Client(base_url=server_url, timeout=30) as c:
        r = c.post("/ui/login", data={"_csrf": csrf_of(c.get("/ui/login").text), "key": settings.admin_key})
        assert r.status_code == 303, r.text
        for url in ("/ui/board/stream", "/ui/runs/run_x/stream"):
            r = c.get(url, params={"after": str(2**64 + 1)})
            assert 400 <= r.status_code < 500 and "after" in r.text, (url, r.status_code, r.text[:300])


def _ui_routes(app) -> list[tuple[str, str, list[str]]]:
    """(method, path, query parameter names) of every UI page and form."""
    from litestar.routes import HTTPRoute

    out = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/ui") or route.path.startswith("/ui/static"):
            continue
        for handler in route.route_handlers:
            names = [
                n
                for n in handler.parsed_fn_signature.parameters
                if n not in ("request", "data") and "{" + n + ":" not in route.path
            ]
            for method in set(handler.http_methods) - {"OPTIONS", "HEAD"}:
                out.append((method, route.path, names))
    assert len(out) >= 30, out
    return out


UI_FORM = {name: "a\x00b\ud800" for name in ("name", "title", "description", "reason", "key", "t", "status", "role")}


def test_hostile_ui_paths_queries_and_forms_are_never_a_server_error(app, server_url: str, settings) -> None:
    """The UI's pages and forms, signed in as an admin: hostile path and query values and form fields
    holding a NUL and a lone surrogate are refused as a page or problem, never a 5xx, and never hang."""
    from tests.core_api.test_ui import csrf_of

    failures: list[str] = []
    with httpx.Client(base_url=server_url, timeout=30) as c:
        r = c.post("/ui/login", data={"_csrf": csrf_of(c.get("/ui/login").text), "key": settings.admin_key})
        assert r.status_code == 303, r.text
        token = csrf_of(c.get("/ui/runs").text)
        for method, path, names in _ui_routes(app):
            for label, value in {
                "nul": "a%00b",
                "surrogate": "%ED%A0%80",
                "long": "x" * 3000,
                "big": str(2**64),
            }.items():
                url = re.sub(r"\{\w+:\w+\}", value, path)
                query = "&".join(f"{n}={value}" for n in names)
                form = {"_csrf": token, **{k: v.encode("utf-8", "surrogatepass") for k, v in UI_FORM.items()}}
                try:
                    with c.stream(method, f"{url}?{query}", data=form if method == "POST" else None) as r:
                        if r.status_code >= 500:
                            failures.append(f"{method} {path} {label} -> {r.status_code}: {r.read()[:300]!r}")
                        elif r.headers.get("content-type", "").startswith("text/event-stream"):
                            _opening(r, 2)
                        else:
                            r.read()
                            if LEAKS.search(r.text):
                                failures.append(f"{method} {path} {label} -> leaks: {r.text[:300]}")
                except httpx.HTTPError as exc:
                    failures.append(f"{method} {path} {label} -> {exc!r}")
    assert not failures, "\n".join(failures[:40])
