"""The web UI in a real browser (Debian's Chromium driven by Playwright) against every service as a
real process: sign in, create an agent from the form, start a task, watch its run's events arrive
and its card move on the board without reloading, approve the waiting request and see the run
finish; a viewer has no Approve button and a forged POST is refused, as is a POST without the CSRF
token. Every page visited is written as a screenshot (NEXUS_UI_SCREENSHOTS, else .artifacts/ui)."""

import os
import re
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import need_tool
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.infra]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("NEXUS_UI_SCREENSHOTS") or ROOT / ".artifacts" / "ui")
SCRIPT = """steps:
  - tool_calls: [{name: write_file, args: {path: notes/hello.txt, content: "written after a person said yes"}}]
  - say: done
"""
WAIT = 60_000  # ms: a bound on each wait for the page to show a state, not a timing claim


@pytest.fixture
async def browser() -> Browser:
    chromium = need_tool("chromium")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def signed_in(browser: Browser, base: str, key: str, *, scripts: bool = True) -> Page:
    page = await (await browser.new_context(base_url=base, java_script_enabled=scripts)).new_page()
    await page.goto("/ui/login")
    await page.fill("input[name=key]", key)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/ui/board")
    return page


async def test_admin_runs_a_task_through_the_browser(
    stack, api: httpx.AsyncClient, browser: Browser, bare_repo
) -> None:
    r = await api.post("/v1/repositories", json={"name": "demo", "url": str(bare_repo), "default_branch": "main"})
    assert r.status_code == 201, r.text
    base = stack.api_url

    # Sign in: the key becomes a session cookie the page's scripts cannot read.
    context = await browser.new_context(base_url=base)
    refused: list[str] = []  # what the pages' content policy blocked: every page here must need nothing of it
    context.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    page = await context.new_page()
    await page.goto("/ui/login")
    await shot(page, "login")
    await page.fill("input[name=key]", stack.env["NEXUS_ADMIN_KEY"])
    await page.click("button[type=submit]")
    await page.wait_for_url("**/ui/board")
    assert await page.evaluate("document.cookie") == ""  # HttpOnly

    # Create an agent from the form; it asks a person before writing.
    await page.goto("/ui/agents/new")
    form = page.locator("#agent-form")
    await form.locator("input[name=name]").fill("browser-writer")
    await form.locator("textarea[name=system_prompt]").fill("You write notes.")
    await form.locator("input[name=tools]").fill("write_file")
    await form.locator("input[name=ask]").fill("write:notes/*")
    await form.locator("textarea[name=llm_script]").fill(SCRIPT)
    await shot(page, "agent-new")
    await form.locator("button[type=submit]").click()
    await page.wait_for_url(re.compile(r".*/ui/agents/agt_[a-z0-9]+$"))
    await expect(page.locator("h1")).to_contain_text("browser-writer")
    await shot(page, "agent")
    agent = (await api.get("/v1/agents/browser-writer")).json()
    assert agent["spec"]["permissions"]["ask"] == ["write:notes/*"]

    # A skill's markdown is previewed as it is typed (an htmx POST carrying the CSRF header).
    await page.goto("/ui/skills/new")
    await page.fill("#skill-form input[name=name]", "tone")
    await page.fill("#skill-form textarea[name=content]", "# Be brief\n\n*one line*")
    await expect(page.locator("#preview h1")).to_have_text("Be brief", timeout=WAIT)
    await shot(page, "skill-new")

    # Start a task: the browser lands on its run, which pauses for the approval — shown live.
    await page.goto("/ui/tasks/new")
    await page.fill("#task-form input[name=title]", "Write the hello note")
    await page.select_option("#task-form select[name=assignee]", "browser-writer")
    await page.fill("#task-form input[name=repository]", "demo")
    await page.click("#task-form button[type=submit]")
    await page.wait_for_url(re.compile(r".*/ui/runs/run_[a-z0-9]+$"))
    run_id = page.url.rsplit("/", 1)[1]
    run_page = page
    await expect(run_page.locator("#live-status .status")).to_have_attribute(
        "data-status", "waiting_approval", timeout=WAIT
    )
    await expect(run_page.locator("#events li[data-type='run.approval_requested']")).to_have_count(1, timeout=WAIT)
    await shot(run_page, "run-waiting")
    events_before = await run_page.locator("#events li").count()

    # The board, open in another tab, shows the card waiting; it moves to Done by itself later.
    board = await page.context.new_page()
    await board.goto("/ui/board")
    run = (await api.get(f"/v1/runs/{run_id}")).json()
    card = board.locator(f"article[data-task='{run['task_id']}']")
    await expect(card).to_have_attribute("data-column", "waiting_approval", timeout=WAIT)
    await shot(board, "board-waiting")

    # Approve with a reason on the approvals page.
    approvals = await page.context.new_page()
    await approvals.goto("/ui/approvals")
    item = approvals.locator("article.approval", has_text="notes/hello.txt")
    await expect(item).to_have_count(1)
    await shot(approvals, "approvals")
    await item.locator("form[action$='/approve'] input[name=reason]").fill("a note is fine")
    await item.locator("button[data-decide=approve]").click()
    await approvals.wait_for_url("**/ui/approvals")

    # Neither the run page nor the board is reloaded: both follow the streams.
    await expect(run_page.locator("#live-status .status")).to_have_attribute("data-status", "succeeded", timeout=WAIT)
    await expect(run_page.locator("#run-status")).to_have_attribute(
        "data-status", "succeeded", timeout=WAIT
    )  # the facts, re-read
    await expect(run_page.locator("#events li[data-type='run.approval_decided']")).to_have_count(1, timeout=WAIT)
    assert await run_page.locator("#events li").count() > events_before
    await shot(run_page, "run-succeeded")
    await expect(card).to_have_attribute("data-column", "done", timeout=WAIT)
    await shot(board, "board-done")
    decided = (await api.get("/v1/approvals", params={"run_id": run_id, "status": "all"})).json()["items"][0]
    assert (decided["status"], decided["reason"]) == ("approved", "a note is fine")

    # The run page after a reload (what a browser without scripts reads): the session's file write and the ledger.
    await run_page.reload()
    await expect(run_page.locator(".change[data-type]", has_text="notes/hello.txt").first).to_be_visible()
    # ... with what the write changed: its diff, the added line styled as an addition.
    await expect(
        run_page.locator(".change[data-type='file-write'] pre.diff .add", has_text="+written after a person said yes")
    ).to_be_visible()
    await expect(run_page.locator("#ledger")).to_have_attribute("data-ok", "true")
    await shot(run_page, "run")

    for name, path in {
        "agents": "/ui/agents",
        "skills": "/ui/skills",
        "memory": "/ui/memory",
        "runs": "/ui/runs",
        "goals": "/ui/goals",
        "keys": "/ui/admin/keys",
        "audit": "/ui/admin/audit",
        "task": f"/ui/tasks/{run['task_id']}",
    }.items():
        response = await page.goto(path)
        assert response is not None and response.status == 200, path
        await shot(page, name)

    # A POST without the CSRF token is refused, even with the session cookie.
    r = await page.request.post(f"{base}/ui/runs/{run_id}/retry", form={"reason": "no token"})
    assert r.status == 403
    assert refused == []


async def test_a_viewer_cannot_approve(stack, api: httpx.AsyncClient, browser: Browser) -> None:
    r = await api.post("/v1/api-keys", json={"name": "watcher", "role": "viewer"})
    viewer_key = r.json()["key"]
    r = await api.post(
        "/v1/agents",
        json={
            "name": "asker",
            "system_prompt": "x",
            "permissions": {"ask": ["write:*"]},
            "llm": {"provider": "scripted", "script": SCRIPT},
        },
    )
    assert r.status_code == 201, r.text
    task = (await api.post("/v1/tasks", json={"title": "ask", "assignee": "asker"})).json()
    page = await wait_for(api, "/v1/approvals", lambda p: len(p["items"]) == 1)
    approval = page["items"][0]

    viewer = await signed_in(browser, stack.api_url, viewer_key)
    await viewer.goto("/ui/approvals")
    item = viewer.locator(f"article[data-approval='{approval['id']}']")
    await expect(item).to_have_count(1)
    await expect(viewer.locator("button[data-decide]")).to_have_count(0)
    await shot(viewer, "approvals-viewer")
    token = await viewer.locator("input[name=_csrf]").first.get_attribute("value")
    r = await viewer.request.post(
        f"{stack.api_url}/ui/approvals/{approval['id']}/approve", form={"_csrf": token, "reason": "forged"}
    )
    assert r.status == 403
    assert (await api.get(f"/v1/approvals/{approval['id']}")).json()["status"] == "pending"
    assert (await api.get(f"/v1/tasks/{task['id']}")).json()["current_run_id"] == approval["run_id"]

    # Reading needs no JavaScript: signed in through the plain form, the run page lists what happened so far.
    await wait_for(
        api, f"/v1/runs/{approval['run_id']}", lambda run: run["status"] == "waiting_approval"
    )  # a static page does not catch up
    plain = await signed_in(browser, stack.api_url, viewer_key, scripts=False)
    await plain.goto(f"/ui/runs/{approval['run_id']}")
    await expect(plain.locator("#live-status .status")).to_have_attribute("data-status", "waiting_approval")
    await expect(plain.locator("#events li[data-type='run.approval_requested']")).to_have_count(1)
    await plain.goto("/ui/board")
    await expect(plain.locator(f"article[data-task='{task['id']}']")).to_have_attribute(
        "data-column", "waiting_approval"
    )
    await shot(plain, "board-without-javascript")


async def test_a_card_dragged_to_another_column_moves_where_the_state_machine_allows(
    stack, api: httpx.AsyncClient, browser: Browser
) -> None:
    task = (await api.post("/v1/tasks", json={"title": "drag me", "status": "backlog"})).json()
    page = await signed_in(browser, stack.api_url, stack.env["NEXUS_ADMIN_KEY"])
    card = page.locator(f"article[data-task='{task['id']}']")
    await expect(card).to_have_attribute("data-column", "backlog", timeout=WAIT)
    lane = page.locator("section.lane", has=card)

    # Backlog → Done is not a move the state machine has: the server refuses it and the page says why.
    await card.drag_to(lane.locator(".column[data-column='done']"))
    await expect(page.locator("#board-message")).to_contain_text("409", timeout=WAIT)
    await expect(page.locator("#board-message")).to_contain_text("backlog to done")
    await shot(page, "board-drag-refused")
    assert (await api.get(f"/v1/tasks/{task['id']}")).json()["status"] == "backlog"

    # Backlog → Failed / cancelled is one: the move is stored and the card follows.
    await card.drag_to(lane.locator(".column[data-column='failed_cancelled']"))
    await expect(page.locator(f"article[data-task='{task['id']}']")).to_have_attribute(
        "data-column", "failed_cancelled", timeout=WAIT
    )
    assert (await api.get(f"/v1/tasks/{task['id']}")).json()["status"] == "cancelled"
    await expect(page.locator("#board-message")).to_contain_text("Moved “drag me” to Failed / cancelled")
    await shot(page, "board-drag-moved")
