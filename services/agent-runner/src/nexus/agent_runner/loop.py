"""The agent loop: ask the model, run its tool calls through the hypervisor, repeat within limits."""

import logging
from collections.abc import Callable
from typing import Any

import msgspec
from opentelemetry.trace import SpanKind

from nexus.agent_runner.hypervisor import Hypervisor
from nexus.agent_runner.llm.base import Completion, LLMProvider, Message, ToolSpec
from nexus.agent_runner.reporter import RunReporter
from nexus.domain.agents import Limits
from nexus.observability.tracing import span, tracer

TRACER = tracer("nexus.agent_runner")

log = logging.getLogger("nexus.agent_runner.loop")


def _masked(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {mask(str(k)): _masked(v, mask) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, mask) for v in value]
    return value


async def _model_call(provider: LLMProvider, messages: list[Message], tools: list[ToolSpec]) -> Completion:
    """One call to the model under a CLIENT span with OpenTelemetry's GenAI attributes (and the call's cost)."""
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider.name, "gen_ai.request.model": provider.model}
    with span(TRACER, f"chat {provider.model}", kind=SpanKind.CLIENT, attributes=attributes) as s:
        completion = await provider.complete(messages, tools)
        s.set_attributes({
            "gen_ai.response.model": completion.model, "gen_ai.usage.input_tokens": completion.usage.input_tokens,
            "gen_ai.usage.output_tokens": completion.usage.output_tokens, "gen_ai.response.finish_reasons": [completion.stop_reason],
            "nexus.llm.cost_usd": completion.cost_usd,
        })
        return completion


class RunStopped(Exception):
    """The run ends here, failed, with this reason (a limit, a human's rejection)."""


class LimitReached(RunStopped):
    pass


class Outcome:
    def __init__(self) -> None:
        self.summary = ""
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0
        self.steps = 0


async def run_loop(
    provider: LLMProvider, hv: Hypervisor, reporter: RunReporter, messages: list[Message], tools: list[ToolSpec], limits: Limits,
    stop: Callable[[], str] = lambda: "",
) -> Outcome:
    """Returns when the model is done; raises RunStopped when a limit or `stop()` (a reason) ends the run."""
    out = Outcome()
    for step in range(1, limits.max_steps + 1):
        reporter.step = out.steps = step
        completion = await _model_call(provider, messages, tools)
        out.input_tokens += completion.usage.input_tokens
        out.output_tokens += completion.usage.output_tokens
        out.cost_usd += completion.cost_usd
        await reporter.llm(
            step=step, provider=provider.name, model=completion.model, input_tokens=completion.usage.input_tokens,
            output_tokens=completion.usage.output_tokens, cost_usd=completion.cost_usd, stop_reason=completion.stop_reason,
            tool_calls=[c.name for c in completion.tool_calls], text=completion.text,
        )
        if out.input_tokens + out.output_tokens > limits.max_tokens:
            raise LimitReached(f"token limit of {limits.max_tokens} reached ({out.input_tokens + out.output_tokens} used)")
        # The history the model reads next is masked too: a value it produced never comes back to it.
        calls = [msgspec.structs.replace(c, arguments=_masked(c.arguments, reporter.mask)) for c in completion.tool_calls]
        messages.append(Message(role="assistant", content=reporter.mask(completion.text), tool_calls=calls))
        if not completion.tool_calls:
            out.summary = completion.text
            return out
        for call in completion.tool_calls:
            result = await hv.call(call.name, call.arguments)
            await reporter.tool(call.name, result.ok, result.error)
            content = result.output if result.ok else f"ERROR: {result.error}"
            messages.append(Message(role="tool", content=content, tool_call_id=call.id))
            if reason := stop():
                raise RunStopped(reason)
        if hv.finished is not None:
            out.summary = hv.finished
            return out
    raise LimitReached(f"step limit of {limits.max_steps} reached")
