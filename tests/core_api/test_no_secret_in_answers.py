"""No answer but the one that made it shows a key: every documented read (OpenAPI walked, so a new
route is covered), run configs, audit entries, errors and every UI page are searched for the admin
key, a viewer's key, a runner token, their hashes and core-api's NATS credentials."""

import hashlib
import re
import uuid
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from tests.core_api.conftest import bearer, new_agent, new_key, new_run
from tests.core_api.test_ui import jar, sign_in

pytestmark = pytest.mark.infra
STREAMS = re.compile(r"/(events|stream)$")  # event streams never end: their keys' rules are test_stream_hold.py


def secrets_of(keys: list[str], creds: str) -> list[str]:
    found = [*keys, *(hashlib.sha256(k.encode()).hexdigest() for k in keys)]
    if creds:  # the JWT and the seed, each a line of the creds file
        found += [line for line in Path(creds).read_text().splitlines() if len(line) > 40 and " " not in line]
    return found


def reads(app: Litestar, prefix: str, ids: dict[str, str]) -> list[str]:
    out = []
    for route in app.routes:
        if isinstance(route, HTTPRoute) and route.path.startswith(prefix) and "GET" in route.methods:
            if not STREAMS.search(route.path) and "/static/" not in route.path:
                out.append(re.sub(r"\{(\w+):\w+\}", lambda m: ids.get(m.group(1), "zz_missing"), route.path))
    return out


async def test_no_read_error_or_page_shows_a_key(app: Litestar, client: AsyncTestClient, settings) -> None:
    agent = await new_agent(client)
    run = await new_run(client, agent)
    viewer = await new_key(client, "viewer")
    r = await client.post(f"/v1/runs/{run['id']}/token")
    runner = r.json()["key"]
    ids = {"agent_id": agent["id"], "run_id": run["id"], "task_id": run["task_id"], "agent_ref": agent["id"]}
    secrets = secrets_of([settings.admin_key, viewer, runner], settings.nats_creds)

    answers = {}
    for path in [*reads(app, "/v1", ids), f"/v1/runs/{run['id']}?config=true", "/healthz", "/readyz"]:
        answers[path] = (await client.get(path)).text
    answers["schema"] = (await client.get("/schema/openapi.json")).text
    answers["runner's own run"] = (await client.get(f"/v1/runs/{run['id']}", headers=bearer(runner))).text
    answers["a refused create"] = (await client.post("/v1/api-keys", json={"name": "Bad Name", "role": "x"})).text
    answers["a viewer refused"] = (await client.get("/v1/api-keys", headers=bearer(viewer))).text
    answers["an unknown key"] = (await client.get("/v1/agents", headers=bearer(f"nxk_{uuid.uuid4().hex}"))).text
    with jar(client, await sign_in(client, settings.admin_key)) as c:
        for path in reads(app, "/ui", ids):
            answers[path] = (await c.get(path)).text

    assert len(answers) > 60, sorted(answers)
    leaks = [(where, s[:12]) for where, text in answers.items() for s in secrets if s in text]
    assert leaks == []
