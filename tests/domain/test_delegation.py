"""Whether one agent document may do more than another, field by field."""

import pytest

from nexus.domain.delegation import authority_of, excess

PLANNER = {
    "name": "planner",
    "system_prompt": "Plan.",
    "tools": ["spawn_child", "write_file", "finish"],
    "permissions": {
        "can_commit": True,
        "commands": {"allow": ["pytest*"], "deny": ["rm *"], "timeout_s": 60},
        "ask": ["merge"],
    },
    "limits": {"max_tokens": 100_000, "max_cost_usd": 1.0},
    "secrets": ["REPO_TOKEN"],
}


def _with(**changes: object) -> dict:
    spec = {**PLANNER, **changes}
    return spec


def _found(child: dict, parent: dict = PLANNER) -> list[str]:
    return excess(authority_of(parent), authority_of(child))


def test_the_same_or_a_narrower_document_does_not_exceed() -> None:
    assert _found(PLANNER) == []
    narrower = _with(
        tools=["write_file", "finish"],
        permissions={
            "can_commit": False,
            "commands": {"allow": [], "deny": ["rm *", "curl *"], "timeout_s": 10},
            "ask": ["merge", "command"],
        },
        limits={"max_tokens": 5_000, "max_cost_usd": 0.1, "max_steps": 5},
        secrets=[],
    )
    assert _found(narrower) == []
    assert _found({"name": "x", "system_prompt": "y"}, {"name": "p", "system_prompt": "q"}) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"tools": []}, "tools: every tool"),
        ({"tools": ["write_file", "run_command"]}, "tools: run_command"),
        ({"permissions": {**PLANNER["permissions"], "can_merge": True}}, "permissions.can_merge"),
        (
            {
                "permissions": {
                    **PLANNER["permissions"],
                    "commands": {"allow": ["pytest*"], "deny": ["rm *"], "default": "ask"},
                }
            },
            "permissions.commands.default: ask (at most deny)",
        ),
        (
            {"permissions": {**PLANNER["permissions"], "commands": {"allow": ["pytest*", "bash*"], "deny": ["rm *"]}}},
            "permissions.commands.allow: bash*",
        ),
        (
            {"permissions": {**PLANNER["permissions"], "commands": {"allow": ["pytest*"]}}},
            "permissions.commands.deny (missing): rm *",
        ),
        (
            {
                "permissions": {
                    **PLANNER["permissions"],
                    "commands": {**PLANNER["permissions"]["commands"], "network": True},
                }
            },
            "permissions.commands.network",
        ),
        (
            {
                "permissions": {
                    **PLANNER["permissions"],
                    "commands": {**PLANNER["permissions"]["commands"], "ports": [27017]},
                }
            },
            "permissions.commands.ports: 27017",
        ),
        ({"permissions": {**PLANNER["permissions"], "ask": []}}, "permissions.ask (missing): merge"),
        ({"limits": {"max_tokens": 100_000}}, "limits.max_cost_usd: no cap (at most 1.0)"),
        ({"limits": {"max_tokens": 200_000, "max_cost_usd": 1.0}}, "limits.max_tokens: 200000 (at most 100000)"),
        ({"secrets": ["REPO_TOKEN", "CLOUD_KEY"]}, "secrets: CLOUD_KEY"),
        ({"llm": {"provider": "openai", "api_key_secret": "OPENAI_KEY"}}, "secrets: OPENAI_KEY"),
        ({"llm": {"provider": "external", "command": ["some-cli"]}}, "llm.command"),
        ({"memory_policy": {"scopes": ["agent", "repo", "global"]}}, ""),
        ({"delegates_to": ["deployer"]}, "delegates_to: deployer"),
    ],
)
def test_each_broader_field_is_named(change: dict, named: str) -> None:
    found = _found(_with(**change))
    assert (named in found) if named else found == [], found


def test_memory_scopes_wider_than_the_parents_are_named() -> None:
    parent = _with(memory_policy={"scopes": ["agent"]})
    assert _found(_with(), parent) == ["memory_policy.scopes: global, repo"]


def test_a_parent_naming_every_tool_and_no_cap_bounds_nothing_there() -> None:
    parent = _with(tools=[], limits={"max_tokens": 100_000, "max_cost_usd": None})
    assert _found(_with(tools=["run_command"], limits={"max_tokens": 100_000}), parent) == []
