"""The provider-neutral shapes the runner speaks: messages in, a Completion out.

Stop reasons are normalised to one vocabulary whatever the provider says:
`end_turn` (a final answer), `tool_use` (the model wants tools run), `max_tokens`,
`stop_sequence`, `end_of_script` (the scripted provider ran out of steps); anything
else a provider reports (`content_filter`, `refusal`, …) is passed through as is.
"""

from typing import Literal, Protocol

import msgspec

from nexus.domain.json_types import JsonObject
from nexus.domain.limits import storable

STOP_END_TURN = "end_turn"
STOP_TOOL_USE = "tool_use"
STOP_MAX_TOKENS = "max_tokens"
STOP_END_OF_SCRIPT = "end_of_script"


class ToolSpec(msgspec.Struct, kw_only=True):
    name: str
    description: str
    parameters: JsonObject  # JSON Schema of the arguments


class ToolCall(msgspec.Struct, kw_only=True):
    id: str
    name: str
    arguments: JsonObject


class Message(msgspec.Struct, kw_only=True):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = msgspec.field(default_factory=list)
    tool_call_id: str | None = None  # set on role == "tool": the ToolCall.id this answers


class Usage(msgspec.Struct, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Completion(msgspec.Struct, kw_only=True):
    text: str
    tool_calls: list[ToolCall]
    usage: Usage
    stop_reason: str
    model: str
    cost_usd: float = 0.0


class LLMError(Exception):
    """A call to the model failed. `retryable` says whether trying again may help (429, 5xx,
    timeouts, dropped connections); `status` is the HTTP status when there was one.
    The message never contains the API key."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        # Seconds the server asked us to wait (Retry-After), if it said.
        self.retry_after = retry_after
        # The server's own error text, when it sent one (already free of the API key).
        self.detail = detail


class LLMConfigError(ValueError):
    """The LLM spec, script or secrets cannot make a provider; raised at construction."""


class LLMProvider(Protocol):
    name: str
    model: str

    async def complete(self, messages: list[Message], tools: list[ToolSpec]) -> Completion: ...

    async def aclose(self) -> None: ...


def as_text(text: str) -> str:
    """A model's text as UTF-8 and every store can carry it: a lone surrogate (JSON lets a reply write one)
    becomes '?', a NUL U+FFFD."""
    return storable(text.encode("utf-8", "replace").decode())


def approx_tokens(text: str) -> int:
    """About four characters per token: good enough to exercise accounting and limits
    when a provider reports no usage."""
    return len(text) // 4


def messages_text(messages: list[Message], tools: list[ToolSpec]) -> str:
    """Everything a prompt carries, flattened, for approximate token counts."""
    parts = [m.content for m in messages]
    parts += [msgspec.json.encode(m.tool_calls).decode() for m in messages if m.tool_calls]
    if tools:
        parts.append(msgspec.json.encode(tools).decode())
    return "".join(parts)
