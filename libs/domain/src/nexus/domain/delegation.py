"""Whom a meta session may hand a child to: an agent that may do no more than its own agent, or one
its agent document names in `delegates_to`. "No more" is read field by field from the documents."""

from collections.abc import Mapping, Set
from typing import Any

import msgspec

from nexus.domain.agents import Limits, LLMSpec, MemoryPolicy, Permissions
from nexus.domain.limits import within_bounds

_DEFAULTS = {"deny": 0, "ask": 1, "allow": 2}  # a command matching no pattern: refused < asked < run


class Authority(msgspec.Struct, kw_only=True):
    """The parts of an agent document that say what its runs may do, reach and spend."""

    tools: list[str] = msgspec.field(default_factory=list)  # none listed: every tool
    permissions: Permissions = msgspec.field(default_factory=Permissions)
    limits: Limits = msgspec.field(default_factory=Limits)
    secrets: list[str] = msgspec.field(default_factory=list)
    llm: LLMSpec = msgspec.field(default_factory=LLMSpec)
    memory_policy: MemoryPolicy = msgspec.field(default_factory=MemoryPolicy)
    delegates_to: list[str] = msgspec.field(default_factory=list)  # agents' names, granted beyond its own

    def names_agent(self, name: str) -> bool:
        return name in self.delegates_to


def authority_of(spec: Mapping[str, Any]) -> Authority:
    """An agent's stored document read for its authority (the other fields are left out)."""
    return within_bounds(spec, Authority)


def _more(field: str, extra: Set[str]) -> list[str]:
    return [f"{field}: {', '.join(sorted(extra))}"] if extra else []


def _greater(field: str, child: float | None, parent: float | None) -> list[str]:
    """A cap the child has higher than the parent's (None: no cap at all)."""
    if parent is None or (child is not None and child <= parent):
        return []
    return [f"{field}: {'no cap' if child is None else child} (at most {parent})"]


def _tools(parent: Authority, child: Authority) -> list[str]:
    if not parent.tools:
        return []
    if not child.tools:
        return ["tools: every tool"]
    return _more("tools", set(child.tools) - set(parent.tools))


def _commands(parent: Permissions, child: Permissions) -> list[str]:
    p, c = parent.commands, child.commands
    found = []
    if _DEFAULTS[c.default] > _DEFAULTS[p.default]:
        found.append(f"permissions.commands.default: {c.default} (at most {p.default})")
    if c.network and not p.network:
        found.append("permissions.commands.network")
    found += _more("permissions.commands.ports", {str(port) for port in set(c.ports) - set(p.ports)})
    found += _more("permissions.commands.allow", set(c.allow) - set(p.allow))
    found += _more("permissions.commands.deny (missing)", set(p.deny) - set(c.deny))
    found += _greater("permissions.commands.timeout_s", c.timeout_s, p.timeout_s)
    found += _greater("permissions.commands.max_output_bytes", c.max_output_bytes, p.max_output_bytes)
    return found


def _permissions(parent: Permissions, child: Permissions) -> list[str]:
    found = [
        f"permissions.{flag}" for flag in ("can_commit", "can_merge") if getattr(child, flag) > getattr(parent, flag)
    ]
    found += _commands(parent, child)
    # An approval the parent's runs must ask for that the child's would not.
    return found + _more("permissions.ask (missing)", set(parent.ask) - set(child.ask))


def _limits(parent: Limits, child: Limits) -> list[str]:
    return [
        *_greater("limits.max_cost_usd", child.max_cost_usd, parent.max_cost_usd),
        *_greater("limits.max_tokens", child.max_tokens, parent.max_tokens),
        *_greater("limits.max_steps", child.max_steps, parent.max_steps),
        *_greater("limits.wall_clock_s", child.wall_clock_s, parent.wall_clock_s),
    ]


def _reach(parent: Authority, child: Authority) -> list[str]:
    """Secrets (the model's key among them), memory and the program an external brain starts."""
    held = set(parent.secrets) | ({parent.llm.api_key_secret} if parent.llm.api_key_secret else set())
    wanted = set(child.secrets) | ({child.llm.api_key_secret} if child.llm.api_key_secret else set())
    found = _more("secrets", wanted - held)
    if child.llm.provider == "external" and child.llm.command != parent.llm.command:
        found.append("llm.command")
    found += _more("memory_policy.scopes", set(child.memory_policy.scopes) - set(parent.memory_policy.scopes))
    return found + _more("delegates_to", set(child.delegates_to) - set(parent.delegates_to))


def excess(parent: Authority, child: Authority) -> list[str]:
    """What the child's agent may do that the parent's may not, each named by its field; [] when
    the child does not exceed the parent."""
    return [
        *_tools(parent, child),
        *_permissions(parent.permissions, child.permissions),
        *_limits(parent.limits, child.limits),
        *_reach(parent, child),
    ]
