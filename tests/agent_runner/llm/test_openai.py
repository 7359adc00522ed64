"""The OpenAI-compatible provider against a fake chat-completions server that speaks the
documented wire format: SSE chunks with `delta` fragments, usage in the last chunk, [DONE]."""

import json
from typing import Any

import pytest

from nexus.agent_runner.llm import LLMError, Message, ToolCall, ToolSpec
from nexus.agent_runner.llm.openai import OpenAIProvider
from nexus.agent_runner.llm.retry import RetryPolicy

KEY = "sk-test-0123456789abcdef"
MODEL = "gpt-4o-mini"
WRITE_FILE = ToolSpec(
    name="write_file",
    description="Write a file in the workspace",
    parameters={"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}},
)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def sse(*chunks: dict[str, Any], done: bool = True) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + ("data: [DONE]\n\n" if done else "")


def text_stream(text: str = "Hello there", prompt: int = 12, completion: int = 3) -> str:
    return sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": text[:4]}),
        chunk({"content": text[4:]}),
        chunk({}, "stop"),
        usage_chunk(prompt, completion),
    )


def provider(url: str, retry: RetryPolicy, **kw: Any) -> OpenAIProvider:
    return OpenAIProvider(model=kw.pop("model", MODEL), base_url=f"{url}/v1", api_key=KEY, retry=retry, **kw)


async def test_plain_text_reply_is_streamed_and_assembled(llm_server, retry) -> None:
    llm_server.sse(text_stream("Hello there"), split_every=9)  # chunk borders fall mid-line
    llm = provider(llm_server.url, retry, temperature=0.2)
    completion = await llm.complete(
        [Message(role="system", content="Be brief."), Message(role="user", content="Hi")], []
    )
    await llm.aclose()

    assert completion.text == "Hello there"
    assert completion.tool_calls == []
    assert completion.stop_reason == "end_turn"
    assert completion.model == "gpt-4o-mini-2024-07-18"
    (request,) = llm_server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = request.json
    assert body["model"] == MODEL
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.2
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert "tools" not in body


async def test_two_parallel_tool_calls_with_arguments_fragmented_across_chunks(llm_server, retry) -> None:
    llm_server.sse(
        sse(
            chunk({"role": "assistant", "content": None}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "write_file", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"pa'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'th": "a.txt", "con'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "write_file", "arguments": '{"path": "b.txt",'},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'tent": "A \\"quoted\\""}'}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": ' "content": "B"}'}}]}),
            chunk({}, "tool_calls"),
            usage_chunk(50, 40),
        ),
        split_every=17,
    )
    llm = provider(llm_server.url, retry)
    completion = await llm.complete([Message(role="user", content="write two files")], [WRITE_FILE])
    await llm.aclose()

    assert completion.stop_reason == "tool_use"
    assert completion.tool_calls == [
        ToolCall(id="call_a", name="write_file", arguments={"path": "a.txt", "content": 'A "quoted"'}),
        ToolCall(id="call_b", name="write_file", arguments={"path": "b.txt", "content": "B"}),
    ]
    assert llm_server.requests[0].json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "write_file",
                "description": "Write a file in the workspace",
                "parameters": WRITE_FILE.parameters,
            },
        }
    ]


async def test_a_conversation_with_tool_results_goes_out_in_the_wire_format(llm_server, retry) -> None:
    llm_server.sse(text_stream("ok"))
    history = [
        Message(role="system", content="sys"),
        Message(role="user", content="go"),
        Message(role="assistant", tool_calls=[ToolCall(id="call_1", name="write_file", arguments={"path": "x"})]),
        Message(role="tool", tool_call_id="call_1", content="wrote 0 bytes"),
        Message(role="assistant", content="Wrote it."),
    ]
    llm = provider(llm_server.url, retry)
    await llm.complete(history, [WRITE_FILE])
    await llm.aclose()
    assert llm_server.requests[0].json["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "write_file", "arguments": '{"path": "x"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "wrote 0 bytes"},
        {"role": "assistant", "content": "Wrote it."},
    ]


async def test_usage_and_cost_come_from_the_final_chunk(llm_server, retry) -> None:
    llm_server.sse(text_stream(prompt=2_000_000, completion=500_000))
    llm = provider(llm_server.url, retry)
    completion = await llm.complete([Message(role="user", content="Hi")], [])
    await llm.aclose()
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (2_000_000, 500_000)
    assert completion.cost_usd == pytest.approx(2 * 0.15 + 0.5 * 0.60)  # gpt-4o-mini list price


async def test_a_local_model_without_a_price_costs_nothing(llm_server, retry) -> None:
    llm_server.sse(text_stream().replace("gpt-4o-mini-2024-07-18", "qwen2.5-coder:7b"))
    llm = provider(llm_server.url, retry, model="qwen2.5-coder:7b")
    completion = await llm.complete([Message(role="user", content="Hi")], [])
    await llm.aclose()
    assert completion.usage.input_tokens == 12
    assert completion.cost_usd == 0.0


async def test_a_server_that_reports_no_usage_gets_an_estimate(llm_server, retry) -> None:
    llm_server.sse(sse(chunk({"content": "x" * 40}), chunk({}, "stop")))
    llm = provider(llm_server.url, retry)
    completion = await llm.complete([Message(role="user", content="y" * 400)], [])
    await llm.aclose()
    assert completion.usage.output_tokens == 10
    assert completion.usage.input_tokens == 100


async def test_non_streaming_mode_sends_stream_false_and_reads_one_json_reply(llm_server, retry) -> None:
    llm_server.json(
        {
            "id": "chatcmpl-2",
            "object": "chat.completion",
            "model": "gpt-4o-2024-08-06",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": "Let me write.",
                        "tool_calls": [
                            {
                                "id": "call_x",
                                "type": "function",
                                "function": {"name": "write_file", "arguments": '{"path": "n.txt"}'},
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 100_000, "total_tokens": 1_100_000},
        }
    )
    llm = provider(llm_server.url, retry, model="gpt-4o", stream=False)
    completion = await llm.complete([Message(role="user", content="go")], [WRITE_FILE])
    await llm.aclose()
    body = llm_server.requests[0].json
    assert body["stream"] is False and "stream_options" not in body
    assert completion.text == "Let me write."
    assert completion.tool_calls == [ToolCall(id="call_x", name="write_file", arguments={"path": "n.txt"})]
    assert completion.stop_reason == "tool_use"
    assert completion.cost_usd == pytest.approx(2.50 + 1.00)


async def test_a_server_that_ignores_stream_true_and_answers_json_is_understood(llm_server, retry) -> None:
    llm_server.json(
        {
            "model": "llama",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "plain"}}],
        }
    )
    llm = provider(llm_server.url, retry)
    completion = await llm.complete([Message(role="user", content="go")], [])
    await llm.aclose()
    assert (completion.text, completion.stop_reason) == ("plain", "end_turn")


async def test_a_server_that_rejects_stream_options_is_asked_again_without_streaming(llm_server, retry) -> None:
    llm_server.json(
        {
            "error": {
                "message": "Unrecognized request argument supplied: stream_options",
                "type": "invalid_request_error",
            }
        },
        status=400,
    )
    llm_server.json(
        {
            "model": "old",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "fine"}}],
        }
    )
    llm = provider(llm_server.url, retry)
    completion = await llm.complete([Message(role="user", content="go")], [])
    await llm.aclose()
    assert completion.text == "fine"
    assert [r.json["stream"] for r in llm_server.requests] == [True, False]


async def test_broken_tool_arguments_reach_the_hypervisor_as_raw_text(llm_server, retry) -> None:
    llm_server.sse(
        sse(
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "call_q", "function": {"name": "write_file", "arguments": '{"path": '}}
                    ]
                }
            ),
            chunk({}, "tool_calls"),
        )
    )
    llm = provider(llm_server.url, retry)
    completion = await llm.complete([Message(role="user", content="go")], [WRITE_FILE])
    await llm.aclose()
    (call,) = completion.tool_calls
    assert call.arguments["_raw_arguments"] == '{"path": '
    assert "not valid JSON" in call.arguments["_error"]


async def test_an_error_inside_the_stream_is_an_llm_error(llm_server, retry) -> None:
    llm_server.sse(
        sse(
            chunk({"content": "par"}),
            {"error": {"message": "context too long", "type": "invalid_request_error"}},
            done=False,
        )
    )
    llm = provider(llm_server.url, retry)
    with pytest.raises(LLMError, match="context too long") as caught:
        await llm.complete([Message(role="user", content="go")], [])
    await llm.aclose()
    assert caught.value.retryable is False
    assert len(llm_server.requests) == 1
