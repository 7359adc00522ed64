"""Bodies that are not JSON the API can read — nested past any sane depth, invalid UTF-8 inside a
string, truncated, arbitrary bytes — are a 400 problem+json that names the issue, never a 500."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core_api.conftest import assert_problem

pytestmark = pytest.mark.infra

WRITES = ["/v1/agents", "/v1/skills", "/v1/tasks", "/v1/goals", "/v1/repositories", "/v1/api-keys"]


async def post_raw(client, path: str, body: bytes):
    return await client.post(path, content=body, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("path", WRITES)
async def test_json_nested_a_thousand_deep_is_a_400(client, path: str) -> None:
    body = b"[" * 1000 + b"]" * 1000
    assert len(body) == 2000
    problem = assert_problem(await post_raw(client, path, body), 400)
    assert "deep" in problem["detail"] or "nest" in problem["detail"], problem


@pytest.mark.parametrize("path", WRITES)
async def test_objects_nested_deep_inside_a_valid_field_are_a_400(client, path: str) -> None:
    body = b'{"name": "x", "metadata": ' + b'{"a":' * 600 + b"1" + b"}" * 600 + b"}"
    assert_problem(await post_raw(client, path, body), 400)


@pytest.mark.parametrize("path", WRITES)
async def test_invalid_utf8_inside_a_json_string_is_a_400(client, path: str) -> None:
    body = b'{"name": "caf\xc3\x28", "system_prompt": "x\xff\xfe"}'
    problem = assert_problem(await post_raw(client, path, body), 400)
    assert "UTF-8" in problem["detail"], problem


@pytest.mark.parametrize("path", WRITES)
async def test_truncated_json_is_a_400_naming_the_position(client, path: str) -> None:
    problem = assert_problem(await post_raw(client, path, b'{"name": "abc'), 400)
    assert "truncated" in problem["detail"], problem


# Raw bodies: JSON-ish fragments, deep nesting, bad bytes. Whatever the body, the answer is never a 5xx,
# and anything not 2xx is problem+json.
_fragments = st.sampled_from(
    [
        b"{",
        b"}",
        b"[",
        b"]",
        b'"',
        b":",
        b",",
        b"1",
        b"null",
        b'"name"',
        b"\\u",
        b"\\ud800",
        b"\xff",
        b"\xc3\x28",
        b"\xed\xa0\x80",
        b"\x00",
        b" ",
        b"1e999",
        b"-",
        b"tru",
    ]
)
_bodies = st.one_of(
    st.binary(max_size=300),
    st.lists(_fragments, max_size=80).map(b"".join),
    st.tuples(st.integers(1, 3000), st.sampled_from([b"[", b'{"a":'])).map(lambda t: t[1] * t[0]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
@given(path=st.sampled_from(WRITES), body=_bodies)
def test_raw_bodies_are_never_a_server_error(http_sync, path: str, body: bytes) -> None:
    r = http_sync.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code < 500, (body[:200], r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/problem+json"), r.headers


@pytest.fixture(scope="module")
def http_sync(server_url: str, settings_):
    import httpx

    with httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {settings_.admin_key}"}, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def settings_(settings):
    return settings
