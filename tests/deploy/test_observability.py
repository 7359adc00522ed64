"""deploy/grafana and deploy/prometheus: dashboards that query only metrics the services
export, alert rules that parse, fire when they should and stay quiet otherwise, and a
local scrape config that finds every service on its port."""

import fnmatch
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from nexus.dev.dashboards import DASHBOARDS, UNPANELLED, UNPANELLED_PREFIXES, render
from tests.conftest import need_tool

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = REPO / "deploy" / "grafana" / "dashboards"
PROMETHEUS = REPO / "deploy" / "prometheus"

# Each service's metrics module; importing it registers every family the service exports (the runner is
# not scraped: it lives for one run).
SERVICE_METRICS_MODULES = [
    "nexus.core_api.metrics",
    "nexus.worker.metrics",
    "nexus.board_sync.metrics",
    "nexus.telegram_gateway.metrics",
]


def exported() -> dict[str, str]:
    """The families the services really register, by the name PromQL uses (counters end in _total), and type."""
    for module in SERVICE_METRICS_MODULES:
        importlib.import_module(module)
    families = {}
    for family in REGISTRY.collect():
        families[family.name + "_total" if family.type == "counter" else family.name] = family.type
    return families


EXPORTED = exported()
NEXUS_METRICS = {name for name in EXPORTED if name.startswith("nexus_")}
HISTOGRAMS = {name for name, kind in EXPORTED.items() if kind == "histogram"}
DASHBOARD_METRICS = NEXUS_METRICS
RULE_METRICS = NEXUS_METRICS | {"up"}

EXPECTED_ALERTS = {
    "NexusRunFailureRateHigh",
    "NexusRunsLost",
    "NexusDispatchLatencyHigh",
    "NexusDeadLetterQueueNotEmpty",
    "NexusServiceDown",
}
# The local stack's metrics ports (`make run`); agent-runner runs are not scraped.
LOCAL_TARGETS = {
    "core-api": "127.0.0.1:9101",
    "worker": "127.0.0.1:9102",
    "board-sync": "127.0.0.1:9104",
    "telegram-gateway": "127.0.0.1:9105",
}

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
PROMQL_KEYWORDS |= {"offset", "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (histogram series by their base name)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges, including $__rate_interval
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        word = match.group()
        if e[match.end() :].lstrip().startswith("(") or word.lower() in PROMQL_KEYWORDS:
            continue  # a function call or an operator
        base = re.sub(r"_(?:bucket|sum|count)$", "", word)
        names.add(base if base in HISTOGRAMS else word)
    return names


def dashboards() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def panels(dashboard: dict) -> list[dict]:
    """Every panel, rows' nested panels included."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]


def rules() -> list[dict]:
    doc = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


# ---------------------------------------------------------------- the PromQL reader


def test_metric_names_finds_metrics_and_only_metrics():
    expr = (
        'histogram_quantile(0.99, sum by (route, le) (rate(nexus_http_request_duration_seconds_bucket{status=~"5.."}'
        "[$__rate_interval]))) / on (job) group_left sum without (instance) (node_cpu_seconds_total offset 5m) > 1e3"
    )
    assert metric_names(expr) == {"nexus_http_request_duration_seconds", "node_cpu_seconds_total"}
    assert metric_names('up == 0 or absent(up{job="worker"})') == {"up"}


# ---------------------------------------------------------------- dashboards


def test_there_is_an_overview_dashboard():
    assert "nexus-overview.json" in [p.name for p in dashboards()]


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.name)
def test_dashboard_is_grafana_json(path):
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"{panel['title']}: no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{panel['title']}: refIds repeat"
        uid = panel["datasource"]["uid"]
        if uid.startswith("$"):
            assert variables[uid.strip("${}")]["type"] == "datasource"


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.name)
def test_dashboard_queries_only_exported_metrics(path):
    dashboard = json.loads(path.read_text())
    for expr in exprs(dashboard):
        assert metric_names(expr), f"no metric in {expr!r}"
        assert metric_names(expr) <= DASHBOARD_METRICS, expr


def test_every_exported_family_has_a_panel_or_a_stated_reason():
    """Both ways against the live registry: no panel reads a family nothing exports (above), and no family a
    service exports goes without a panel unless UNPANELLED says why."""
    used = set().union(*(metric_names(q) for path in dashboards() for q in exprs(json.loads(path.read_text()))))
    unexplained = {
        name
        for name in EXPORTED
        if name not in used and name not in UNPANELLED and not name.startswith(tuple(UNPANELLED_PREFIXES))
    }
    assert not unexplained, (
        f"exported without a panel or a reason in nexus.dev.dashboards.UNPANELLED: {sorted(unexplained)}"
    )
    assert not set(UNPANELLED) & used, "a family with a panel is also listed as having none"
    assert set(UNPANELLED) <= set(EXPORTED), "UNPANELLED names a family nothing exports"


WALK = """
import importlib, json, pkgutil, sys
from prometheus_client import REGISTRY

def names():
    return sorted(f.name for f in REGISTRY.collect() if f.name.startswith("nexus_"))

for package in sys.argv[1:]:
    importlib.import_module(package + ".metrics")
declared = names()
for package in sys.argv[1:]:
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(info.name)
print(json.dumps({"declared": declared, "registered": names()}))
"""


def test_each_service_metrics_module_names_every_family_its_code_registers():
    """In a fresh interpreter: the metrics modules alone register what importing every module of the services
    registers, so the checks above (which read the metrics modules) see every family a service can export."""
    packages = [m.removesuffix(".metrics") for m in SERVICE_METRICS_MODULES]
    out = subprocess.run(
        [sys.executable, "-c", WALK, *packages], capture_output=True, text=True, check=True, timeout=120
    )
    found = json.loads(out.stdout)
    assert set(found["registered"]) - set(found["declared"]) == set(), "import these in the service's metrics module"


def test_the_registry_reading_catches_a_family_without_a_panel():
    """The check above reads what is registered: a family a service adds shows up in it at once."""
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    Counter("nexus_added_by_a_branch", "a metric with no panel yet", registry=registry)
    names = {f.name + "_total" for f in registry.collect()}
    used = set().union(
        *(metric_names(q) for q in exprs(json.loads((DASHBOARDS_DIR / "nexus-overview.json").read_text())))
    )
    assert "nexus_added_by_a_branch_total" in names - used


@pytest.mark.parametrize("name", sorted(DASHBOARDS), ids=str)
def test_committed_dashboard_is_the_one_the_code_builds(name):
    """The JSON under deploy/grafana is generated (`make dashboards`): edit nexus.dev.dashboards, not the file."""
    assert (DASHBOARDS_DIR / name).read_text() == render(name)


def test_overview_shows_the_views_sres_ask_for():
    dashboard = json.loads((DASHBOARDS_DIR / "nexus-overview.json").read_text())
    queries = exprs(dashboard)

    def has(metric: str, *fragments: str) -> bool:
        return any(metric in q and all(f in q for f in fragments) for q in queries)

    assert has("nexus_runs_total", "by (status)")
    for histogram in ("nexus_run_duration_seconds", "nexus_dispatch_latency_seconds"):
        assert has(histogram, "histogram_quantile(0.5,") and has(histogram, "histogram_quantile(0.99,")
    assert has("nexus_http_requests_total", "by (route)")
    assert has("nexus_http_requests_total", "by (route)", 'status=~"5.."')
    assert has("nexus_http_request_duration_seconds", "by (route, le)")
    assert has("nexus_consumer_pending_messages", "consumer") and has("nexus_consumer_redelivered_messages", "consumer")
    assert has("nexus_llm_tokens_total", "provider", "model") and has("nexus_llm_cost_usd_total", "agent")
    assert has("nexus_board_sync_lag_seconds", "histogram_quantile(0.99,") and has(
        "nexus_board_provider_calls_total", "outcome"
    )


def test_grafana_in_kubernetes_is_provisioned_with_the_files_under_deploy():
    docs = list(yaml.safe_load_all((REPO / "k8s" / "infra" / "grafana.yaml").read_text()))
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "grafana-provisioning"]
    provisioning = REPO / "deploy" / "grafana" / "provisioning"
    assert config_map["data"]["datasources.yaml"] == (provisioning / "datasources" / "nexus.yaml").read_text()
    assert config_map["data"]["dashboards.yaml"] == (provisioning / "dashboards" / "nexus.yaml").read_text()
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    mounts = {
        m["name"]: m["mountPath"] for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert env["NEXUS_GRAFANA_DASHBOARDS"] == mounts["dashboards"]
    assert env["NEXUS_PROMETHEUS_URL"].startswith("http://prometheus.")


def test_grafana_in_kubernetes_opens_on_a_dashboard_that_exists():
    grafana = [
        d
        for d in yaml.safe_load_all((REPO / "k8s" / "infra" / "grafana.yaml").read_text())
        if d["kind"] == "Deployment"
    ][0]
    env = {e["name"]: e.get("value") for e in grafana["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (DASHBOARDS_DIR / Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).name).exists()


# ---------------------------------------------------------------- alert rules


def test_rules_define_the_expected_alerts():
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names))
    assert set(names) == EXPECTED_ALERTS


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_rule_is_complete_and_uses_exported_metrics(rule):
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    if "for" in rule:
        assert re.fullmatch(r"\d+[smh]", rule["for"])
    assert metric_names(rule["expr"]) and metric_names(rule["expr"]) <= RULE_METRICS, rule["expr"]


def test_service_down_watches_every_scraped_service():
    (rule,) = [r for r in rules() if r["alert"] == "NexusServiceDown"]
    (alternatives,) = re.findall(r'up\{job=~"([^"]+)"\}', rule["expr"])
    assert set(alternatives.split("|")) == set(LOCAL_TARGETS)
    assert set(re.findall(r'absent\(up\{job="([^"]+)"\}\)', rule["expr"])) == set(LOCAL_TARGETS)
    deployments = {
        d["metadata"]["name"]
        for path in (REPO / "k8s" / "base").glob("*.yaml")
        for d in yaml.safe_load_all(path.read_text())
        if d and d.get("kind") == "Deployment"
    }
    assert deployments == set(LOCAL_TARGETS)


def test_promtool_accepts_the_rules():
    promtool = need_tool("promtool")
    result = subprocess.run([promtool, "check", "rules", "rules.yml"], cwd=PROMETHEUS, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_fire_when_they_should_and_not_otherwise():
    """rules_test.yml feeds each alert series that must fire it and series that must not."""
    promtool = need_tool("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", "rules_test.yml"], cwd=PROMETHEUS, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- scrape configs


def test_local_scrape_config_finds_every_service_on_its_port():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]] for job in config["scrape_configs"]
    }
    assert targets == {job: [target] for job, target in LOCAL_TARGETS.items()}
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS / rule_file).exists()


def test_kubernetes_prometheus_reads_rules_where_they_are_mounted():
    docs = list(yaml.safe_load_all((REPO / "k8s" / "infra" / "prometheus.yaml").read_text()))
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    mounts = {
        m["name"]: m["mountPath"] for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert config["rule_files"] == [mounts["rules"] + "/*.yml"]
    # The Tiltfile names each ConfigMap key after the file it mounts: every one must match the glob.
    tiltfile = (REPO / "Tiltfile").read_text()
    block = re.search(r"configmap_from_files\(\s*'prometheus-rules',[^\[]*\[(.*?)\]", tiltfile, re.S)
    mounted = [os.path.basename(f) for f in re.findall(r"'([^']+)'", block.group(1))]
    glob = os.path.basename(config["rule_files"][0])
    assert mounted and all(fnmatch.fnmatch(name, glob) for name in mounted), (mounted, glob)


def test_consumer_lag_has_a_source_in_kubernetes():
    """Each service exports its own consumers' lag; NATS's own monitoring (servers, streams, every consumer)
    reaches Prometheus through the exporter beside the NATS pods, annotated so Prometheus scrapes its port."""
    (nats,) = [
        d for d in yaml.safe_load_all((REPO / "k8s" / "infra" / "nats.yaml").read_text()) if d["kind"] == "StatefulSet"
    ]
    template = nats["spec"]["template"]
    (exporter,) = [c for c in template["spec"]["containers"] if "prometheus-nats-exporter" in c["image"]]
    assert "-jsz=all" in exporter["args"]
    port = template["metadata"]["annotations"]["prometheus.io/port"]
    assert {"name": "exporter", "containerPort": int(port)} in exporter["ports"]


def test_core_api_reads_every_nats_server_s_monitoring_in_kubernetes():
    """NATS's connections and streams on the overview come from core-api reading each server's monitoring
    endpoint: the dev cluster names every NATS replica's monitor port to core-api, and lets it through."""
    infra = [d for path in (REPO / "k8s" / "infra").glob("*.yaml") for d in yaml.safe_load_all(path.read_text()) if d]
    (nats,) = [d for d in infra if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "nats"]
    (server,) = [c for c in nats["spec"]["template"]["spec"]["containers"] if c["name"] == "nats"]
    port = next(p["containerPort"] for p in server["ports"] if p["name"] == "monitor")
    (telemetry,) = [d for d in infra if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "nexus-telemetry"]
    urls = telemetry["data"]["NEXUS_NATS_MONITOR_URL"].split(",")
    headless = nats["spec"]["serviceName"]
    assert urls == [
        f"http://nats-{i}.{headless}.nexus.svc.cluster.local:{port}" for i in range(nats["spec"]["replicas"])
    ]
    (core_api,) = [
        d
        for d in yaml.safe_load_all((REPO / "k8s" / "base" / "core-api.yaml").read_text())
        if d and d["kind"] == "Deployment"
    ]
    env_from = core_api["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {"configMapRef": {"name": "nexus-telemetry", "optional": True}} in env_from

    policies = [d for d in infra if d["kind"] == "NetworkPolicy"]

    def allows(direction: str, selected: str, peer: str) -> bool:
        key, peers = ("egress", "to") if direction == "egress" else ("ingress", "from")
        return any(
            p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == selected
            and any(
                {"protocol": "TCP", "port": port} in rule.get("ports", [])
                and any(
                    x.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == peer
                    for x in rule.get(peers, [])
                )
                for rule in p["spec"].get(key, [])
            )
            for p in policies
        )

    assert allows("egress", "core-api", "nats") and allows("ingress", "nats", "core-api")
