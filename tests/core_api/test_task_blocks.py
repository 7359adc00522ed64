"""A task's end looks for the tasks it unblocks only when a task names it as a blocker: the mark is
set (and the version moved) before the naming task reads its status, so an end that started from a
copy made before the mark still sees it."""

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from nexus.core_api.workflow import engine, tasks
from nexus.core_api.workflow.followups import Promote
from nexus.db.documents import Task
from nexus.db.stats import COMMANDS
from nexus.db.writes import written
from nexus.domain.tasks import TaskStatus
from tests.core_api.conftest import in_app

pytestmark = pytest.mark.infra


def finds_of_tasks() -> float:
    return COMMANDS.labels("find", "tasks", "ok")._value.get()


async def _end(app: Litestar, task_id: str) -> list[str]:
    """The task ends as its run decides (from the copy this process kept, when it has one); the kinds
    of follow-up its end asked for, carried out."""
    then = await tasks.follow_run(task_id, TaskStatus.DONE, "run_test")
    await engine.carry_out(app.state.ctx, then)
    return [type(f).__name__ for f in then]


async def _kept(task_id: str) -> bool:
    return written.peek(Task, task_id) is not None


async def _keep_again(task: Task) -> None:
    """As a copy another core-api made before the mark (the mark forgets only this process's copy)."""
    written.keep(Task, task.id, task)


async def _copy(task_id: str) -> Task:
    return written.take(Task, task_id)


async def test_a_task_nobody_waits_for_ends_without_looking_for_what_it_unblocks(
    client: AsyncTestClient, app: Litestar
) -> None:
    alone = (await client.post("/v1/tasks", json={"title": "alone"})).json()
    assert await in_app(client, _kept, alone["id"])  # its end starts from the copy kept at its insert
    before = finds_of_tasks()
    assert Promote.__name__ not in await in_app(client, _end, app, alone["id"])
    assert finds_of_tasks() == before
    assert (await client.get(f"/v1/tasks/{alone['id']}")).json()["status"] == "done"


async def test_a_blocker_named_after_its_copy_was_kept_still_unblocks_at_its_end(
    client: AsyncTestClient, app: Litestar
) -> None:
    first = (await client.post("/v1/tasks", json={"title": "first"})).json()
    assert await in_app(client, _kept, first["id"])  # kept before anything named it
    second = (await client.post("/v1/tasks", json={"title": "second", "blocked_by": [first["id"]]})).json()
    assert second["status"] == "backlog"
    assert Promote.__name__ in await in_app(client, _end, app, first["id"])
    assert (await client.get(f"/v1/tasks/{second['id']}")).json()["status"] == "ready"


async def test_a_copy_made_before_the_mark_elsewhere_is_refused_and_the_mark_read(
    client: AsyncTestClient, app: Litestar
) -> None:
    first = (await client.post("/v1/tasks", json={"title": "first"})).json()
    before_mark = await in_app(client, _copy, first["id"])
    second = (await client.post("/v1/tasks", json={"title": "second", "blocked_by": [first["id"]]})).json()
    await in_app(client, _keep_again, before_mark)
    assert Promote.__name__ in await in_app(client, _end, app, first["id"])
    assert (await client.get(f"/v1/tasks/{second['id']}")).json()["status"] == "ready"


async def test_a_blocker_named_by_an_edit_unblocks_at_its_end(client: AsyncTestClient, app: Litestar) -> None:
    first = (await client.post("/v1/tasks", json={"title": "first"})).json()
    second = (await client.post("/v1/tasks", json={"title": "second", "status": "ready"})).json()
    third = (await client.post("/v1/tasks", json={"title": "third", "blocked_by": [second["id"]]})).json()
    r = await client.patch(f"/v1/tasks/{third['id']}", json={"blocked_by": [first["id"]]})
    assert r.status_code == 200, r.text
    assert Promote.__name__ in await in_app(client, _end, app, first["id"])
    assert (await client.get(f"/v1/tasks/{third['id']}")).json()["status"] == "ready"
