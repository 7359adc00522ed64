"""Reading stored data whose numbers are past ranges added after it was written (`within_bounds`), and
the agent document's ranges themselves (a NaN from a non-JSON path is refused like any value past them)."""

import math

import msgspec
import pytest

from nexus.domain.agents import DAY_S, Limits, MemoryPolicy, Permissions
from nexus.domain.delegation import authority_of
from nexus.domain.limits import within_bounds


def test_a_number_past_a_range_is_read_as_its_nearest_end() -> None:
    limits = within_bounds({"max_steps": -5, "wall_clock_s": 10**18, "max_cost_usd": -3.0}, Limits)
    assert (limits.max_steps, limits.wall_clock_s, limits.max_cost_usd) == (1, 7 * DAY_S, 0.0)
    assert within_bounds({"max_cost_usd": math.nan}, Limits).max_cost_usd == 0.0


def test_nested_optional_and_listed_values_are_reached() -> None:
    perms = within_bounds({"commands": {"timeout_s": 0, "ports": [*range(1, 200), 70000]}}, Permissions)
    assert perms.commands.timeout_s == 0.1 and perms.commands.ports == list(range(1, 101))
    authority = authority_of(
        {"limits": {"max_tokens": -1}, "llm": {"temperature": 7}, "memory_policy": {"max_items": -2}}
    )
    assert (authority.limits.max_tokens, authority.llm.temperature, authority.memory_policy.max_items) == (1, 2.0, 0)


def test_data_that_fits_is_read_unchanged_and_other_faults_still_fail() -> None:
    assert within_bounds({"max_items": 3}, MemoryPolicy) == MemoryPolicy(max_items=3)
    with pytest.raises(msgspec.ValidationError, match="max_steps"):
        within_bounds({"max_steps": "many"}, Limits)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_steps", 0),
        ("max_tokens", -1),
        ("wall_clock_s", 10**18),
        ("max_cost_usd", math.nan),
        ("max_cost_usd", math.inf),
    ],
)
def test_the_limits_refuse_what_no_run_can_use(field: str, value: float) -> None:
    with pytest.raises(msgspec.ValidationError, match=field):
        msgspec.convert({field: value}, Limits)
