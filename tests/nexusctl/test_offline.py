"""nexusctl's pure parts, no server: manifests, ledger verification, SSE parsing, config."""

import json
from pathlib import Path

import httpx
import msgspec
import pytest
from typer.testing import CliRunner

from nexus.domain.ledger import seal
from nexus.domain.sessions import CommandRunChange, FileWriteChange, NoteChange
from nexus.nexusctl import config, events, manifests, verify
from nexus.nexusctl.main import app

T = "2026-01-01T00:00:00.000Z"


# ------------------------------------------------------------------------------ manifests


def _error(text: str) -> manifests.ManifestError:
    with pytest.raises(manifests.ManifestError) as info:
        manifests.parse("m.yaml", text)
    return info.value


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("kind: Agent\nspec: {system_prompt: hi}\n", "metadata"),
        ("kind: Agent\nmetadata: {}\nspec: {}\n", "metadata.name"),
        ("kind: Agent\nmetadata: {name: a, owner: me}\n", "metadata.owner"),
        ("kind: Robot\nmetadata: {name: a}\n", "kind"),
        ("kind: Agent\nmetadata: {name: a}\nspecs: {}\n", "specs"),
        ("kind: Agent\nmetadata: {name: a}\nspec: [1, 2]\n", "spec"),
        ("kind: Agent\nmetadata: {name: a}\nspec: {name: b}\n", "spec.name"),
        ("apiVersion: v2\nkind: Agent\nmetadata: {name: a}\n", "apiVersion"),
        ("kind: Skill\nmetadata: {name: s}\nspec: {content_file: missing.md}\n", "spec.content_file"),
    ],
)
def test_a_malformed_manifest_names_its_field(text: str, field: str) -> None:
    assert _error(text).field == field


def test_folders_load_recursively_with_dependencies_first(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "a.yaml").write_text(
        "kind: Agent\nmetadata: {name: a}\nspec: {system_prompt: hi, skills: [s]}\n---\n"
        "kind: Task\nmetadata: {name: t}\nspec: {assignee: a}\n"
    )
    (tmp_path / "skills").mkdir()
    (tmp_path / "skills" / "s.md").write_text("# S\n")
    (tmp_path / "skills" / "s.yml").write_text("kind: Skill\nmetadata: {name: s}\nspec: {content_file: s.md}\n")
    (tmp_path / "package.json").write_text('{"name": "not a manifest"}')
    loaded = manifests.load([str(tmp_path)])
    assert [(m.kind.manifest, m.name) for m in loaded] == [("Skill", "s"), ("Agent", "a"), ("Task", "t")]
    assert loaded[0].spec == {"content": "# S\n"}
    assert loaded[1].source.endswith("a.yaml#0") and loaded[2].source.endswith("a.yaml#1")


def test_the_same_object_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "kind: Skill\nmetadata: {name: s}\nspec: {content: a}\n---\nkind: Skill\nmetadata: {name: s}\n"
    )
    with pytest.raises(manifests.ManifestError, match="also defined"):
        manifests.load([str(tmp_path)])


# ------------------------------------------------------------------------------ ledger


def _run_with(changes: list[dict], ledger_hash: str) -> dict:
    return {
        "id": "run_x",
        "status": "succeeded",
        "session_id": "ses_x",
        "ledger_hash": ledger_hash,
        "sessions": [{"sessionId": "ses_x", "changes": changes}],
    }


@pytest.fixture
def chain() -> list[dict]:
    sealed = seal(
        [
            FileWriteChange(rel_path="hello.txt", bytes=6, timestamp=T),
            CommandRunChange(cmd="cat hello.txt", exit_code=0, timestamp=T),
            NoteChange(message="wrote hello.txt", timestamp=T),
        ]
    )
    return [msgspec.to_builtins(c) for c in sealed]  # the wire form the API returns


def test_an_intact_chain_holds(chain: list[dict]) -> None:
    check = verify.check_run(_run_with(chain, chain[-1]["hash"]), [{"sessionId": "ses_x", "changes": chain}])
    assert check.ok, verify.report(check)
    assert verify.report(check)[-1].startswith("ledger of run run_x holds")


@pytest.mark.parametrize(
    ("tamper", "broken_at", "why"),
    [
        (lambda c: c[1].update(exitCode=1), 1, "does not hash"),  # an edited change
        (lambda c: c.pop(1), 1, "seq is 2"),  # a removed change
        (lambda c: c.insert(0, c.pop(2)), 0, "seq is 2"),  # reordered
        (lambda c: c[2].update(prevHash="0" * 64), 2, "prevHash"),
    ],
)
def test_tampering_is_found_where_it_happened(chain: list[dict], tamper, broken_at: int, why: str) -> None:
    final = chain[-1]["hash"]
    tamper(chain)
    run = _run_with(chain, final)
    check = verify.check_run(run, run["sessions"])
    assert not check.ok
    (session,) = check.sessions
    assert session.broken_at == broken_at and why in session.why, session


def test_a_chain_cut_short_disagrees_with_the_run(chain: list[dict]) -> None:
    final = chain[-1]["hash"]
    run = _run_with(chain[:-1], final)  # every remaining link verifies; the end is missing
    check = verify.check_run(run, run["sessions"])
    assert not check.ok and check.sessions[0].ok
    assert "ends on" in check.problems[0]


def test_runs_verify_reads_a_saved_run(chain: list[dict], tmp_path: Path) -> None:
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(_run_with(chain, chain[-1]["hash"])))
    ok = CliRunner().invoke(
        app, ["runs", "verify", "--file", str(saved)], env={"NEXUSCTL_CONFIG": str(tmp_path / "none")}
    )
    assert ok.exit_code == 0 and "holds" in ok.stdout
    chain[0]["relPath"] = "evil.txt"
    saved.write_text(json.dumps(_run_with(chain, chain[-1]["hash"])))
    bad = CliRunner().invoke(
        app, ["runs", "verify", "--file", str(saved)], env={"NEXUSCTL_CONFIG": str(tmp_path / "none")}
    )
    assert bad.exit_code == 1 and "breaks at change 0" in bad.stdout and "is BROKEN" in bad.stdout


# ------------------------------------------------------------------------------ events


def test_sse_parsing_skips_keepalives_and_keeps_ids() -> None:
    raw = ': connected\ndata: \n\nid: 7\nevent: run.note\ndata: {"type": "run.note"}\n\n: keep-alive\ndata: \n\n'
    assert list(events.parse_sse(iter(raw.split("\n")))) == [("7", "run.note", '{"type": "run.note"}')]


def test_a_command_reads_as_one_line() -> None:
    env = {
        "type": "run.command_run",
        "occurred_at": "2026-01-01T12:34:56.000Z",
        "data": {
            "session_id": "s",
            "change": {"type": "command-run", "cmd": "pytest -q", "exitCode": 1, "durationMs": 40},
        },
    }
    line = events.pretty(events.Event("1", "run.command_run", env))
    assert line == "12:34:56  command   $ pytest -q → exit 1 in 40 ms"
    assert events.pretty(events.Event("2", "run.heartbeat", {"data": {}})) is None


# ------------------------------------------------------------------------------ config


def _write_config(tmp_path: Path) -> Path:
    (tmp_path / "prod.key").write_text("nxk_from_file\n")
    path = tmp_path / "nexusctl.yaml"
    path.write_text(
        "current-context: local\n"
        "contexts:\n"
        "  - name: local\n    url: http://local:8080\n    api_key: nxk_local\n"
        "  - name: prod\n    context: {url: https://prod, api_key_file: prod.key}\n"
    )
    return path


def test_contexts_flags_and_environment(tmp_path: Path) -> None:
    env = {"NEXUSCTL_CONFIG": str(_write_config(tmp_path))}
    t = config.resolve(env)
    assert (t.url, t.api_key, t.context) == ("http://local:8080", "nxk_local", "local")
    t = config.resolve({**env, "NEXUS_URL": "http://env", "NEXUS_API_KEY": "nxk_env"})
    assert (t.url, t.api_key) == ("http://env", "nxk_env")  # the environment beats the current context
    t = config.resolve({**env, "NEXUS_URL": "http://env", "NEXUS_API_KEY": "nxk_env"}, context="prod")
    assert (t.url, t.api_key) == ("https://prod", "nxk_from_file")  # an explicit --context beats the environment
    t = config.resolve(env, url="http://flag/", api_key="nxk_flag")
    assert (t.url, t.api_key) == ("http://flag", "nxk_flag")
    with pytest.raises(config.ConfigError, match="no context named 'nope'"):
        config.resolve(env, context="nope")
    assert "nxk" not in repr(t)


def test_config_view_and_use_context_never_print_a_key(tmp_path: Path) -> None:
    env = {"NEXUSCTL_CONFIG": str(_write_config(tmp_path)), "NEXUS_API_KEY": "nxk_secret_env"}
    runner = CliRunner()
    r = runner.invoke(app, ["config", "use-context", "prod"], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["config", "view"], env=env)
    assert r.exit_code == 0, r.output
    assert "* prod" in r.stdout and "https://prod" in r.stdout
    assert "nxk_" not in r.output


# ------------------------------------------------------------------------------ board


def test_board_prints_columns_side_by_side():
    from nexus.nexusctl.commands.board import columns_text

    board = {
        "columns": [
            {
                "id": "backlog",
                "title": "Backlog",
                "cards": [{"title": "Write the docs", "run": None, "approvals_waiting": 0, "cost_usd": 0}],
            },
            {
                "id": "running",
                "title": "Running",
                "cards": [
                    {
                        "title": "Ship login",
                        "run": {"id": "run_1", "status": "running"},
                        "approvals_waiting": 1,
                        "cost_usd": 0.125,
                    }
                ],
            },
        ]
    }
    lines = columns_text(board, width=36).splitlines()
    assert lines[0].startswith("Backlog (1)") and "│ Running (1)" in lines[0]
    assert lines[2].startswith("Write the docs") and lines[2].rstrip().endswith("Ship login")
    assert lines[3].rstrip().endswith("running · 1 approval(s) · $0.12")


def test_following_reconnects_after_the_servers_error_event_and_resumes(monkeypatch) -> None:
    """The server ends a stream with an `error` event when it cannot read the run's events for a while
    (the bus out of reach): nexusctl comes back after the last event it saw, as after a dropped line."""
    from nexus.nexusctl.client import Client
    from nexus.nexusctl.config import Target

    first = (
        'id: 5\nevent: run.note\ndata: {"type": "run.note", "data": {"change": {"message": "one"}}}\n\n'
        'event: error\nretry: 2000\ndata: {"error": "the event stream is unavailable; reconnect to resume"}\n\n'
    )
    rest = 'id: 9\nevent: run.status\ndata: {"type": "run.status", "data": {"status": "succeeded"}}\n\n'
    asked: list[str | None] = []

    def serve(request: httpx.Request) -> httpx.Response:
        after = request.headers.get("last-event-id")
        asked.append(after)
        body = {None: first, "5": rest}.get(after, "")  # what a server sends after the event named
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())

    client = Client(Target(url="http://nexus.test", api_key="k"))
    client.http = httpx.Client(base_url="http://nexus.test", transport=httpx.MockTransport(serve))
    monkeypatch.setattr(events.time, "sleep", lambda _s: None)
    seen = [(ev.id, ev.type) for ev in events.follow(client, "run_x")]
    assert seen == [("5", "run.note"), ("9", "run.status")]
    assert asked[:2] == [None, "5"]


# ------------------------------------------------------------------------------ describe goal


def test_a_childs_budget_share_shows_its_amounts_not_an_unknown_spend() -> None:
    """A child's share carries no spend of its own (that is its USD and TOKENS columns): it read
    "1.6667 USD (- spent, - left); 32822 tokens (0 spent, None left)" beside a child that used 1032 tokens."""
    from nexus.nexusctl.goals import goal_sections

    child = {"task_id": "task_1", "status": "done", "run_status": "succeeded", "cost_usd": 0.0, "tokens": 1032}
    child |= {"budget": {"usd": 1.6666666666666667, "tokens": 32822}, "branch": "b", "title": "Write child-a.txt"}
    goal = {"status": "done", "children": [child]}
    goal["budget"] = {"usd": 5.0, "tokens": 100000, "spent_usd": 0.0, "spent_tokens": 4630}
    goal["budget"] |= {"left_usd": 5.0, "left_tokens": 95370}
    text = "\n".join(goal_sections(goal))
    assert "Budget: 5.0000 USD (0.0000 USD spent, 5.0000 USD left); 100000 tokens (4630 spent, 95370 left)" in text
    assert "1.6667 USD; 32822 tokens" in text
    assert "None" not in text and "- spent" not in text
