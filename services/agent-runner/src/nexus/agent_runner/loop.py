"""The agent loop: ask the model, run its tool calls through the hypervisor, repeat within limits."""

import logging
from collections.abc import Callable
from typing import Any

import msgspec
from opentelemetry.trace import SpanKind

from nexus.agent_runner.hypervisor import Hypervisor
from nexus.agent_runner.llm.base import (
    Completion,
    LLMProvider,
    Message,
    ToolSpec,
    approx_tokens,
    as_text,
    messages_text,
)
from nexus.agent_runner.reporter import RunReporter, shown_name
from nexus.domain.agents import Limits
from nexus.domain.budgets import BUDGET_EXCEEDED, Cap, Spend, call_cost, would_exceed
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


async def _model_call(
    provider: LLMProvider,
    messages: list[Message],
    tools: list[ToolSpec],
    price: tuple[float, float] | None = None,
) -> Completion:
    """One call to the model under a CLIENT span with OpenTelemetry's GenAI attributes and the call's cost
    (`price`, USD per 1M tokens from the run's config, when given; else the provider's own table)."""
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider.name,
        "gen_ai.request.model": provider.model,
    }
    with span(TRACER, f"chat {provider.model}", kind=SpanKind.CLIENT, attributes=attributes) as s:
        completion = await provider.complete(messages, tools)
        if price is not None:
            completion.cost_usd = call_cost(price, completion.usage.input_tokens, completion.usage.output_tokens)
        s.set_attributes(
            {
                "gen_ai.response.model": completion.model,
                "gen_ai.usage.input_tokens": completion.usage.input_tokens,
                "gen_ai.usage.output_tokens": completion.usage.output_tokens,
                "gen_ai.response.finish_reasons": [completion.stop_reason],
                "nexus.llm.cost_usd": completion.cost_usd,
            }
        )
        return completion


class RunStopped(Exception):
    """The run ends here, failed, with this reason (a limit, a human's rejection)."""


class LimitReached(RunStopped):
    pass


class BudgetExceeded(RunStopped):
    """The next model call could spend past the run's budget: the run stops before making it."""

    def __init__(self, detail: str) -> None:
        super().__init__(BUDGET_EXCEEDED)
        self.detail = detail


# A model call's output is not known before it is made: reserve at least this many tokens for it.
MIN_OUTPUT_ESTIMATE = 256
# Tool calls one reply may make: the rest are not run, nor kept in the history, nor published; the model is told.
MAX_TOOL_CALLS_PER_REPLY = 64


class Outcome:
    def __init__(self) -> None:
        self.summary = ""
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0
        self.steps = 0
        self.largest_output = 0

    @property
    def spent(self) -> Spend:
        return Spend(usd=self.cost_usd, tokens=self.input_tokens + self.output_tokens)


def estimate_call(
    messages: list[Message], tools: list[ToolSpec], out: Outcome, price: tuple[float, float] | None
) -> Spend:
    """Conservative: the whole prompt as it stands, and an output as large as the largest yet."""
    input_tokens = approx_tokens(messages_text(messages, tools))
    output_tokens = max(MIN_OUTPUT_ESTIMATE, out.largest_output)
    return Spend(usd=call_cost(price, input_tokens, output_tokens), tokens=input_tokens + output_tokens)


async def run_loop(
    provider: LLMProvider,
    hv: Hypervisor,
    reporter: RunReporter,
    messages: list[Message],
    tools: list[ToolSpec],
    limits: Limits,
    stop: Callable[[], str] = lambda: "",
    budget: Cap | None = None,
    price: tuple[float, float] | None = None,
    out: Outcome | None = None,
) -> Outcome:
    """Returns when the model is done; raises RunStopped when a limit, the budget or `stop()` (a
    reason) ends the run. `price` (USD per 1M tokens, from the run's config) prices every call;
    without it the provider's own table does. `out` keeps the spend when the run is stopped."""
    out = out if out is not None else Outcome()
    for step in range(1, limits.max_steps + 1):
        reporter.step = out.steps = step
        if reason := stop():  # a limit reached while the last step's tools ran, or while the model answered
            raise RunStopped(reason)
        if budget is not None and not budget.empty:
            estimate = estimate_call(messages, tools, out, price)
            if would_exceed(budget, out.spent, estimate):
                raise BudgetExceeded(
                    f"budget exceeded before step {step}: spent {out.spent.tokens} tokens / {out.spent.usd:.6f} USD, "
                    f"next call estimated {estimate.tokens} tokens / {estimate.usd:.6f} USD, budget "
                    f"{'-' if budget.tokens is None else budget.tokens} tokens / "
                    f"{'-' if budget.usd is None else budget.usd} USD"
                )
        completion = await _model_call(provider, messages, tools, price)
        completion.text = as_text(completion.text)  # what the run records, shows and sends back is UTF-8 text
        made = len(completion.tool_calls)
        completion.tool_calls = completion.tool_calls[:MAX_TOOL_CALLS_PER_REPLY]
        out.input_tokens += completion.usage.input_tokens
        out.output_tokens += completion.usage.output_tokens
        out.cost_usd += completion.cost_usd
        out.largest_output = max(out.largest_output, completion.usage.output_tokens)
        await reporter.llm(
            step=step,
            provider=provider.name,
            model=completion.model,
            input_tokens=completion.usage.input_tokens,
            output_tokens=completion.usage.output_tokens,
            cost_usd=completion.cost_usd,
            stop_reason=completion.stop_reason,
            tool_calls=[c.name for c in completion.tool_calls],
            text=completion.text,
        )
        if out.input_tokens + out.output_tokens > limits.max_tokens:
            raise LimitReached(
                f"token limit of {limits.max_tokens} reached ({out.input_tokens + out.output_tokens} used)"
            )
        # The history the model reads next is masked too: a value it produced never comes back to it.
        calls = [
            msgspec.structs.replace(
                c, name=shown_name(c.name, reporter.mask), arguments=_masked(c.arguments, reporter.mask)
            )
            for c in completion.tool_calls
        ]
        messages.append(Message(role="assistant", content=reporter.mask(completion.text), tool_calls=calls))
        if not completion.tool_calls:
            out.summary = completion.text
            return out
        beyond = await _refuse_beyond_cap(hv, made)
        for n, call in enumerate(completion.tool_calls, 1):
            result = await hv.call(call.name, call.arguments)
            await reporter.tool(call.name, result.ok, result.error)
            content = result.output if result.ok else f"ERROR: {result.error}"
            if n == len(completion.tool_calls) and beyond:
                content += "\n" + beyond
            messages.append(Message(role="tool", content=content, tool_call_id=call.id))
            if reason := stop():
                raise RunStopped(reason)
        if hv.finished is not None:
            out.summary = hv.finished
            return out
    raise LimitReached(f"step limit of {limits.max_steps} reached")


async def _refuse_beyond_cap(hv: Hypervisor, made: int) -> str:
    """A reply with more tool calls than a reply may make: the refusal in the ledger, and its words for
    the model (after the last call that ran); "" when within the cap."""
    if made <= MAX_TOOL_CALLS_PER_REPLY:
        return ""
    detail = (
        f"the reply made {made} tool calls; at most {MAX_TOOL_CALLS_PER_REPLY} run per reply: the first "
        f"{MAX_TOOL_CALLS_PER_REPLY} ran, the other {made - MAX_TOOL_CALLS_PER_REPLY} did not"
    )
    await hv.refuse("tool-calls", "too-many-tool-calls", detail)
    return f"ERROR: refused (too-many-tool-calls): {detail}"
