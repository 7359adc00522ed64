"""An agent document at the far end of every range the API takes runs to its end through the real
worker and runner: the ceilings are values a run can live with (its bus credential, its deadline, its
commands' rlimits and output cap), not only values the API lets in. What is past them is refused by
field before anything is stored (tests/core_api/test_numeric_bounds.py)."""

import httpx
import msgspec
import pytest

from nexus.domain.agents import CommandPolicy, Limits, LLMSpec, MemoryPolicy
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

SCRIPT = """
steps:
  - tool_calls:
      - name: run_command
        args: {cmd: "echo far"}
  - say: "Done."
"""


def _highest(struct: type[msgspec.Struct]) -> dict[str, float]:
    """Each number of `struct` at its range's top, read from the type (a range added later is run too)."""
    out = {}
    for f in msgspec.inspect.type_info(struct).fields:  # type: ignore[attr-defined]
        t = f.type.types[0] if isinstance(f.type, msgspec.inspect.UnionType) else f.type
        t = t.type if isinstance(t, msgspec.inspect.Metadata) else t
        if isinstance(t, msgspec.inspect.IntType | msgspec.inspect.FloatType) and t.le is not None:
            out[f.name] = t.le
    return out


async def test_an_agent_at_every_ceiling_runs_to_its_end(api: httpx.AsyncClient) -> None:
    limits, commands = _highest(Limits), _highest(CommandPolicy)
    assert {"wall_clock_s", "max_steps", "max_tokens", "max_cost_usd"} <= limits.keys(), limits
    assert {"timeout_s", "max_output_bytes"} <= commands.keys(), commands
    r = await api.post(
        "/v1/agents",
        json={
            "name": "far",
            "system_prompt": "You go far.",
            "tools": ["run_command", "note", "finish"],
            "permissions": {"commands": {"allow": ["echo *"], **commands}},
            "memory_policy": _highest(MemoryPolicy),
            "llm": {"provider": "scripted", "script": SCRIPT, **_highest(LLMSpec)},
            "limits": limits,
        },
    )
    assert r.status_code == 201, r.text
    r = await api.post("/v1/tasks", json={"title": "go far", "assignee": "far"})
    assert r.status_code == 201, r.text
    run_id = r.json()["current_run_id"]
    run = await wait_for(
        api, f"/v1/runs/{run_id}", lambda b: b["status"] in ("succeeded", "failed", "lost", "timed_out")
    )
    assert run["status"] == "succeeded", run
    assert run["config"]["limits"] == limits
