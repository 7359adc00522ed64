"""The local stack starts nats-server with its monitoring endpoint, hands core-api its URL (NEXUS_NATS_MONITOR_URL),
keeps it across a restart of the server, and `make run`'s banner says where metrics and NATS's monitoring are."""

import json
import urllib.request
from pathlib import Path

import pytest

from nexus.dev.stack import Stack, _banner

pytestmark = pytest.mark.infra


def varz(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/varz", timeout=5) as r:
        return json.load(r)


def test_core_api_is_handed_the_monitoring_endpoint_and_it_survives_a_restart(tmp_path: Path) -> None:
    stack = Stack(
        home=tmp_path / "home", mongodb_url="mongodb://127.0.0.1:1/", metrics_ports={"core-api": 1, "worker": 2}
    )
    try:
        stack.start_infra()
        monitor = stack.nats_monitor_url
        assert monitor.startswith("http://127.0.0.1:") and "server_id" in varz(monitor)
        assert stack.service_env("core-api")["NEXUS_NATS_MONITOR_URL"] == monitor
        assert "NEXUS_NATS_MONITOR_URL" not in stack.service_env("worker")  # core-api alone reads it

        stack.restart_server("nats")
        assert stack.servers[0].monitor_url == monitor and "server_id" in varz(monitor)

        banner = _banner(stack)
        assert f"(monitoring: {monitor})" in banner and "http://127.0.0.1:1/metrics" in banner
    finally:
        stack.stop()


def test_a_server_started_elsewhere_is_read_only_when_named(tmp_path: Path) -> None:
    stack = Stack(
        home=tmp_path,
        nats_url="nats://127.0.0.1:1",
        mongodb_url="mongodb://127.0.0.1:1/",
        metrics_ports={"core-api": 1},
    )
    stack.start_infra()
    assert stack.service_env("core-api")["NEXUS_NATS_MONITOR_URL"] == ""
    assert "not read: set NEXUS_NATS_MONITOR_URL" in _banner(stack)
