"""One contract every BoardProvider keeps — Plane and Jira against their HTTP doubles, and the
internal board — including auth errors, 429s with reset headers, 5xx and pagination."""

import pytest

from nexus.board_sync.providers.base import AuthFailed, Card, Fields, Unavailable
from tests.board_sync.doubles import PROVIDERS, make_provider, served

pytestmark = pytest.mark.parametrize("kind", PROVIDERS)


async def test_create_then_find_by_external_id(kind):
    async with served(kind) as (provider, double):
        assert await provider.find_by_external_id("task_1") is None
        item = await provider.create_item(
            Card(task_id="task_1", title="Ship login", description="with tests", status="ready")
        )
        found = await provider.find_by_external_id("task_1")
        assert found is not None and found.id == item.id
        assert (found.external_id, found.title, found.description, found.group) == (
            "task_1",
            "Ship login",
            "with tests",
            "unstarted",
        )
        assert await provider.find_by_external_id("task_2") is None


async def test_find_pages_through_many_items(kind):
    async with served(kind) as (provider, _):
        for i in range(5):
            await provider.create_item(Card(task_id=f"task_{i}", title=f"T{i}"))
        found = await provider.find_by_external_id("task_4")
        assert found is not None and found.title == "T4"


async def test_every_status_group_round_trips(kind):
    async with served(kind) as (provider, _):
        item = await provider.create_item(Card(task_id="task_1", title="x"))
        assert (await provider.get_item(item.id)).group == "backlog"
        for group in ("started", "completed", "cancelled", "unstarted", "backlog"):
            await provider.update_status(item.id, group)
            assert (await provider.get_item(item.id)).group == group


async def test_fields_round_trip(kind):
    async with served(kind) as (provider, _):
        item = await provider.create_item(Card(task_id="task_1", title="old", description="a"))
        await provider.update_fields(
            item.id, Fields(title="new", description="line 1\nline 2", assignee="member-1", labels=["l1"])
        )
        got = await provider.get_item(item.id)
        assert (got.title, got.description, got.assignee, got.labels, got.external_id) == (
            "new",
            "line 1\nline 2",
            "member-1",
            ["l1"],
            "task_1",
        )


async def test_comments_and_links(kind):
    async with served(kind) as (provider, double):
        item = await provider.create_item(Card(task_id="task_1", title="x"))
        for i in range(5):  # more than one page in the doubles
            await provider.add_comment(item.id, f"run summary {i}")
        texts = [c.text for c in await provider.list_comments(item.id)]
        assert texts == [f"run summary {i}" for i in range(5)]
        await provider.link(item.id, "commit abc123", "https://git.example/acme/commit/abc123")
        if double is not None:
            assert double.calls[-1][0] == "POST" and double.calls[-1][1].endswith(("/links/", "/remotelink"))


async def test_refused_credential_is_an_auth_error(kind):
    if kind == "internal":
        pytest.skip("the internal board has no credential")
    async with served(kind) as (_, double):
        bad = make_provider(kind, double, f"http://127.0.0.1:{double.server.server_address[1]}", credential="wrong")
        with pytest.raises(AuthFailed):
            await bad.find_by_external_id("task_1")
        await bad.aclose()


async def test_429_waits_for_the_reset_and_succeeds(kind):
    if kind == "internal":
        pytest.skip("the internal board makes no calls")
    async with served(kind, rate_limit=3, window_s=1.0) as (provider, double):
        item = await provider.create_item(Card(task_id="task_1", title="x"))  # plane: states + create
        for i in range(4):
            await provider.add_comment(item.id, f"c{i}")
        assert double.throttled > 0  # the double did refuse some calls...
        assert len(await provider.list_comments(item.id)) == 4  # ...and every one went through after the reset


async def test_5xx_is_retried_then_reported_as_an_outage(kind):
    if kind == "internal":
        pytest.skip("the internal board makes no calls")
    async with served(kind) as (provider, double):
        item = await provider.create_item(Card(task_id="task_1", title="x"))
        double.outage = 2  # two failures, then up again: the retries absorb it
        await provider.add_comment(item.id, "after a blip")
        double.outage = -1  # down until cleared: the caller learns of the outage
        with pytest.raises(Unavailable):
            await provider.get_item(item.id)
        double.outage = 0
        assert [c.text for c in await provider.list_comments(item.id)] == ["after a blip"]


async def test_an_answer_that_is_not_json_is_retried_then_reported_as_an_outage(kind):
    if kind == "internal":
        pytest.skip("the internal board makes no calls")
    async with served(kind) as (provider, double):
        item = await provider.create_item(Card(task_id="task_1", title="x"))
        double.garbled = 2  # a proxy answering its own page twice: the retries absorb it
        assert (await provider.get_item(item.id)).title == "x"
        double.garbled = -1  # and while it lasts, the caller holds the change as in an outage
        with pytest.raises(Unavailable, match="not JSON"):
            await provider.get_item(item.id)


def _links(double, item_id: str) -> list[dict]:
    return list(getattr(double, "links", {}).get(item_id) or getattr(double, "remote_links", {}).get(item_id) or [])


@pytest.mark.parametrize("fault", ["drop_answer", "lose_answer"])
async def test_a_write_whose_answer_is_lost_is_made_once(kind, fault):
    """The board makes the write, then its answer is lost (the connection cut, or a gateway's 504): the
    write is looked for before it is sent again, so there is one comment, one link, one move."""
    if kind == "internal":
        pytest.skip("the internal board makes no calls")
    async with served(kind) as (provider, double):
        item = await provider.create_item(Card(task_id="task_1", title="x"))
        text = "Run run_1 succeeded.\nDid it."
        setattr(double, fault, ("POST", r".*/comments?/?$"))
        await provider.add_comment(item.id, text)  # before: sent again, a second comment
        assert [c.text for c in await provider.list_comments(item.id)] == [text]
        setattr(double, fault, ("POST", r".*/(links/|remotelink)$"))
        await provider.link(item.id, "Nexus run run_1", "http://nexus.test/v1/runs/run_1")
        assert [lk["url"] for lk in _links(double, item.id)] == ["http://nexus.test/v1/runs/run_1"]
        move = ("POST", r".*/transitions$") if kind == "jira" else ("PATCH", r".*/work-items/[^/]+/$")
        setattr(double, fault, move)
        await provider.update_status(item.id, "started")  # before (Jira): the move sent again was refused
        assert (await provider.get_item(item.id)).group == "started"
        assert getattr(double, fault) is None  # the fault did strike
