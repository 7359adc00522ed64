"""Anthropic's Messages API (POST /v1/messages): system prompt apart, content blocks
(`text`, `tool_use`, `tool_result`), streamed as named events — message_start (input usage),
content_block_start / _delta (`text_delta`, `input_json_delta`) / _stop, message_delta
(stop reason, output usage), message_stop, ping, error."""

import json
from collections.abc import AsyncIterator
from typing import Any

from nexus.agent_runner.llm.base import STOP_END_TURN, STOP_TOOL_USE, Completion, Message, ToolCall, ToolSpec, Usage
from nexus.agent_runner.llm.http import HttpTransport, SSEEvent, decode_event_json, parse_arguments
from nexus.agent_runner.llm.pricing import cost_usd
from nexus.agent_runner.llm.retry import RetryPolicy

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# Error types worth another try (the same as HTTP 429 / 5xx).
_RETRYABLE_ERRORS = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}


class AnthropicProvider:
    name = "anthropic"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        max_tokens: int = 4096,
        stream: bool = True,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.stream = stream
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        # Accept a base URL given with or without the version segment.
        base = (base_url or DEFAULT_BASE_URL).rstrip("/").removesuffix("/v1")
        self._http = HttpTransport(
            provider=self.name, base_url=base, headers=headers, timeout_s=timeout_s, retry=retry, secrets=(api_key,)
        )

    async def complete(self, messages: list[Message], tools: list[ToolSpec]) -> Completion:
        system, turns = _wire_messages(messages)
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": turns,
            "stream": self.stream,
        }
        if system:
            body["system"] = system
        if tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools
            ]
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return await self._http.post("/v1/messages", body, on_events=self._read_stream, on_json=self._read_json)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _read_json(self, data: Any) -> Completion:
        if not isinstance(data, dict):
            raise self._http.error(f"reply is not a message: {json.dumps(data)[:300]}")
        if data.get("type") == "error":
            raise self._reply_error(data.get("error") or {})
        blocks = [_block(b) for b in data.get("content") or [] if isinstance(b, dict)]
        usage = _usage(data.get("usage"), Usage())
        return self._completion(blocks, data.get("stop_reason"), data.get("model"), usage)

    async def _read_stream(self, events: AsyncIterator[SSEEvent]) -> Completion:
        blocks: dict[int, dict[str, Any]] = {}
        usage, model, stop_reason, finished = Usage(), None, None, False
        async for event in events:
            data = decode_event_json(self._http, event.data)
            if not isinstance(data, dict):
                continue
            kind = data.get("type") or event.event
            if kind == "message_start":
                message = data.get("message") or {}
                model = message.get("model") or model
                usage = _usage(message.get("usage"), usage)
            elif kind == "content_block_start":
                blocks[data.get("index", len(blocks))] = _block(data.get("content_block") or {})
            elif kind == "content_block_delta":
                block = blocks.setdefault(data.get("index", 0), _block({}))
                delta = data.get("delta") or {}
                if delta.get("type") == "text_delta":
                    block["text"].append(delta.get("text") or "")
                elif delta.get("type") == "input_json_delta":
                    block["json"].append(delta.get("partial_json") or "")
            elif kind == "message_delta":
                stop_reason = (data.get("delta") or {}).get("stop_reason") or stop_reason
                usage = _usage(data.get("usage"), usage)  # cumulative counts
            elif kind == "message_stop":
                finished = True
                break
            elif kind == "error":
                raise self._reply_error(data.get("error") or {})
            # ping, content_block_stop and event types added later need nothing.
        if not finished:
            raise self._http.error("the stream ended before message_stop", retryable=True)
        return self._completion([blocks[i] for i in sorted(blocks)], stop_reason, model, usage)

    def _completion(
        self, blocks: list[dict[str, Any]], stop_reason: str | None, model: str | None, usage: Usage
    ) -> Completion:
        text = "".join("".join(b["text"]) for b in blocks if b["type"] == "text")
        calls = [
            ToolCall(
                id=b["id"] or f"toolu_{i}",
                name=b["name"] or "",
                arguments=parse_arguments("".join(b["json"])) if b["json"] else parse_arguments(b["input"]),
            )
            for i, b in enumerate(blocks)
            if b["type"] == "tool_use"
        ]
        model = model or self.model
        reason = stop_reason or (STOP_TOOL_USE if calls else STOP_END_TURN)
        return Completion(
            text=text, tool_calls=calls, usage=usage, stop_reason=reason, model=model, cost_usd=cost_usd(model, usage)
        )

    def _reply_error(self, error: dict[str, Any]) -> Exception:
        kind = str(error.get("type") or "error")
        return self._http.error(
            f"error in reply: {kind}: {error.get('message', '')}", retryable=kind in _RETRYABLE_ERRORS
        )


def _block(raw: dict[str, Any]) -> dict[str, Any]:
    """A content block being assembled: text and tool-input JSON arrive in fragments."""
    return {
        "type": raw.get("type"),
        "text": [raw.get("text") or ""],
        "id": raw.get("id"),
        "name": raw.get("name"),
        "input": raw.get("input"),
        "json": [],
    }


def _usage(raw: Any, previous: Usage) -> Usage:
    """Prompt-cache reads and writes are input too: they count against the token limit."""
    if not isinstance(raw, dict):
        return previous
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    has_input = any(raw.get(k) is not None for k in keys)
    input_tokens = sum(int(raw.get(k) or 0) for k in keys) if has_input else previous.input_tokens
    output = raw.get("output_tokens")
    return Usage(input_tokens=input_tokens, output_tokens=int(output) if output is not None else previous.output_tokens)


def _wire_messages(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt apart; turns of content blocks, consecutive same-role turns merged
    (tool results travel as a user turn) and empty text left out (the API rejects it)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            if m.content:
                system.append(m.content)
            continue
        blocks: list[dict[str, Any]] = []
        if m.role == "tool":
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id}
            if m.content:
                result["content"] = m.content
            blocks.append(result)
        elif m.content:
            blocks.append({"type": "text", "text": m.content})
        if m.role == "assistant":
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls]
        if not blocks:
            continue
        role = "assistant" if m.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # tool results must open the user turn that answers a tool_use
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    return "\n\n".join(system), turns
