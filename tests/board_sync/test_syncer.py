"""The Syncer against a real database and the Plane and Jira doubles: an item someone deleted on the
external board is made again (by a task change, a webhook or the drift check) instead of failing
every change after it, and board text the boards would refuse (long or multi-line titles, very long
descriptions) is fitted so the item is made, and stays quiet to the drift check afterwards."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nexus.board_sync.links import LinkStore
from nexus.board_sync.providers.base import DESCRIPTION_MAX, TITLE_MAX, Unavailable
from nexus.board_sync.resolver import ProviderResolver
from nexus.board_sync.sync import Syncer
from nexus.db.documents import Repository, Run, Task
from nexus.dev.doubles.base import HttpDouble
from nexus.dev.doubles.jira import JiraDouble
from nexus.dev.doubles.plane import PlaneDouble
from nexus.events.payloads import BoardExternalChanged, CancelTask
from nexus.observability.secrets import SecretStore

KINDS = ("plane", "jira")


def settings_of(kind: str, double: HttpDouble, url: str) -> dict:
    if kind == "plane":
        assert isinstance(double, PlaneDouble)
        conf = {"base_url": url, "workspace_slug": double.workspace, "project_id": double.project_id}
        conf |= {"api_key_secret": "BOARD_KEY", "rate_limit_per_minute": 0}
    else:
        conf = {"base_url": url, "project_key": "NEX", "email": "bot@example.com", "api_token_secret": "BOARD_KEY"}
        conf |= {"rate_limit_per_minute": 0}
    return {"_id": "default", "provider": kind, kind: conf, "updated_at": 1}


class Board:
    """One double, the syncer in front of it, and what the double holds per task."""

    def __init__(self, kind: str, double: HttpDouble, syncer: Syncer, links: LinkStore) -> None:
        self.kind = kind
        self.double = double
        self.syncer = syncer
        self.links = links
        self.cancels: list[CancelTask] = []

    def items(self, task_id: str) -> list[dict]:
        if isinstance(self.double, PlaneDouble):
            return self.double.by_external_id(task_id)
        assert isinstance(self.double, JiraDouble)
        return [i for i in self.double.issues.values() if f"nexus-{task_id}" in i["fields"]["labels"]]

    def title(self, item: dict) -> str:
        return str(item["name"] if self.kind == "plane" else item["fields"]["summary"])

    def delete(self, item: dict) -> None:
        """A person deletes the item by hand on the external board."""
        with self.double.lock:
            if isinstance(self.double, PlaneDouble):
                del self.double.items[item["id"]]
            else:
                assert isinstance(self.double, JiraDouble)
                del self.double.issues[item["key"]]

    @property
    def creates(self) -> int:
        return int(getattr(self.double, "creates", 0))


@contextlib.asynccontextmanager
async def board(kind: str, fresh_db, tmp_path: Path) -> AsyncIterator[Board]:
    double: HttpDouble = PlaneDouble(page_size=2) if kind == "plane" else JiraDouble(page_size=2)
    url = double.start()
    database = Task.get_pymongo_collection().database
    await database["board_providers"].insert_one(settings_of(kind, double, url))
    key = "plane_api_key" if kind == "plane" else "jira_api_token"
    resolver = ProviderResolver(database["board_providers"], SecretStore(tmp_path, {"NEXUS_SECRET_BOARD_KEY": key}))
    links = LinkStore(database["board_links"])
    cancels: list[CancelTask] = []

    async def cancel(cmd: CancelTask) -> None:
        cancels.append(cmd)

    b = Board(kind, double, Syncer(links, resolver, nexus_url="http://nexus.test", cancel=cancel), links)
    b.cancels = cancels
    try:
        yield b
    finally:
        await resolver.aclose()
        double.stop()


async def new_task(title: str = "Ship login", description: str = "", status: str = "ready") -> Task:
    task = Task(id=f"task_{uuid.uuid4().hex[:12]}", title=title, description=description, status=status)
    await task.insert()
    return task


def item_id(b: Board, item: dict) -> str:
    return str(item["id"] if b.kind == "plane" else item["key"])


@pytest.mark.parametrize("kind", KINDS)
async def test_an_item_deleted_on_the_board_is_made_again_by_the_next_change(kind, fresh_db, tmp_path):
    async with board(kind, fresh_db, tmp_path) as b:
        task = await new_task()
        await b.syncer.sync_task(task.id)
        [first] = b.items(task.id)
        b.delete(first)
        task.title, task.status = "Ship login, renamed", "in_progress"
        await task.save()
        await b.syncer.sync_task(task.id)  # before: the 404 failed this change (and every later one)
        [again] = b.items(task.id)
        assert item_id(b, again) != item_id(b, first) and b.title(again) == "Ship login, renamed"
        link = await b.links.get(task.id)
        assert link is not None and link.item_id == item_id(b, again) and link.group == "started"
        assert b.creates == 2
        assert await b.syncer.sync_task(task.id) == 0  # and it is quiet afterwards


@pytest.mark.parametrize("kind", KINDS)
async def test_the_drift_check_remakes_a_deleted_item_and_still_repairs_the_others(kind, fresh_db, tmp_path):
    async with board(kind, fresh_db, tmp_path) as b:
        gone, drifted = await new_task("Gone"), await new_task("Drifted")
        for t in (gone, drifted):
            await b.syncer.sync_task(t.id)
        b.delete(b.items(gone.id)[0])
        drifted.title = "Drifted, renamed in Nexus"
        await drifted.save()  # no event: only the drift check sees it
        assert await b.syncer.reconcile() == 2  # before: the 404 ended the pass before the other item
        assert [b.title(i) for i in b.items(gone.id)] == ["Gone"]
        assert [b.title(i) for i in b.items(drifted.id)] == ["Drifted, renamed in Nexus"]
        assert await b.syncer.reconcile() == 0


async def test_a_webhook_about_a_deleted_item_makes_it_again(fresh_db, tmp_path):
    async with board("plane", fresh_db, tmp_path) as b:
        task = await new_task()
        await b.syncer.sync_task(task.id)
        [first] = b.items(task.id)
        b.delete(first)
        change = BoardExternalChanged(provider="plane", delivery_id="d1", event="issue", item_id=first["id"])
        assert await b.syncer.on_external(change) == "recreated"
        [again] = b.items(task.id)
        assert again["id"] != first["id"] and b.cancels == []


@pytest.mark.parametrize("kind", KINDS)
async def test_titles_and_descriptions_the_board_would_refuse_are_fitted(kind, fresh_db, tmp_path):
    async with board(kind, fresh_db, tmp_path) as b:
        title = "Fix <b>the</b> parser\nfor “unicode” ✓ " + "x" * 480  # the board allows 500 characters
        description = "line\n" * (DESCRIPTION_MAX // 4)
        task = await new_task(title, description)
        await b.syncer.sync_task(task.id)  # before: a 400 from the board, dead-lettered, no item ever
        [item] = b.items(task.id)
        shown = b.title(item)
        assert len(shown) == TITLE_MAX and shown.startswith("Fix <b>the</b> parser for “unicode” ✓ x")
        assert shown.endswith("…") and "\n" not in shown
        got = await (await b.syncer.resolver.for_scope("default")).get_item(item_id(b, item))
        assert len(got.description) == DESCRIPTION_MAX and got.description.startswith("line\nline\n")
        # what was written is what board-sync remembers: no drift repaired, no echo taken for an edit
        assert await b.syncer.reconcile() == 0
        change = BoardExternalChanged(provider=kind, delivery_id="d1", event="issue", item_id=item_id(b, item))
        assert await b.syncer.on_external(change) == "echo"
        task.title = "Short again"
        await task.save()
        await b.syncer.sync_task(task.id)
        assert [b.title(i) for i in b.items(task.id)] == ["Short again"] and b.creates == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_create_whose_answer_was_lost_is_linked_not_made_twice(kind, fresh_db, tmp_path):
    async with board(kind, fresh_db, tmp_path) as b:
        task = await new_task()
        create = r".*/work-items/$" if kind == "plane" else r"/rest/api/3/issue$"
        b.double.lose_answer = ("POST", create)  # the board makes the item, the answer never arrives
        with pytest.raises(Unavailable):  # held: the handler tries the change again
            await b.syncer.sync_task(task.id)
        await b.syncer.sync_task(task.id)  # before: Plane refused the retried create (409), Jira made a second
        [item] = b.items(task.id)
        link = await b.links.get(task.id)
        assert link is not None and link.item_id == item_id(b, item) and b.creates == 1


async def test_a_run_comment_held_halfway_goes_on_where_it_stopped(fresh_db, tmp_path):
    async with board("plane", fresh_db, tmp_path) as b:
        assert isinstance(b.double, PlaneDouble)
        repo = Repository(id="repo_1", name="r", url="https://git.example/acme/r.git")
        await repo.insert()
        task = await new_task()
        task.repository_id, task.status = repo.id, "done"
        await task.save()
        await b.syncer.sync_task(task.id)
        run = Run(id="run_1", task_id=task.id, agent_id="a", agent_revision=1, session_id="s", status="succeeded")
        run.summary, run.commit_sha, run.branch = "Did it.", "abc123def4567890", "nexus/t"
        await run.insert()
        task.current_run_id = run.id
        await task.save()
        [item] = b.items(task.id)
        comment_route = b.double._comment

        def comment_then_outage(*args, **kw):
            answer = comment_route(*args, **kw)
            b.double.outage = -1  # Plane goes down right after the comment
            return answer

        b.double.routes = [(m, p, comment_then_outage if f == comment_route else f) for m, p, f in b.double.routes]
        with pytest.raises(Unavailable):
            await b.syncer.sync_task(task.id)
        b.double.outage = 0
        b.double.routes = [(m, p, comment_route if f == comment_then_outage else f) for m, p, f in b.double.routes]
        b.double.lose_answer = ("POST", r".*/links/$")  # and the answer to the first link is lost
        await b.syncer.sync_task(task.id)  # before: the comment again, then the retried link refused (400)
        assert len(b.double.comments[item["id"]]) == 1
        assert [lk["url"] for lk in b.double.links[item["id"]]] == [
            "http://nexus.test/v1/runs/run_1",
            "https://git.example/acme/r/commit/abc123def4567890",
        ]
        assert await b.syncer.sync_task(task.id) == 0 and len(b.double.links[item["id"]]) == 2


async def test_the_syncer_keeps_no_lock_for_tasks_it_is_not_syncing(fresh_db, tmp_path):
    async with board("plane", fresh_db, tmp_path) as b:
        tasks = [await new_task(f"T{i}") for i in range(3)]
        await asyncio.gather(*(b.syncer.sync_task(t.id) for t in tasks * 2))  # each task twice at once
        assert len(b.items(tasks[0].id)) == 1 and b.creates == 3
        await b.syncer.reconcile()
        assert b.syncer._locks == {}  # before: one lock per task ever synced, for the life of the process
