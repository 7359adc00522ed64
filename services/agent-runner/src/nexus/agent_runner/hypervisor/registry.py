"""The tool registry: each tool is registered by the module that implements it, next to its
argument type (validated with msgspec, shown to the model as JSON Schema) and its description.
Tool names are a contract with agent documents and the runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from nexus.agent_runner.hypervisor.tools import Args, ToolResult, ToolSpecJSON
from nexus.domain.agents import TOOL_NAMES

if TYPE_CHECKING:
    from nexus.agent_runner.hypervisor.core import Hypervisor

Handler = Callable[["Hypervisor", Any], Awaitable[ToolResult]]
H = TypeVar("H", bound=Callable[..., Awaitable[ToolResult]])


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    args: type[Args]
    description: str
    handler: Handler
    path_arg: bool  # its `path` argument is checked for secrets' values before it runs

    def spec(self) -> ToolSpecJSON:
        """Its arguments' JSON Schema is made once per process; each spec has a fresh copy (callers may change it)."""
        return ToolSpecJSON(
            name=self.name, description=self.description, parameters=msgspec.json.decode(_schema_json(self.args))
        )


@cache
def _schema_json(args: type[Args]) -> bytes:
    schema = msgspec.json.schema(args)
    body = dict(schema["$defs"][args.__name__])
    body.pop("title", None)
    body.setdefault("properties", {})
    body.setdefault("required", [])
    return msgspec.json.encode(body)


# In registration order, which is the order the model is shown the tools in.
TOOLS: dict[str, Tool] = {}


def tool(name: str, args: type[Args], description: str, *, path_arg: bool = False) -> Callable[[H], H]:
    """Register `handler(hypervisor, args)` as the tool `name`."""

    def register(handler: H) -> H:
        if name in TOOLS:
            raise ValueError(f"the tool {name!r} is registered twice")
        if name not in TOOL_NAMES:  # the catalog agent documents are checked against
            raise ValueError(f"the tool {name!r} is not in nexus.domain.agents.TOOL_NAMES")
        TOOLS[name] = Tool(name, args, description, handler, path_arg)
        return handler

    return register


def spec(name: str) -> ToolSpecJSON:
    return TOOLS[name].spec()


def warm() -> None:
    """Make every registered tool's schema now: the warm runner zygote calls this once (after importing
    the tool modules), so no forked run does."""
    for registered in TOOLS.values():
        _schema_json(registered.args)
