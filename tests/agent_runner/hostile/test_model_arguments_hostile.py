"""A hostile model's tool calls, through the real runner (its own process, real NATS) and the
OpenAI-compatible provider against a fake chat-completions server: arguments nested far past any
parser's recursion, of the wrong type or shape, tool names that are not strings, a note far past its
cap. Each call must come back to the model as a clear tool error and be recorded as a refusal; the run
goes on to its `finish` and ends succeeded — never a crash, a traceback or a lost event."""

import json
from typing import Any

import pytest

from tests.agent_runner.llm.conftest import Reply, llm_server  # noqa: F401 — a fixture
from tests.agent_runner.test_runner_limits import _note_call
from tests.agent_runner.test_runner_support import changes, config, final_status, js, read_events, start_runner  # noqa: F401 — fixtures and helpers, used by name

pytestmark = pytest.mark.infra

DEEP = 100_000  # past Python's recursion limit in any recursive decoder or walker
SHALLOW_DEEP = 900  # just under it: parses, then every recursive walk over it must still hold


def _reply(n: int, name: Any, arguments: Any) -> dict:
    """A chat completion calling `name` with the raw `arguments` the model sent."""
    reply = _note_call(n)
    reply["choices"][0]["message"]["tool_calls"][0]["function"] = {"name": name, "arguments": arguments}
    reply["choices"][0]["message"]["content"] = "thinking \ud800"  # a lone surrogate in the text too
    return reply


# (tool name, the raw `arguments` the model sends) — each must be refused as invalid arguments.
HOSTILE: list[tuple[Any, Any]] = [
    ("write_file", '{"path": ' + "[" * DEEP + "]" * DEEP + ', "content": "x"}'),
    ("note", '{"message": ' + '{"a":' * DEEP + "1" + "}" * DEEP + "}"),
    ("write_file", '{"path": "a.txt", "content": ' + "[" * SHALLOW_DEEP + "]" * SHALLOW_DEEP + "}"),
    ("note", {"message": json.loads("[" * SHALLOW_DEEP + "]" * SHALLOW_DEEP)}),  # an object, not a string
    ("write_file", "[1, 2, 3]"),
    ("write_file", '"a string"'),
    ("write_file", "null"),
    ("write_file", '{"path": 7, "content": "x"}'),
    ("write_file", '{"path": "a.txt", "content": "x", "mode": "0777"}'),
    ("run_command", '{"cmd": ["sh", "-c", "id"]}'),
    ("run_command", '{"cmd": "true", "timeout_s": -1}'),
    ("run_command", '{"cmd": "true", "timeout_s": "1e999"}'),
    ("note", '{"message": ""}'),
    ("note", json.dumps({"message": "n" * (17 << 20)})),  # 17 MiB, past the note's cap
    ("git_status", '{"unexpected": true}'),
    ("write_file", '{"path": "a.txt", "content": "\\ud800"}'),  # a lone surrogate: valid JSON, no text
    ("note", '{"message": "\\udfff \\ud800"}'),
    ("run_command", '{"cmd": "echo \\ud800"}'),
]
VALUE = "sk-hostile-Wombat-5Rq9+/x-16180"  # a secret the model learned (a prompt injection, say)
BAD_NAMES: list[Any] = [["write_file"], {"name": "note"}, 12, VALUE, f"note {VALUE}", "note\ud800"]


def _stream(n: int, name: Any, arguments: Any) -> bytes:
    """The same call as an event stream, the arguments cut into fragments as servers send them."""

    def event(delta: dict, finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return (
            "data: "
            + json.dumps({"id": f"c{n}", "object": "chat.completion.chunk", "model": "m", "choices": [choice]})
            + "\n\n"
        )

    if isinstance(arguments, str):
        pieces = [arguments[i : i + 4096] for i in range(0, len(arguments), 4096)] or [""]
    else:
        pieces = [arguments]
    first = {"index": 0, "id": f"call_{n}", "function": {"name": name, "arguments": pieces[0]}}
    rest = [{"index": 0, "function": {"arguments": piece}} for piece in pieces[1:]]
    body = event({"role": "assistant", "tool_calls": [first]}) + "".join(event({"tool_calls": [r]}) for r in rest)
    return (body + event({}, "tool_calls") + "data: [DONE]\n\n").encode()


@pytest.mark.parametrize("streaming", [False, True], ids=["json", "event-stream"])
async def test_malformed_tool_calls_are_tool_errors_and_the_run_goes_on(
    js, nats_url, tmp_path, llm_server, streaming: bool
) -> None:
    calls = [*HOSTILE, *((name, "{}") for name in BAD_NAMES)]
    for n, (name, arguments) in enumerate(calls):
        if streaming:
            llm_server.replies.append(
                Reply(headers={"content-type": "text/event-stream"}, body=_stream(n, name, arguments))
            )
        else:
            body = json.dumps(_reply(n, name, arguments)).encode()
            llm_server.replies.append(Reply(headers={"content-type": "application/json"}, body=body))
    done = _reply(len(calls), "finish", json.dumps({"summary": "survived"}))
    llm_server.replies.append(Reply(headers={"content-type": "application/json"}, body=json.dumps(done).encode()))
    cfg = config(
        "",
        llm={"provider": "openai", "model": "gpt-4o-mini", "base_url": f"{llm_server.url}/v1"},
        limits={"max_steps": len(calls) + 5, "max_tokens": 10**12},
        permissions={"commands": {"allow": ["true"], "default": "deny"}},
        secrets=["API_TOKEN"],
    )
    r = await start_runner(tmp_path, nats_url, cfg, secrets={"API_TOKEN": VALUE})
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "succeeded" and end["summary"] == "survived", end
    # A tool name is the model's output like its text: a value in it reaches no event, log line or later request.
    for seen in (json.dumps(events), r.log(), *(req.body.decode() for req in llm_server.requests)):
        assert VALUE not in seen
    refused = changes(events, "refused")
    assert len(refused) == len(calls), [(c["tool"], c["reason"], c["detail"][:80]) for c in refused]
    for change in refused:
        assert change["reason"] in ("invalid-arguments", "unknown-tool", "too-large"), change
    assert "Traceback" not in r.log()
    # Every refusal went back to the model as its tool result, in order.
    results = [m for req in llm_server.requests[1:] for m in req.json["messages"][-1:] if m["role"] == "tool"]
    assert len(results) == len(calls) and all(m["content"].startswith("ERROR: refused (") for m in results), results


def _anthropic_tool_use(n: int, name: str, tool_input: str) -> bytes:
    """A Messages API reply whose tool_use input is the raw JSON `tool_input` (the model's, decoded by the API)."""
    head = (
        f'{{"id":"msg_{n}","type":"message","role":"assistant","model":"claude-x","stop_reason":"tool_use",'
        f'"usage":{{"input_tokens":10,"output_tokens":5}},"content":[{{"type":"tool_use","id":"tu_{n}",'
        f'"name":"{name}","input":'
    )
    return (head + tool_input + "}]}").encode()


async def test_a_tool_input_nested_past_the_decoder_fails_the_run_naming_it(js, nats_url, tmp_path, llm_server) -> None:
    """Anthropic's API hands the model's tool input over as JSON inside the reply, so the model decides how
    deep the reply nests. Deep enough to be decoded is a refused call (above); past the decoder's
    recursion the reply cannot be read at all: the run ends failed saying so, every event stored."""
    shallow = '{"message": ' + "[" * SHALLOW_DEEP + "]" * SHALLOW_DEEP + "}"
    deep = '{"message": ' + "[" * DEEP + "]" * DEEP + "}"
    for n, tool_input in enumerate((shallow, deep)):
        body = _anthropic_tool_use(n, "note", tool_input)
        llm_server.replies.append(Reply(headers={"content-type": "application/json"}, body=body))
    cfg = config("", llm={"provider": "anthropic", "model": "claude-x", "base_url": llm_server.url})
    r = await start_runner(tmp_path, nats_url, cfg)
    assert await r.exit_code() == 2, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "failed" and "nested too deeply" in end["reason"], end
    (refused,) = changes(events, "refused")  # the first, decodable, reply: a refused call, fed back
    assert (refused["tool"], refused["reason"]) == ("note", "invalid-arguments"), refused
    assert len(llm_server.requests) == 2  # no retry of a reply that cannot be read


async def test_ten_thousand_tool_calls_in_one_reply_run_only_up_to_the_cap(js, nats_url, tmp_path, llm_server) -> None:
    """One reply may make at most MAX_TOOL_CALLS_PER_REPLY calls: those run, the rest do not, the model
    is told so with the last result, the refusal is in the ledger, and the run goes on."""
    from nexus.agent_runner.loop import MAX_TOOL_CALLS_PER_REPLY as cap

    flood = _note_call(0)
    flood["choices"][0]["message"]["tool_calls"] = [
        {"id": f"call_{n}", "type": "function", "function": {"name": "note", "arguments": '{"message": "again"}'}}
        for n in range(10_000)
    ]
    done = _reply(1, "finish", json.dumps({"summary": "survived"}))
    for reply in (flood, done):
        llm_server.replies.append(Reply(headers={"content-type": "application/json"}, body=json.dumps(reply).encode()))
    cfg = config("", llm={"provider": "openai", "model": "gpt-4o-mini", "base_url": f"{llm_server.url}/v1"})
    r = await start_runner(tmp_path, nats_url, cfg)
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    assert final_status(events)["status"] == "succeeded"
    assert len([c for c in changes(events, "note") if c["message"] == "again"]) == cap
    (refused,) = changes(events, "refused")
    assert (refused["tool"], refused["reason"]) == ("tool-calls", "too-many-tool-calls"), refused
    assert "10000 tool calls" in refused["detail"]
    # The model's next request holds the calls that ran, each with its result; the last says what happened.
    sent = llm_server.requests[1].json["messages"]
    (assistant,) = [m for m in sent if m["role"] == "assistant"]
    assert len(assistant["tool_calls"]) == cap
    results = [m for m in sent if m["role"] == "tool"]
    assert len(results) == cap and "refused (too-many-tool-calls)" in results[-1]["content"]
    llm_events = [e for _, e in events if e["type"] == "run.llm"]
    assert len(llm_events[0]["data"]["tool_calls"]) == cap
