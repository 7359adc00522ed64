"""core-api's run metrics from run events: a run's kernel drops are counted once however often its
heartbeats repeat them, and each model call's tokens and cost land on its provider, model and agent."""

from prometheus_client import REGISTRY

from nexus.core_api.metrics import count_heartbeat, count_llm_call


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_kernel_drops_are_counted_once_per_run() -> None:
    before, depths = sample("nexus_kernel_mailbox_dropped_total"), sample("nexus_kernel_mailbox_depth_count")
    count_heartbeat("run_drops_a", 4, 3)
    count_heartbeat("run_drops_a", 0, 3)  # the same drops, reported again
    count_heartbeat("run_drops_a", 1, 5)
    count_heartbeat("run_drops_b", 0, 1)
    assert sample("nexus_kernel_mailbox_dropped_total") - before == 6
    assert sample("nexus_kernel_mailbox_depth_count") - depths == 4


def test_model_calls_count_tokens_and_cost_by_provider_model_and_agent() -> None:
    labels = {"provider": "openai", "model": "m-test", "agent": "agt_metrics"}
    count_llm_call("agt_metrics", "openai", "m-test", 100, 20, 0.5)
    count_llm_call("agt_metrics", "openai", "m-test", 1, 2, 0.25)
    assert sample("nexus_llm_tokens_total", **labels, kind="input") == 101
    assert sample("nexus_llm_tokens_total", **labels, kind="output") == 22
    assert sample("nexus_llm_cost_usd_total", **labels) == 0.75
