"""nexusctl against a real core-api and worker: apply, get, describe, delete, runs, approvals, keys."""

import json
import re
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from nexus.nexusctl import manifests
from tests.nexusctl.proxy import CuttingProxy

pytestmark = [pytest.mark.infra]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_DIRS = [str(EXAMPLES / d) for d in ("skills", "repos", "agents")]
FINAL = ("succeeded", "failed", "cancelled", "timed_out")


def uid() -> str:
    return uuid.uuid4().hex[:8]


def _api(nexus, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=nexus.url, headers={"Authorization": f"Bearer {key or nexus.admin_key}"}, timeout=30)


def _audit_count(nexus) -> int:
    with _api(nexus) as api:
        n, cursor = 0, None
        while True:
            page = api.get("/v1/audit", params={"limit": 500, **({"cursor": cursor} if cursor else {})}).json()
            n += len(page["items"])
            if not (cursor := page.get("next_cursor")):
                return n


def _task(ctl, agent: str, **spec) -> str:
    """Create a task for `agent` with apply (stdin) and return the id of the run it started."""
    doc = {"kind": "Task", "metadata": {"name": f"task-{uid()}"}, "spec": {"assignee": agent, **spec}}
    r = ctl("apply", "-f", "-", input=yaml.safe_dump(doc))
    assert r.code == 0, r.stderr
    m = re.search(r"created \(run (run_\w+)\)", r.stdout)
    assert m, r.stdout
    return m.group(1)


def _wait_run(nexus, run_id: str) -> dict:
    with _api(nexus) as api:
        for _ in range(600):  # a bound on polls, not a timed assertion
            run = api.get(f"/v1/runs/{run_id}").json()
            if run["status"] in FINAL:
                return run
            time.sleep(0.1)
    raise AssertionError(f"run {run_id} never ended: {run}")


def _wait_for_approval_request(nexus, run_id: str) -> None:
    """Follow the domain event feed until core-api says it stored an approval request of the run
    (it publishes approval.requested after the write); a read timeout bounds the wait."""
    params = {"types": "approval.requested"}
    with _api(nexus) as api, api.stream("GET", "/v1/events", params=params, timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and run_id in line:
                return


def _event_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"\d\d:\d\d:\d\d  ", line)]


# ---------------------------------------------------------------------------------- apply


def test_every_example_applies_and_a_second_apply_changes_nothing(ctl, nexus) -> None:
    expected = {m.ref.replace(" ", "-") for m in manifests.load(EXAMPLE_DIRS)}
    assert {"agent/hello", "agent/reviewer", "agent/planner", "agent/openai-coder", "skill/house-style"} <= expected

    first = ctl("apply", *[a for d in EXAMPLE_DIRS for a in ("-f", d)])
    assert first.code == 0, first.stderr
    assert {line.split()[0] for line in first.stdout.splitlines()} == expected
    # Other tests in this package apply a few of the same files; they never change them.
    assert {line.split()[1] for line in first.stdout.splitlines()} <= {"created", "unchanged"}, first.stdout
    assert "agent/openai-coder created (revision 1)" in first.stdout

    audit_before = _audit_count(nexus)
    again = ctl("apply", *[a for d in EXAMPLE_DIRS for a in ("-f", d)], "-o", "json")
    assert again.code == 0, again.stderr
    assert {r["action"] for r in json.loads(again.stdout)} == {"unchanged"}
    assert _audit_count(nexus) == audit_before  # nothing was written
    with _api(nexus) as api:
        for name in ("hello", "reviewer", "planner", "openai-coder"):
            assert [r["revision"] for r in api.get(f"/v1/agents/{name}/revisions").json()["items"]] == [1]
        coder = api.get("/v1/agents/openai-coder").json()
    assert coder["spec"]["llm"]["api_key_secret"] == "OPENAI_API_KEY"


def test_a_changed_agent_is_configured_as_revision_2(ctl, tmp_path: Path) -> None:
    name = f"writer-{uid()}"
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"kind: Agent\nmetadata: {{name: {name}}}\nspec:\n  system_prompt: You write.\n  tools: [write_file]\n"
    )
    assert ctl("apply", "-f", str(path)).stdout.strip() == f"agent/{name} created (revision 1)"
    path.write_text(path.read_text().replace("You write.", "You write carefully."))
    assert ctl("apply", "-f", str(path)).stdout.strip() == f"agent/{name} configured (revision 2)"
    assert ctl("apply", "-f", str(path)).stdout.strip() == f"agent/{name} unchanged (revision 2)"

    got = json.loads(ctl("get", "agent", name, "-o", "json").stdout)
    assert got["revision"] == 2 and got["spec"]["system_prompt"] == "You write carefully."
    described = ctl("describe", "ag", name)
    assert described.code == 0
    revisions = described.stdout.split("Revisions:")[1].split()
    assert revisions[3] == "2" and revisions[6] == "1", described.stdout  # newest first, after the header


def test_bad_manifests_are_reported_by_field(ctl, tmp_path: Path) -> None:
    tag = uid()
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"kind: Agent\nmetadata: {{name: enum-{tag}}}\nspec: {{system_prompt: hi, permissions: {{commands: {{default: sometimes}}}}}}\n"
        f"---\nkind: Agent\nmetadata: {{name: extra-{tag}}}\nspec: {{system_prompt: hi, colour: blue}}\n"
        f"---\nkind: Agent\nmetadata: {{name: Bad_{tag}}}\nspec: {{system_prompt: hi}}\n"
        f"---\nkind: Agent\nmetadata: {{name: skill-{tag}}}\nspec: {{system_prompt: hi, skills: [no-such-skill]}}\n"
        f"---\nkind: Agent\nmetadata: {{name: long-{tag}}}\nspec: {{system_prompt: hi, limits: {{wall_clock_s: -5}}}}\n"
        f"---\nkind: Skill\nmetadata: {{name: good-{tag}}}\nspec: {{content: fine}}\n"
    )
    r = ctl("apply", "-f", str(path))
    assert r.code == 1
    assert f"skill/good-{tag} created" in r.stdout  # like kubectl: what is valid is applied
    assert "spec.permissions.commands.default: Invalid enum value 'sometimes'" in r.stderr
    assert "spec.colour: Object contains unknown field `colour`" in r.stderr
    assert "metadata.name: Expected `str` matching regex" in r.stderr
    assert "spec.skills[0]: skill 'no-such-skill' does not exist" in r.stderr
    assert "spec.limits.wall_clock_s: Expected `int` >= 1" in r.stderr  # the API's range, said by field
    assert "5 of 6 manifests failed" in r.stderr
    assert ctl("get", "agent", f"skill-{tag}").code == 1  # never created with a dangling skill

    # A malformed file applies nothing at all.
    path.write_text(
        f"kind: Skill\nmetadata: {{name: s-{tag}}}\nspec: {{content: x}}\n---\nkind: Agent\nmetadata: {{}}\n"
    )
    r = ctl("apply", "-f", str(path))
    assert r.code == 1 and "bad.yaml#1: metadata.name: required" in r.stderr
    assert ctl("get", "skill", f"s-{tag}").code == 1


# ---------------------------------------------------------------------------------- get / describe / delete


def test_get_describe_and_delete(ctl, tmp_path: Path) -> None:
    tag = uid()
    path = tmp_path / "things.yaml"
    path.write_text(
        f"kind: Skill\nmetadata: {{name: notes-{tag}}}\nspec:\n  description: Notes.\n  content: |\n    # Notes\n    Keep them short.\n"
        f"---\nkind: Repository\nmetadata: {{name: repo-{tag}}}\n"
        f"spec: {{url: 'https://example.com/{tag}.git', credentials_secret: GH_TOKEN}}\n"
        f"---\nkind: MemoryItem\nmetadata: {{name: mem-{tag}}}\n"
        f"spec: {{scope: global, content: 'The build uses uv {tag}', tags: [build]}}\n"
    )
    assert ctl("apply", "-f", str(path)).code == 0
    assert f"skill/notes-{tag}" in ctl("get", "skills", "-o", "name").stdout.split()
    skill = yaml.safe_load(ctl("get", "sk", f"notes-{tag}", "-o", "yaml").stdout)
    assert skill["content"] == "# Notes\nKeep them short.\n" and skill["version"] == 1
    table = ctl("get", "repo", f"repo-{tag}").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "URL", "BRANCH", "CREDENTIALS"]
    assert table[1].split()[:4] == [f"repo-{tag}", f"https://example.com/{tag}.git", "main", "yes"]
    assert "GH_TOKEN" not in ctl("get", "repo", f"repo-{tag}", "-o", "json").stdout  # the secret's name stays inside
    memory = ctl("get", "memory", "--filter", "tag=build", "-o", "json")
    assert [i["content"] for i in json.loads(memory.stdout)["items"] if tag in i["content"]] == [
        f"The build uses uv {tag}"
    ]
    assert "Versions:" in ctl("describe", "skill", f"notes-{tag}").stdout
    assert "skill.create" in ctl("get", "audit", "--limit", "20").stdout

    assert ctl("delete", "skill", f"notes-{tag}").stdout.strip() == f"skill/notes-{tag} deleted"
    gone = ctl("get", "skill", f"notes-{tag}")
    assert gone.code == 1 and "Not found (404)" in gone.stderr
    assert ctl("delete", "skill", f"notes-{tag}").code == 1
    assert ctl("delete", "skill", f"notes-{tag}", "--ignore-not-found").code == 0

    bad_filter = ctl("get", "tasks", "--filter", "colour=red")
    assert bad_filter.code == 2 and "cannot be filtered by 'colour'" in bad_filter.stderr
    assert ctl("get", "robots").code == 1
    assert ctl("delete", "runs", "run_x").code == 2


# ---------------------------------------------------------------------------------- runs


def test_a_run_watched_logged_verified_and_resumed(ctl, nexus, tmp_path: Path) -> None:
    assert ctl("apply", "-f", str(EXAMPLES / "skills"), "-f", str(EXAMPLES / "agents" / "hello.yaml")).code == 0
    run_id = _task(ctl, "hello")

    live = ctl("runs", "watch", run_id)
    assert live.code == 0, live.stdout + live.stderr
    lines = _event_lines(live.stdout)
    text = "\n".join(lines)
    assert re.search(r"write +hello\.txt \(\d+ bytes\)", text), text
    assert re.search(r"command +\$ cat hello\.txt → exit 0", text), text
    assert "note      wrote hello.txt for task" in text and "status    succeeded" in text
    assert f"run {run_id} succeeded" in live.stdout and "summary:  hello.txt is written and checked." in live.stdout

    # Watching an ended run replays it and prints the same summary.
    again = ctl("runs", "watch", run_id)
    assert again.code == 0 and _event_lines(again.stdout) == lines

    # A connection cut after three events: resumed from Last-Event-ID, nothing lost, nothing twice.
    proxy = CuttingProxy(int(nexus.url.rsplit(":", 1)[1]))
    try:
        resumed = ctl("runs", "watch", run_id, NEXUS_URL=proxy.url)
    finally:
        proxy.close()
    assert proxy.cuts == 1
    assert resumed.code == 0 and "reconnecting" in resumed.stderr, resumed.stderr
    assert _event_lines(resumed.stdout) == lines
    assert any(b"last-event-id" in r.lower() for r in proxy.requests)

    logs = ctl("runs", "logs", run_id, "--raw")
    envelopes = [json.loads(line) for line in logs.stdout.splitlines()]
    assert [e["data"]["status"] for e in envelopes if e["type"] == "run.status"] == ["running", "succeeded"]
    assert len(envelopes) >= len(lines)

    verified = ctl("runs", "verify", run_id)
    assert verified.code == 0 and f"ledger of run {run_id} holds" in verified.stdout, verified.stdout

    saved = json.loads(ctl("get", "run", run_id, "-o", "json").stdout)
    saved["sessions"][0]["changes"][0]["relPath"] = "not-hello.txt"
    (tmp_path / "run.json").write_text(json.dumps(saved))
    tampered = ctl("runs", "verify", "--file", str(tmp_path / "run.json"))
    assert tampered.code == 1 and "breaks at change 0" in tampered.stdout

    sessions = ctl("get", "sessions", "--filter", f"run_id={run_id}")
    assert saved["session_id"] in sessions.stdout and "completed" in sessions.stdout
    described = ctl("describe", "run", run_id)
    assert "Attempts:" in described.stdout and "file-write" in described.stdout

    cancel = ctl("runs", "cancel", run_id)
    assert cancel.code == 1 and "run is already succeeded" in cancel.stderr
    retried = ctl("runs", "retry", run_id)
    assert retried.code == 0 and f"(retry of {run_id})" in retried.stdout
    _wait_run(nexus, retried.stdout.split()[0].split("/")[1])


def test_watch_exits_non_zero_when_the_run_fails(ctl, tmp_path: Path) -> None:
    name = f"short-{uid()}"
    (tmp_path / "a.yaml").write_text(
        f"kind: Agent\nmetadata: {{name: {name}}}\nspec:\n  system_prompt: hi\n  tools: [note, git_commit]\n"
        "  limits: {max_steps: 1}\n  llm:\n    provider: scripted\n    script: |\n      steps:\n"
        "        - tool_calls: [{name: note, args: {message: one}}]\n"
        "        - tool_calls: [{name: note, args: {message: two}}]\n"
    )
    assert ctl("apply", "-f", str(tmp_path / "a.yaml")).code == 0
    run_id = _task(ctl, name)
    watched = ctl("runs", "watch", run_id)
    assert watched.code == 1
    assert f"run {run_id} failed: step limit of 1 reached" in watched.stdout
    waited = ctl("runs", "wait", run_id)
    assert waited.code == 1 and f"run {run_id} failed: step limit of 1 reached" in waited.stdout


def test_wait_answers_with_the_runs_end_or_says_it_is_still_going(ctl, nexus, tmp_path: Path) -> None:
    assert ctl("apply", "-f", str(EXAMPLES / "skills"), "-f", str(EXAMPLES / "agents" / "hello.yaml")).code == 0
    run_id = _task(ctl, "hello")
    waited = ctl("runs", "wait", run_id)
    assert waited.code == 0, waited.stdout + waited.stderr
    assert f"run {run_id} succeeded" in waited.stdout and "hello.txt is written and checked." in waited.stdout
    # A run that cannot end soon: it waits for an approval nobody gives.
    name = f"asker-{uid()}"
    (tmp_path / "a.yaml").write_text(
        f"kind: Agent\nmetadata: {{name: {name}}}\nspec:\n  system_prompt: hi\n  tools: [run_command]\n"
        "  permissions: {commands: {default: ask}}\n  llm:\n    provider: scripted\n"
        "    script: |\n      steps:\n        - tool_calls: [{name: run_command, args: {cmd: echo hi}}]\n"
    )
    assert ctl("apply", "-f", str(tmp_path / "a.yaml")).code == 0
    pending = _task(ctl, name)
    still = ctl("runs", "wait", pending, "--timeout", "1")
    assert still.code == 3 and f"run {pending} is still" in still.stderr, still.stdout + still.stderr
    assert ctl("runs", "cancel", pending).code == 0
    assert ctl("runs", "wait", pending).code == 1


# ---------------------------------------------------------------------------------- approvals and keys


def test_approvals_and_keys(ctl, nexus) -> None:
    created = ctl("keys", "create", "--name", f"viewer-{uid()}", "--role", "viewer")
    assert created.code == 0 and "shown only once" in created.stderr
    viewer_key = created.stdout.strip()
    assert viewer_key.startswith("nxk_") and viewer_key not in created.stderr
    assert ctl("get", "agents", NEXUS_API_KEY=viewer_key).code == 0
    denied = ctl("apply", "-f", str(EXAMPLES / "skills"), NEXUS_API_KEY=viewer_key)
    assert denied.code == 1 and "Forbidden (403)" in denied.stderr and viewer_key not in denied.stderr + denied.stdout

    assert ctl("apply", "-f", str(EXAMPLES / "skills"), "-f", str(EXAMPLES / "agents" / "reviewer.yaml")).code == 0
    run_id = _task(ctl, "reviewer")
    _wait_for_approval_request(nexus, run_id)
    pending = json.loads(ctl("get", "approvals", "--filter", f"run_id={run_id}", "-o", "json").stdout)["items"]
    (approval,) = pending
    assert approval["action"] == "push_default_branch" and approval["status"] == "pending"

    no_reason = ctl("approvals", "reject", approval["id"])
    assert no_reason.code == 1 and "reason: a rejection needs a reason" in no_reason.stderr
    approved = ctl("approvals", "approve", approval["id"], "--reason", "looks good")
    assert approved.stdout.strip() == f"approval/{approval['id']} approved (run {run_id}, push_default_branch)"
    watched = ctl("runs", "watch", run_id)
    assert watched.code == 0, watched.stdout
    assert "push_default_branch needs a decision" in watched.stdout and "approved by" in watched.stdout

    key_id = next(
        k["id"]
        for k in json.loads(ctl("get", "keys", "-o", "json").stdout)["items"]
        if viewer_key.startswith(k["prefix"])
    )
    assert ctl("delete", "key", key_id).stdout.strip() == f"key/{key_id} revoked"
    revoked = ctl("get", "agents", NEXUS_API_KEY=viewer_key)
    assert revoked.code == 1 and "Unauthorized (401)" in revoked.stderr


def test_chat_bind_list_unbind(ctl) -> None:
    user_id = str(uuid.uuid4().int % 10**9)
    bound = ctl("chat", "bind", user_id, "--identity", "alice@example.com", "--role", "lead")
    assert bound.stdout.strip() == f"chat-binding/telegram:{user_id} alice@example.com (lead)", bound.stderr
    assert f"telegram:{user_id}" in ctl("chat", "list").stdout
    bad = ctl("chat", "bind", user_id, "--identity", "x", "--role", "admin")
    assert bad.code == 1 and "role" in bad.stderr
    assert ctl("chat", "unbind", user_id).stdout.strip() == f"chat-binding/telegram:{user_id} removed"
    assert f"telegram:{user_id}" not in ctl("chat", "list").stdout


def test_describe_goal_shows_progress_cost_budget_and_children(ctl, nexus) -> None:
    with _api(nexus) as api:
        goal = api.post("/v1/goals", json={"title": f"Ship {uid()}", "budget": {"usd": 2.0, "tokens": 5000}}).json()
        task = api.post(
            "/v1/tasks", json={"title": "write the page", "goal_id": goal["id"], "status": "backlog"}
        ).json()
        for _ in range(300):  # the goal follows its task's events
            if api.get(f"/v1/goals/{goal['id']}").json()["status"] == "in_progress":
                break
            time.sleep(0.1)
    described = ctl("describe", "goal", goal["id"])
    assert described.code == 0, described.stderr
    text = described.stdout
    assert "Status: in_progress (1 child tasks planned)" in text, text
    assert "Progress: 0 of 1 child tasks done (backlog 1)" in text
    assert "Budget: 2.0000 USD (0.0000 USD spent, 2.0000 USD left); 5000 tokens (0 spent, 5000 left)" in text
    assert "Children:" in text and task["id"] in text and "write the page" in text
    cancelled = ctl("describe", "goal", api_cancel(nexus, goal["id"]))
    assert "Report: cancelled" in cancelled.stdout and "Status: cancelled" in cancelled.stdout, cancelled.stdout


def api_cancel(nexus, goal_id: str) -> str:
    with _api(nexus) as api:
        r = api.post(f"/v1/goals/{goal_id}/cancel")
        assert r.status_code == 200, r.text
    return goal_id
