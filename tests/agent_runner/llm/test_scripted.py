"""The scripted provider plays its YAML script back step by step, filling in placeholders."""

import pytest

from nexus.agent_runner.llm import LLMConfigError, Message, ToolSpec, make_provider
from nexus.agent_runner.llm.scripted import ScriptedProvider
from nexus.domain.agents import LLMSpec

SCRIPT = """
steps:
  - say: "Writing the file for {{task_title}}"
    tool_calls:
      - name: write_file
        args: {path: "hello.txt", content: "run {{run_id}} session {{ session_id }}"}
  - tool_calls:
      - {name: run_command, args: {cmd: "cat hello.txt"}}
      - name: note
        args: {text: "{{unknown_thing}} stays", tags: ["{{agent_id}}", 3], nested: {"{{run_id}}": true}}
  - say: "done"
"""
VARIABLES = {"run_id": "run-1", "session_id": "ses-9", "task_title": "Say hello", "agent_id": "writer"}
USER = [Message(role="user", content="Please write hello.txt")]


async def play(provider: ScriptedProvider, n: int) -> list:
    return [await provider.complete(USER, []) for _ in range(n)]


async def test_steps_play_in_order_with_placeholders_filled() -> None:
    provider = make_provider(LLMSpec(script=SCRIPT), secrets={}, variables=VARIABLES)
    first, second, third = await play(provider, 3)

    assert first.text == "Writing the file for Say hello"
    assert [(c.id, c.name, c.arguments) for c in first.tool_calls] == [
        ("call_1", "write_file", {"path": "hello.txt", "content": "run run-1 session ses-9"}),
    ]
    assert first.stop_reason == "tool_use"
    assert second.text == ""
    assert [(c.id, c.name) for c in second.tool_calls] == [("call_2", "run_command"), ("call_3", "note")]
    assert second.tool_calls[1].arguments == {
        "text": "{{unknown_thing}} stays",
        "tags": ["writer", 3],
        "nested": {"run-1": True},
    }
    assert (third.text, third.tool_calls, third.stop_reason) == ("done", [], "end_turn")
    assert {c.model for c in (first, second, third)} == {"scripted"}
    await provider.aclose()


async def test_variables_are_read_when_a_step_is_played() -> None:
    variables: dict[str, str] = {}
    provider = make_provider(LLMSpec(script=SCRIPT), secrets={}, variables=variables)
    variables.update(VARIABLES)  # the runner learns the session id after building the provider
    first = (await play(provider, 1))[0]
    assert first.tool_calls[0].arguments["content"] == "run run-1 session ses-9"


async def test_an_exhausted_script_keeps_answering_end_of_script() -> None:
    provider = ScriptedProvider("steps:\n  - say: only step\n", variables={})
    only, after, again = await play(provider, 3)
    assert only.stop_reason == "end_turn"
    for completion in (after, again):
        assert (completion.text, completion.tool_calls, completion.stop_reason) == ("", [], "end_of_script")


@pytest.mark.parametrize("script", [None, "", "   \n", "steps: []", "steps:"])
async def test_no_script_is_an_empty_script(script: str | None) -> None:
    completion = await ScriptedProvider(script).complete(USER, [])
    assert completion.stop_reason == "end_of_script"


async def test_usage_is_counted_roughly_four_characters_per_token() -> None:
    provider = ScriptedProvider('steps:\n  - say: "' + "x" * 40 + '"\n')
    tool = ToolSpec(name="read_file", description="Read a file", parameters={"type": "object"})
    long_prompt = [Message(role="system", content="s" * 400), Message(role="user", content="u" * 400)]
    completion = await provider.complete(long_prompt, [tool])
    assert completion.usage.output_tokens == 10
    assert completion.usage.input_tokens >= 200
    short = await ScriptedProvider('steps:\n  - say: "hi"\n').complete([Message(role="user", content="u")], [])
    assert short.usage.input_tokens < completion.usage.input_tokens
    assert completion.cost_usd == 0.0


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        ("steps: [unclosed", "not valid YAML"),
        ("- say: hi", "expected a mapping with 'steps', got list"),
        ("steps: {say: hi}", "'steps' must be a list, got dict"),
        ("stepz: []", "unknown top-level keys ['stepz']"),
        ("steps:\n  - hello", "steps[0] must be a mapping"),
        ("steps:\n  - say: ok\n  - sya: typo", "steps[1] has unknown keys ['sya']"),
        ("steps:\n  - say: [1, 2]", "steps[0].say must be a string, got list"),
        ("steps:\n  - tool_calls: {name: x}", "steps[0].tool_calls must be a list, got dict"),
        ("steps:\n  - tool_calls:\n      - args: {a: 1}", "steps[0].tool_calls[0].name must be a non-empty string"),
        (
            "steps:\n  - tool_calls:\n      - {name: x, args: [1]}",
            "steps[0].tool_calls[0].args must be a mapping, got list",
        ),
        (
            "steps:\n  - tool_calls:\n      - {name: x, arguments: {}}",
            "steps[0].tool_calls[0] has unknown keys ['arguments']",
        ),
    ],
)
def test_an_invalid_script_is_refused_at_construction_naming_the_problem(script: str, problem: str) -> None:
    with pytest.raises(LLMConfigError) as caught:
        make_provider(LLMSpec(script=script), secrets={}, variables={})
    assert "invalid script" in str(caught.value)
    assert problem in str(caught.value)
