"""What both HTTP providers do when the server or the network misbehaves: which failures are
retried and how long they wait, which fail at once, and that the API key never leaks."""

import json
import logging
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from nexus.agent_runner.llm import LLMError, LLMProvider, Message
from nexus.agent_runner.llm.anthropic import AnthropicProvider
from nexus.agent_runner.llm.base import as_text
from nexus.agent_runner.llm.openai import OpenAIProvider
from nexus.agent_runner.llm.retry import RetryPolicy, retry_after_seconds
from nexus.agent_runner.process_limits import ProcessLimits

KEY = "sk-secret-DO-NOT-LEAK-42"
HI = [Message(role="user", content="Hi")]

OPENAI_OK = (
    "".join(
        f"data: {json.dumps(c)}\n\n"
        for c in [
            {"model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "recovered"}, "finish_reason": None}]},
            {"model": "gpt-4o", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
    )
    + "data: [DONE]\n\n"
)
OPENAI_UNFINISHED = (
    f"data: {json.dumps({'model': 'gpt-4o', 'choices': [{'index': 0, 'delta': {'content': 'half'}}]})}\n\n"
)


def _anthropic_event(kind: str, **data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


ANTHROPIC_START = _anthropic_event(
    "message_start",
    message={"model": "claude-sonnet-4-20250514", "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}},
)
ANTHROPIC_OK = (
    ANTHROPIC_START
    + _anthropic_event("content_block_start", index=0, content_block={"type": "text", "text": ""})
    + _anthropic_event("content_block_delta", index=0, delta={"type": "text_delta", "text": "recovered"})
    + _anthropic_event("content_block_stop", index=0)
    + _anthropic_event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 2})
    + _anthropic_event("message_stop")
)
ANTHROPIC_UNFINISHED = ANTHROPIC_START + _anthropic_event(
    "content_block_start", index=0, content_block={"type": "text", "text": "half"}
)


@dataclass
class Case:
    make: Callable[..., LLMProvider]
    ok: str  # a successful streamed reply
    unfinished: str  # a stream that ends cleanly before the model finished
    key_header: str
    key_value: str


def _openai(url: str, retry: RetryPolicy, **kw: Any) -> LLMProvider:
    return OpenAIProvider(model="gpt-4o", base_url=f"{url}/v1", api_key=KEY, retry=retry, **kw)


def _anthropic(url: str, retry: RetryPolicy, **kw: Any) -> LLMProvider:
    return AnthropicProvider(model="claude-sonnet-4-20250514", base_url=url, api_key=KEY, retry=retry, **kw)


CASES = {
    "openai": Case(_openai, OPENAI_OK, OPENAI_UNFINISHED, "authorization", f"Bearer {KEY}"),
    "anthropic": Case(_anthropic, ANTHROPIC_OK, ANTHROPIC_UNFINISHED, "x-api-key", KEY),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def error_body(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    # Both APIs put {"error": {"type", "message"}} in their error bodies.
    return {"type": "error", "error": {"type": kind, "message": message}}


async def test_429_waits_as_long_as_retry_after_says_then_succeeds(case, llm_server, retry, sleeps) -> None:
    llm_server.json(error_body("slow down", "rate_limit_error"), status=429, headers={"retry-after": "7"})
    llm_server.sse(case.ok)
    llm = case.make(llm_server.url, retry)
    completion = await llm.complete(HI, [])
    await llm.aclose()
    assert completion.text == "recovered"
    assert sleeps.waits == [7.0]
    assert len(llm_server.requests) == 2


async def test_a_huge_retry_after_is_cut_to_the_policy_cap(case, llm_server, sleeps) -> None:
    llm_server.json(error_body("quota", "rate_limit_error"), status=429, headers={"retry-after": "86400"})
    llm_server.sse(case.ok)
    llm = case.make(llm_server.url, RetryPolicy(max_attempts=2, max_retry_after_s=30, sleep=sleeps))
    await llm.complete(HI, [])
    await llm.aclose()
    assert sleeps.waits == [30.0]


async def test_500_twice_then_success_backs_off_exponentially(case, llm_server, retry, sleeps) -> None:
    llm_server.json(error_body("boom", "api_error"), status=500)
    llm_server.json(error_body("boom again", "api_error"), status=502)
    llm_server.sse(case.ok)
    llm = case.make(llm_server.url, retry)
    completion = await llm.complete(HI, [])
    await llm.aclose()
    assert completion.text == "recovered"
    assert len(llm_server.requests) == 3
    first, second = sleeps.waits  # 0.5 then 1.0, each plus up to 0.25 of jitter
    assert 0.5 <= first <= 0.75
    assert 1.0 <= second <= 1.25


async def test_retries_are_bounded(case, llm_server, retry, sleeps) -> None:
    for _ in range(4):
        llm_server.json(error_body("overloaded", "overloaded_error"), status=529)
    llm = case.make(llm_server.url, retry)
    with pytest.raises(LLMError) as caught:
        await llm.complete(HI, [])
    await llm.aclose()
    assert (caught.value.retryable, caught.value.status) == (True, 529)
    assert "gave up after 3 attempts" in str(caught.value)
    assert len(llm_server.requests) == 3
    assert len(sleeps.waits) == 2


async def test_400_fails_at_once_with_the_servers_reason(case, llm_server, retry, sleeps) -> None:
    llm_server.json(error_body("messages: field required"), status=400)
    llm_server.sse(case.ok)  # must not be reached
    llm = case.make(llm_server.url, retry)
    with pytest.raises(LLMError) as caught:
        await llm.complete(HI, [])
    await llm.aclose()
    assert (caught.value.retryable, caught.value.status) == (False, 400)
    assert "messages: field required" in str(caught.value)
    assert len(llm_server.requests) == 1
    assert sleeps.waits == []


async def test_the_key_goes_in_its_header_and_never_into_errors_or_logs(case, llm_server, retry, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    llm_server.json(error_body(f"upstream echoed {KEY}", "api_error"), status=500)
    llm_server.json(error_body(f"Incorrect API key provided: {KEY}", "authentication_error"), status=401)
    llm = case.make(llm_server.url, retry)
    with pytest.raises(LLMError) as caught:
        await llm.complete(HI, [])
    await llm.aclose()
    assert all(r.headers[case.key_header] == case.key_value for r in llm_server.requests)
    assert len(llm_server.requests) == 2
    err = caught.value
    assert (err.status, err.retryable) == (401, False)
    assert "Incorrect API key provided: ***" in str(err)
    shown = "".join(traceback.format_exception(err)) + repr(err) + err.detail + caplog.text
    assert KEY not in shown


async def test_a_server_that_never_answers_times_out(case, llm_server, sleeps) -> None:
    llm_server.hang()
    llm_server.hang()
    llm = case.make(llm_server.url, RetryPolicy(max_attempts=2, sleep=sleeps), timeout_s=0.3)
    with pytest.raises(LLMError, match="timed out") as caught:
        await llm.complete(HI, [])
    await llm.aclose()
    assert (caught.value.retryable, caught.value.status) == (True, None)
    assert len(llm_server.requests) == 2


async def test_a_refused_connection_is_retryable(case, retry, sleeps) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = case.make(f"http://127.0.0.1:{port}", retry)
    with pytest.raises(LLMError, match="connection to .* failed") as caught:
        await llm.complete(HI, [])
    await llm.aclose()
    assert (caught.value.retryable, caught.value.status) == (True, None)
    assert "//" not in str(caught.value).split("://", 1)[1]  # the URL it names is the one it called
    assert len(sleeps.waits) == 2


async def test_a_connection_dropped_mid_stream_is_retried(case, llm_server, retry) -> None:
    llm_server.sse(case.unfinished, cut=True)
    llm_server.sse(case.ok)
    llm = case.make(llm_server.url, retry)
    completion = await llm.complete(HI, [])
    await llm.aclose()
    assert completion.text == "recovered"
    assert len(llm_server.requests) == 2


async def test_running_out_of_memory_while_reading_is_not_retried(case, llm_server, retry, sleeps, monkeypatch) -> None:
    """The process's memory limit, reached where the event loop reads the socket (the loop closes the
    connection, httpx reports a read error): the same reply would reach it again, so no retry, and the
    MemoryError stays in the chain for the runner to name its memory limit."""
    llm_server.sse(case.ok)
    llm_server.sse(case.ok)  # what a retry would get
    port = int(llm_server.url.rsplit(":", 1)[1])
    real_recv = socket.socket.recv

    def recv(sock: socket.socket, *args: Any) -> bytes:
        if sock.getpeername()[1] == port:  # the client's end only: the server still reads the request
            raise MemoryError
        return real_recv(sock, *args)

    monkeypatch.setattr(socket.socket, "recv", recv)
    llm = case.make(llm_server.url, retry)
    with pytest.raises(LLMError, match="did not fit in memory") as caught:
        await llm.complete(HI, [])
    await llm.aclose()
    assert caught.value.retryable is False
    assert len(llm_server.requests) == 1 and sleeps.waits == []
    assert ProcessLimits().describe(caught.value) is not None


async def test_a_stream_that_stops_before_the_model_finished_is_retried(case, llm_server, retry) -> None:
    llm_server.sse(case.unfinished)
    llm_server.sse(case.ok)
    llm = case.make(llm_server.url, retry)
    completion = await llm.complete(HI, [])
    await llm.aclose()
    assert completion.text == "recovered"
    assert len(llm_server.requests) == 2


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert 3000 < retry_after_seconds({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"})
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_a_models_text_is_made_text_every_store_can_keep() -> None:
    """A reply may hold a lone surrogate (no UTF-8) or a NUL (no database keeps one): the run records,
    shows and reports the text with both replaced, so its summary and its changes can be stored."""
    assert as_text("done\x00 \ud800 ok") == "done\ufffd ? ok"
    assert as_text("plain") == "plain"
