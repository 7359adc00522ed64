"""The scripted provider: a YAML script of replies and tool calls, played back one step per
`complete()` call. Deterministic and offline — what `make run` and the end-to-end tests use.

    steps:
      - say: "Writing the file"             # optional assistant text
        tool_calls:
          - name: write_file
            args: {path: hello.txt, content: "run {{run_id}}"}
      - say: done                            # no tool_calls: a final answer

`{{name}}` in any string (tool names, argument keys and values, `say`) is replaced from
`variables` when the step is played; an unknown name is left as written.
"""

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from nexus.agent_runner.llm.base import (
    STOP_END_OF_SCRIPT,
    STOP_END_TURN,
    STOP_TOOL_USE,
    Completion,
    LLMConfigError,
    Message,
    ToolCall,
    ToolSpec,
    Usage,
    approx_tokens,
    messages_text,
)
from nexus.domain.json_types import JsonObject

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
_STEP_KEYS = {"say", "tool_calls"}
_CALL_KEYS = {"name", "args"}


class Step(msgspec.Struct, kw_only=True, frozen=True):
    say: str = ""
    tool_calls: tuple[tuple[str, JsonObject], ...] = ()  # (name, args), templated when played


class ScriptedProvider:
    name = "scripted"

    def __init__(
        self, script: str | None, *, model: str = "scripted", variables: Mapping[str, Any] | None = None
    ) -> None:
        self.model = model
        self._steps = parse_script(script)
        # Kept by reference: the runner may fill in variables (e.g. a session id) after construction.
        self._variables: Mapping[str, Any] = variables if variables is not None else {}
        self._next_step = 0
        self._next_call = 1

    @property
    def steps_left(self) -> int:
        return len(self._steps) - self._next_step

    async def complete(self, messages: list[Message], tools: list[ToolSpec]) -> Completion:
        input_tokens = approx_tokens(messages_text(messages, tools))
        if self._next_step >= len(self._steps):
            return Completion(
                text="",
                tool_calls=[],
                usage=Usage(input_tokens=input_tokens),
                stop_reason=STOP_END_OF_SCRIPT,
                model=self.model,
            )
        step = self._steps[self._next_step]
        self._next_step += 1
        text = self._fill(step.say)
        calls = []
        for name, args in step.tool_calls:
            calls.append(ToolCall(id=f"call_{self._next_call}", name=self._fill(name), arguments=self._fill(args)))
            self._next_call += 1
        output = text + (msgspec.json.encode(calls).decode() if calls else "")
        return Completion(
            text=text,
            tool_calls=calls,
            usage=Usage(input_tokens=input_tokens, output_tokens=approx_tokens(output)),
            stop_reason=STOP_TOOL_USE if calls else STOP_END_TURN,
            model=self.model,
        )

    async def aclose(self) -> None:
        return None

    def _fill(self, value: Any) -> Any:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(self._replacement, value)
        if isinstance(value, dict):
            return {self._fill(k): self._fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._fill(v) for v in value]
        return value

    def _replacement(self, match: re.Match[str]) -> str:
        name = match.group(1)
        return str(self._variables[name]) if name in self._variables else match.group(0)


def parse_script(script: str | None) -> tuple[Step, ...]:
    """Validate the whole script up front so a bad one fails at construction, naming where."""
    if script is None or not script.strip():
        return ()
    import yaml  # lazily: keeps `import nexus.agent_runner.llm` light

    try:
        # libyaml's safe loader where PyYAML has it (~10× faster than the pure-Python one, same documents)
        doc = yaml.load(script, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # a safe loader either way
    except yaml.YAMLError as e:
        raise LLMConfigError(f"invalid script: not valid YAML: {e}") from None
    if doc is None:
        return ()
    if not isinstance(doc, dict):
        raise LLMConfigError(f"invalid script: expected a mapping with 'steps', got {_kind(doc)}")
    if extra := set(doc) - {"steps"}:
        raise LLMConfigError(
            f"invalid script: unknown top-level keys {sorted(map(str, extra))}; only 'steps' is allowed"
        )
    steps = doc.get("steps")
    if steps is None:
        return ()
    if not isinstance(steps, list):
        raise LLMConfigError(f"invalid script: 'steps' must be a list, got {_kind(steps)}")
    return tuple(_parse_step(raw, f"steps[{i}]") for i, raw in enumerate(steps))


def _parse_step(raw: Any, where: str) -> Step:
    if not isinstance(raw, dict):
        raise LLMConfigError(
            f"invalid script: {where} must be a mapping with 'say' and/or 'tool_calls', got {_kind(raw)}"
        )
    if extra := set(raw) - _STEP_KEYS:
        raise LLMConfigError(
            f"invalid script: {where} has unknown keys {sorted(map(str, extra))}; allowed: say, tool_calls"
        )
    say = raw.get("say", "")
    if say is None:
        say = ""
    if not isinstance(say, str):
        raise LLMConfigError(f"invalid script: {where}.say must be a string, got {_kind(say)}")
    calls = raw.get("tool_calls") or []
    if not isinstance(calls, list):
        raise LLMConfigError(f"invalid script: {where}.tool_calls must be a list, got {_kind(calls)}")
    return Step(say=say, tool_calls=tuple(_parse_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)))


def _parse_call(raw: Any, where: str) -> tuple[str, JsonObject]:
    if not isinstance(raw, dict):
        raise LLMConfigError(f"invalid script: {where} must be a mapping with 'name' and 'args', got {_kind(raw)}")
    if extra := set(raw) - _CALL_KEYS:
        raise LLMConfigError(f"invalid script: {where} has unknown keys {sorted(map(str, extra))}; allowed: name, args")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise LLMConfigError(f"invalid script: {where}.name must be a non-empty string")
    args = raw.get("args")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise LLMConfigError(f"invalid script: {where}.args must be a mapping, got {_kind(args)}")
    try:  # arguments travel as JSON to the hypervisor and the event log: reject what JSON can't carry
        args = msgspec.json.decode(msgspec.json.encode(args))
    except (TypeError, msgspec.EncodeError) as e:
        raise LLMConfigError(f"invalid script: {where}.args cannot be represented as JSON: {e}") from None
    return name, args


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
