"""Any OpenAI-compatible chat-completions endpoint with tool calling: OpenAI itself, vLLM,
Ollama, llama.cpp's server. `base_url` is the API root including `/v1`
(`http://localhost:11434/v1`), as the OpenAI clients expect.

Streams by default (SSE chunks, tool-call fragments assembled by index, usage from the
last chunk). `stream=False` asks for one JSON reply; a server that ignores `stream: true`
and answers JSON is understood, and one that rejects streaming with a 400 is asked again
without it."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from nexus.agent_runner.llm.base import (
    STOP_END_TURN,
    STOP_MAX_TOKENS,
    STOP_TOOL_USE,
    Completion,
    LLMError,
    Message,
    ToolCall,
    ToolSpec,
    Usage,
    approx_tokens,
    messages_text,
)
from nexus.agent_runner.llm.http import HttpTransport, SSEEvent, decode_event_json, parse_arguments
from nexus.agent_runner.llm.pricing import cost_usd
from nexus.agent_runner.llm.retry import RetryPolicy

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_STOP_REASONS = {
    "stop": STOP_END_TURN,
    "tool_calls": STOP_TOOL_USE,
    "function_call": STOP_TOOL_USE,
    "length": STOP_MAX_TOKENS,
}


class OpenAIProvider:
    name = "openai"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stream: bool = True,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.stream = stream
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = HttpTransport(
            provider=self.name,
            base_url=base_url or DEFAULT_BASE_URL,
            headers=headers,
            timeout_s=timeout_s,
            retry=retry,
            secrets=(api_key,),
        )

    async def complete(self, messages: list[Message], tools: list[ToolSpec]) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [_wire_message(m) for m in messages],
            "stream": self.stream,
        }
        if tools:
            body["tools"] = [_wire_tool(t) for t in tools]
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        try:
            reply = await self._http.post(
                "/chat/completions", body, on_events=self._read_stream, on_json=self._read_json
            )
        except LLMError as e:
            if not (self.stream and e.status in (400, 422) and "stream" in e.detail.lower()):
                raise
            # An older server that rejects streaming or `stream_options`: ask for one JSON reply from now on.
            self.stream = False
            return await self.complete(messages, tools)
        if reply.usage is None:  # some local servers report none: estimate so limits still bite
            reply.usage = Usage(
                input_tokens=approx_tokens(messages_text(messages, tools)),
                output_tokens=approx_tokens(reply.text + "".join(json.dumps(c.arguments) for c in reply.tool_calls)),
            )
        return reply.completion(self.model)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _read_json(self, data: Any) -> "_Reply":
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            raise self._reply_error(data["error"])
        if not isinstance(data, dict) or not data.get("choices"):
            raise self._http.error(f"reply has no choices: {json.dumps(data)[:300]}")
        choice = data["choices"][0]
        message = choice.get("message") or {}
        calls = [
            ToolCall(
                id=c.get("id") or f"call_{i}",
                name=(c.get("function") or {}).get("name", ""),
                arguments=parse_arguments((c.get("function") or {}).get("arguments")),
            )
            for i, c in enumerate(message.get("tool_calls") or [])
        ]
        return _Reply(
            text=message.get("content") or "",
            tool_calls=calls,
            finish_reason=choice.get("finish_reason"),
            model=data.get("model"),
            usage=_usage(data.get("usage")),
        )

    async def _read_stream(self, events: AsyncIterator[SSEEvent]) -> "_Reply":
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}  # index -> {"id", "name", "arguments": [fragments]}
        reply = _Reply()
        done = False
        async for event in events:
            if event.data.strip() == "[DONE]":
                done = True
                break
            chunk = decode_event_json(self._http, event.data)
            if not isinstance(chunk, dict):
                continue
            if isinstance(chunk.get("error"), dict):
                raise self._reply_error(chunk["error"])
            reply.model = chunk.get("model") or reply.model
            if chunk.get("usage"):
                reply.usage = _usage(chunk["usage"])
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    text.append(delta["content"])
                for fragment in delta.get("tool_calls") or []:
                    # Some servers leave out `index` when they send each call whole.
                    index = fragment.get("index")
                    slot = calls.setdefault(
                        len(calls) if index is None else index, {"id": None, "name": "", "arguments": []}
                    )
                    function = fragment.get("function") or {}
                    # id and name come in the first fragment; some servers repeat them later.
                    slot["id"] = slot["id"] or fragment.get("id")
                    slot["name"] = slot["name"] or function.get("name") or ""
                    arguments = function.get("arguments") or ""
                    slot["arguments"].append(arguments if isinstance(arguments, str) else json.dumps(arguments))
                if choice.get("finish_reason"):
                    reply.finish_reason = choice["finish_reason"]
        if not done and reply.finish_reason is None:
            raise self._http.error("the stream ended before the model finished", retryable=True)
        reply.text = "".join(text)
        reply.tool_calls = [
            ToolCall(
                id=slot["id"] or f"call_{index}",
                name=slot["name"],
                arguments=parse_arguments("".join(slot["arguments"])),
            )
            for index, slot in sorted(calls.items())
        ]
        return reply

    def _reply_error(self, error: dict[str, Any]) -> Exception:
        kind = str(error.get("type") or error.get("code") or "error")
        retryable = kind in ("server_error", "rate_limit_exceeded", "overloaded_error", "internal_error")
        return self._http.error(f"error in reply: {kind}: {error.get('message', '')}", retryable=retryable)


@dataclass(kw_only=True)
class _Reply:
    """What one call produced, before it becomes a Completion."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    model: str | None = None
    usage: Usage | None = None  # None: the server did not say

    def completion(self, fallback_model: str) -> Completion:
        model = self.model or fallback_model
        usage = self.usage or Usage()
        reason = _STOP_REASONS.get(self.finish_reason or "", self.finish_reason or STOP_END_TURN)
        if self.tool_calls and reason == STOP_END_TURN:
            reason = STOP_TOOL_USE  # some servers say "stop" even when they called tools
        return Completion(
            text=self.text,
            tool_calls=self.tool_calls,
            usage=usage,
            stop_reason=reason,
            model=model,
            cost_usd=cost_usd(model, usage),
        )


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(input_tokens=int(raw.get("prompt_tokens") or 0), output_tokens=int(raw.get("completion_tokens") or 0))


def _wire_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        wire["content"] = message.content or None
        wire["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in message.tool_calls
        ]
    return wire


def _wire_tool(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }
