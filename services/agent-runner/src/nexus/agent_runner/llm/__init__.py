"""LLM providers for the runner. `make_provider` picks one from the agent's LLMSpec.

Importing this package is cheap (no httpx, yaml or tenacity): each provider module is
imported only when chosen, so the runner cold-starts fast.
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nexus.agent_runner.llm.base import (
    STOP_END_OF_SCRIPT,
    STOP_END_TURN,
    STOP_MAX_TOKENS,
    STOP_TOOL_USE,
    Completion,
    LLMConfigError,
    LLMError,
    LLMProvider,
    Message,
    ToolCall,
    ToolSpec,
    Usage,
)
from nexus.domain.agents import LLMSpec

if TYPE_CHECKING:
    from nexus.agent_runner.llm.retry import RetryPolicy

__all__ = [
    "STOP_END_OF_SCRIPT",
    "STOP_END_TURN",
    "STOP_MAX_TOKENS",
    "STOP_TOOL_USE",
    "Completion",
    "LLMConfigError",
    "LLMError",
    "LLMProvider",
    "Message",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "make_provider",
]


def make_provider(
    spec: LLMSpec,
    *,
    secrets: Mapping[str, str],
    variables: Mapping[str, Any],
    stream: bool = True,
    timeout_s: float = 120.0,
    max_tokens: int | None = None,
    retry: "RetryPolicy | None" = None,
) -> LLMProvider:
    """Build the provider `spec` names. `secrets` resolves `spec.api_key_secret`; `variables`
    fill the scripted provider's `{{placeholders}}`. The keyword options after them are for
    settings LLMSpec does not carry (yet): streaming, per-request timeout, output cap, retries."""
    if spec.provider == "scripted":
        from nexus.agent_runner.llm.scripted import ScriptedProvider

        return ScriptedProvider(spec.script, model=spec.model, variables=variables)

    api_key = _api_key(spec, secrets)
    options: dict[str, Any] = dict(
        model=spec.model,
        base_url=spec.base_url,
        api_key=api_key,
        temperature=spec.temperature,
        stream=stream,
        timeout_s=timeout_s,
        retry=retry,
    )
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    if spec.provider == "openai":
        from nexus.agent_runner.llm.openai import OpenAIProvider

        return OpenAIProvider(**options)
    if spec.provider == "anthropic":
        from nexus.agent_runner.llm.anthropic import AnthropicProvider

        return AnthropicProvider(**options)
    raise LLMConfigError(f"unknown LLM provider {spec.provider!r}; expected scripted, openai or anthropic")


def _api_key(spec: LLMSpec, secrets: Mapping[str, str]) -> str | None:
    # No secret named: fine for local OpenAI-compatible servers (vLLM, Ollama, llama.cpp).
    if spec.api_key_secret is None:
        return None
    key = secrets.get(spec.api_key_secret)
    if not key:
        raise LLMConfigError(
            f"the API key secret {spec.api_key_secret!r} for provider {spec.provider!r} is not available"
        )
    return key
