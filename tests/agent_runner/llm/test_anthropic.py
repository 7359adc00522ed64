"""The Anthropic provider against a fake Messages API server speaking its documented stream:
message_start, content_block_start/delta/stop, message_delta, message_stop, ping, error."""

import json
from typing import Any

import pytest

from nexus.agent_runner.llm import LLMError, Message, ToolCall, ToolSpec
from nexus.agent_runner.llm.anthropic import AnthropicProvider
from nexus.agent_runner.llm.retry import RetryPolicy

KEY = "sk-ant-test-0123456789"
MODEL = "claude-3-5-haiku-20241022"
RUN_COMMAND = ToolSpec(
    name="run_command",
    description="Run a shell command",
    parameters={"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
)


def event(kind: str, **data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


def message_start(input_tokens: int) -> str:
    return event(
        "message_start",
        message={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": MODEL,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        },
    )


def text_block(index: int, *pieces: str) -> str:
    return (
        event("content_block_start", index=index, content_block={"type": "text", "text": ""})
        + "".join(event("content_block_delta", index=index, delta={"type": "text_delta", "text": p}) for p in pieces)
        + event("content_block_stop", index=index)
    )


def tool_block(index: int, call_id: str, name: str, *json_pieces: str) -> str:
    return (
        event(
            "content_block_start",
            index=index,
            content_block={"type": "tool_use", "id": call_id, "name": name, "input": {}},
        )
        + "".join(
            event("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": p})
            for p in json_pieces
        )
        + event("content_block_stop", index=index)
    )


def finish(stop_reason: str, output_tokens: int) -> str:
    return event(
        "message_delta",
        delta={"stop_reason": stop_reason, "stop_sequence": None},
        usage={"output_tokens": output_tokens},
    ) + event("message_stop")


def provider(url: str, retry: RetryPolicy, **kw: Any) -> AnthropicProvider:
    return AnthropicProvider(model=MODEL, base_url=url, api_key=KEY, retry=retry, **kw)


async def test_plain_text_reply_is_streamed_and_assembled(llm_server, retry) -> None:
    llm_server.sse(
        message_start(25) + event("ping") + text_block(0, "Hello", ", world") + finish("end_turn", 6), split_every=11
    )
    llm = provider(llm_server.url, retry, max_tokens=1000, temperature=0.0)
    completion = await llm.complete(
        [
            Message(role="system", content="Be brief."),
            Message(role="system", content="Be kind."),
            Message(role="user", content="Hi"),
        ],
        [],
    )
    await llm.aclose()

    assert (completion.text, completion.tool_calls, completion.stop_reason) == ("Hello, world", [], "end_turn")
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (25, 6)
    (request,) = llm_server.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    body = request.json
    assert body["system"] == "Be brief.\n\nBe kind."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert (body["model"], body["max_tokens"], body["stream"], body["temperature"]) == (MODEL, 1000, True, 0.0)
    assert "tools" not in body


async def test_text_and_two_tool_uses_with_fragmented_input_json(llm_server, retry) -> None:
    llm_server.sse(
        message_start(400)
        + text_block(0, "Running ", "both.")
        + tool_block(1, "toolu_01", "run_command", "", '{"cm', 'd": "ls', ' -la"}')
        + event("ping")
        + tool_block(2, "toolu_02", "run_command", '{"cmd": "git st', 'atus"}')
        + finish("tool_use", 90),
        split_every=23,
    )
    llm = provider(llm_server.url, retry)
    completion = await llm.complete([Message(role="user", content="look around")], [RUN_COMMAND])
    await llm.aclose()

    assert completion.text == "Running both."
    assert completion.stop_reason == "tool_use"
    assert completion.tool_calls == [
        ToolCall(id="toolu_01", name="run_command", arguments={"cmd": "ls -la"}),
        ToolCall(id="toolu_02", name="run_command", arguments={"cmd": "git status"}),
    ]
    assert llm_server.requests[0].json["tools"] == [
        {"name": "run_command", "description": "Run a shell command", "input_schema": RUN_COMMAND.parameters}
    ]


async def test_a_tool_call_without_arguments_has_empty_arguments(llm_server, retry) -> None:
    llm_server.sse(message_start(10) + tool_block(0, "toolu_9", "git_status") + finish("tool_use", 5))
    llm = provider(llm_server.url, retry)
    completion = await llm.complete([Message(role="user", content="status?")], [])
    await llm.aclose()
    assert completion.tool_calls == [ToolCall(id="toolu_9", name="git_status", arguments={})]


async def test_history_becomes_content_blocks_with_tool_results_in_one_user_turn(llm_server, retry) -> None:
    llm_server.sse(message_start(10) + text_block(0, "ok") + finish("end_turn", 1))
    history = [
        Message(role="system", content="sys"),
        Message(role="user", content="go"),
        Message(
            role="assistant",
            content="Two things.",
            tool_calls=[
                ToolCall(id="toolu_1", name="run_command", arguments={"cmd": "ls"}),
                ToolCall(id="toolu_2", name="run_command", arguments={"cmd": "pwd"}),
            ],
        ),
        Message(role="tool", tool_call_id="toolu_1", content="a.txt"),
        Message(role="tool", tool_call_id="toolu_2", content=""),
        Message(role="user", content="and now?"),
    ]
    llm = provider(llm_server.url, retry)
    await llm.complete(history, [RUN_COMMAND])
    await llm.aclose()
    body = llm_server.requests[0].json
    assert body["system"] == "sys"
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "go"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Two things."},
                {"type": "tool_use", "id": "toolu_1", "name": "run_command", "input": {"cmd": "ls"}},
                {"type": "tool_use", "id": "toolu_2", "name": "run_command", "input": {"cmd": "pwd"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"},
                {"type": "tool_result", "tool_use_id": "toolu_2"},
                {"type": "text", "text": "and now?"},
            ],
        },
    ]


async def test_usage_counts_cached_input_and_prices_the_model(llm_server, retry) -> None:
    start = event(
        "message_start",
        message={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": MODEL,
            "usage": {
                "input_tokens": 600_000,
                "output_tokens": 1,
                "cache_read_input_tokens": 400_000,
                "cache_creation_input_tokens": 0,
            },
        },
    )
    llm_server.sse(start + text_block(0, "x") + finish("max_tokens", 250_000))
    llm = provider(llm_server.url, retry)
    completion = await llm.complete([Message(role="user", content="Hi")], [])
    await llm.aclose()
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (1_000_000, 250_000)
    assert completion.stop_reason == "max_tokens"
    assert completion.cost_usd == pytest.approx(0.80 + 0.25 * 4.00)


async def test_non_streaming_reply(llm_server, retry) -> None:
    llm_server.json(
        {
            "id": "msg_2",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "stop_reason": "tool_use",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_5", "name": "run_command", "input": {"cmd": "ls"}},
            ],
            "usage": {"input_tokens": 30, "output_tokens": 12},
        }
    )
    llm = provider(llm_server.url, retry, stream=False)
    completion = await llm.complete([Message(role="user", content="go")], [RUN_COMMAND])
    await llm.aclose()
    assert llm_server.requests[0].json["stream"] is False
    assert completion.text == "Checking."
    assert completion.tool_calls == [ToolCall(id="toolu_5", name="run_command", arguments={"cmd": "ls"})]
    assert (completion.usage.input_tokens, completion.usage.output_tokens, completion.stop_reason) == (
        30,
        12,
        "tool_use",
    )


async def test_an_overloaded_error_event_mid_stream_is_retried(llm_server, retry, sleeps) -> None:
    llm_server.sse(
        message_start(10)
        + text_block(0, "par")
        + event("error", error={"type": "overloaded_error", "message": "Overloaded"})
    )
    llm_server.sse(message_start(10) + text_block(0, "whole") + finish("end_turn", 2))
    llm = provider(llm_server.url, retry)
    completion = await llm.complete([Message(role="user", content="Hi")], [])
    await llm.aclose()
    assert completion.text == "whole"
    assert len(llm_server.requests) == 2
    assert len(sleeps.waits) == 1


async def test_an_invalid_request_error_event_is_not_retried(llm_server, retry) -> None:
    llm_server.sse(message_start(10) + event("error", error={"type": "invalid_request_error", "message": "bad tool"}))
    llm = provider(llm_server.url, retry)
    with pytest.raises(LLMError, match="bad tool") as caught:
        await llm.complete([Message(role="user", content="Hi")], [])
    await llm.aclose()
    assert caught.value.retryable is False
    assert len(llm_server.requests) == 1


async def test_a_base_url_ending_in_v1_is_not_doubled(llm_server, retry) -> None:
    llm_server.sse(message_start(1) + text_block(0, "ok") + finish("end_turn", 1))
    llm = AnthropicProvider(model=MODEL, base_url=f"{llm_server.url}/v1/", api_key=KEY, retry=retry)
    await llm.complete([Message(role="user", content="Hi")], [])
    await llm.aclose()
    assert llm_server.requests[0].path == "/v1/messages"
