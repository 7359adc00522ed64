"""What every tool shares: the result the model gets back, the spec it is shown, and the base of
every tool's argument type. Each tool lives in its own module (file_tools, command_tools,
git_tools, session_tools) and registers there (registry.tool) with its argument type."""

from typing import Annotated

import msgspec

from nexus.domain.json_types import JsonObject

Doc = msgspec.Meta


class ToolResult(msgspec.Struct, kw_only=True):
    ok: bool
    output: str = ""
    error: str = ""


class ToolSpecJSON(msgspec.Struct, kw_only=True):
    name: str
    description: str
    parameters: JsonObject


class Args(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


# Every text a model sends that a ledger change keeps is bounded by its type: a change is one bus message
# (1 MiB by default), so an unbounded field was a run that could not record its own change.
MAX_PATH_CHARS = 4096
MAX_COMMAND_CHARS = 65_536

RelPath = Annotated[
    str,
    Doc(max_length=MAX_PATH_CHARS, description="A path relative to the workspace root (no absolute paths, no '..')."),
]


class NoArgs(Args):
    pass
