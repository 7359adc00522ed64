"""Choosing a provider from an LLMSpec, what a model costs, and what importing the package pulls in."""

import logging
import subprocess
import sys

import pytest

from nexus.agent_runner.llm import LLMConfigError, Message, Usage, make_provider
from nexus.agent_runner.llm.anthropic import AnthropicProvider
from nexus.agent_runner.llm.openai import OpenAIProvider
from nexus.agent_runner.llm.pricing import cost_usd, price_of
from nexus.agent_runner.llm.scripted import ScriptedProvider
from nexus.domain.agents import LLMSpec


async def test_the_default_spec_is_the_scripted_provider() -> None:
    provider = make_provider(LLMSpec(), secrets={}, variables={})
    assert isinstance(provider, ScriptedProvider)
    assert (provider.name, provider.model) == ("scripted", "scripted")


async def test_each_http_provider_is_built_with_its_key_from_the_secrets(llm_server) -> None:
    secrets = {"OPENAI_KEY": "sk-o", "ANTHROPIC_KEY": "sk-a"}
    openai = make_provider(
        LLMSpec(provider="openai", model="gpt-4o", api_key_secret="OPENAI_KEY", base_url=f"{llm_server.url}/v1"),
        secrets=secrets,
        variables={},
    )
    anthropic = make_provider(
        LLMSpec(
            provider="anthropic", model="claude-sonnet-4-5", api_key_secret="ANTHROPIC_KEY", base_url=llm_server.url
        ),
        secrets=secrets,
        variables={},
        stream=False,
        max_tokens=77,
    )
    assert isinstance(openai, OpenAIProvider) and (openai.name, openai.model) == ("openai", "gpt-4o")
    assert isinstance(anthropic, AnthropicProvider) and (anthropic.name, anthropic.model) == (
        "anthropic",
        "claude-sonnet-4-5",
    )
    llm_server.json(
        {
            "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "a"}}],
        }
    )
    llm_server.json(
        {
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "b"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    )
    await openai.complete([Message(role="user", content="x")], [])
    await anthropic.complete([Message(role="user", content="x")], [])
    await openai.aclose()
    await anthropic.aclose()
    first, second = llm_server.requests
    assert first.headers["authorization"] == "Bearer sk-o"
    assert second.headers["x-api-key"] == "sk-a"
    assert second.json["max_tokens"] == 77


async def test_a_local_openai_compatible_server_needs_no_key(llm_server) -> None:
    llm = make_provider(
        LLMSpec(provider="openai", model="llama3.1:8b", base_url=f"{llm_server.url}/v1"), secrets={}, variables={}
    )
    llm_server.json(
        {
            "model": "llama3.1:8b",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
        }
    )
    assert (await llm.complete([Message(role="user", content="x")], [])).text == "hi"
    await llm.aclose()
    assert "authorization" not in llm_server.requests[0].headers


def test_a_missing_secret_is_named_not_guessed() -> None:
    spec = LLMSpec(provider="anthropic", model="claude-sonnet-4-5", api_key_secret="ANTHROPIC_KEY")
    with pytest.raises(LLMConfigError, match="'ANTHROPIC_KEY'"):
        make_provider(spec, secrets={"OTHER": "sk-other"}, variables={})


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("gpt-4o", (2.50, 10.00)),
        ("gpt-4o-2024-08-06", (2.50, 10.00)),
        ("gpt-4o-mini-2024-07-18", (0.15, 0.60)),
        ("openai/gpt-4.1-mini", (0.40, 1.60)),
        ("claude-3-5-haiku-20241022", (0.80, 4.00)),
        ("claude-opus-4-5-20251101", (5.00, 25.00)),
        ("claude-opus-4-1-20250805", (15.00, 75.00)),
        ("gpt-4o1-custom", None),
        ("qwen2.5-coder:7b", None),
    ],
)
def test_models_are_priced_by_their_family(model: str, price: tuple[float, float] | None) -> None:
    assert price_of(model) == price


def test_an_unknown_model_costs_zero_and_says_so_once(caplog) -> None:
    caplog.set_level(logging.WARNING)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert cost_usd("my-finetune-v3", usage) == 0.0
    assert cost_usd("my-finetune-v3", usage) == 0.0
    assert [r.getMessage() for r in caplog.records].count(
        "no price known for model 'my-finetune-v3': its calls are counted as costing 0 USD"
    ) == 1
    assert cost_usd("gpt-4.1", usage) == pytest.approx(10.00)


def test_importing_the_package_pulls_in_no_http_or_yaml() -> None:
    code = (
        "import sys\n"
        "heavy = lambda: [m for m in ('httpx', 'tenacity', 'yaml') if m in sys.modules]\n"
        "import nexus.agent_runner.llm as llm\n"
        "from nexus.domain.agents import LLMSpec\n"
        "print(heavy())\n"
        "llm.make_provider(LLMSpec(script='steps: []'), secrets={}, variables={})\n"
        "print(heavy())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    # Only the scripted provider's construction needs YAML; nothing on that path needs httpx or tenacity.
    assert out == ["[]", "['yaml']"]
