"""deploy/ must only name things that exist: topics, metrics, labels, ports, commands, settings.

Production files are never run by the test suite, so a renamed metric or topic would break a
dashboard or an alert silently. These checks read every file and hold it to the code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from prometheus_client.metrics import MetricWrapperBase

from streams import dlq_watch, lag_metrics, metrics
from streams.agents import ROLES
from streams.health import HEALTHZ, READYZ
from streams.render import deploy_topic_map, render_topics
from streams.settings import Settings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "paybus.json"
K8S = DEPLOY / "k8s"

#: Used by deploy/ ahead of the code: the connector error counter and the CRM API counter
#: (see test_pending_metrics_are_defined) and the webhook receiver's worker role.
PENDING_METRICS: set[str] = set()
PENDING_ROLES: set[str] = set()
#: Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}
WEB_PORT = Settings.model_fields["web_port"].default


def yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_objects() -> Iterator[dict[str, Any]]:
    for path in sorted(K8S.glob("*.yaml")):
        yield from yaml_docs(path)


def scalars(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from scalars(value)
    elif isinstance(node, list):
        for value in node:
            yield from scalars(value)
    elif isinstance(node, str):
        yield node


# --- what the code defines --------------------------------------------------------------------


def defined_metrics() -> dict[str, set[str]]:
    """Every exposed sample name -> its label names (counters get _total, histograms _bucket...)."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    names: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            for family in obj.describe():
                for suffix in suffixes[family.type]:
                    extra = {"le"} if suffix == "_bucket" else set()
                    names[family.name + suffix] = set(obj._labelnames) | extra
    for name in lag_metrics.METRIC_NAMES:
        names[name] = set(lag_metrics.LABELS)
    names[dlq_watch.PENDING] = {"stage"}
    names[dlq_watch.SCHEDULED] = {"stage"}
    return names


def promql_expressions() -> list[tuple[str, str]]:
    """(where, expr) for every rule and every dashboard query."""
    exprs = []
    for group in yaml_docs(PROMETHEUS / "rules.yml")[0]["groups"]:
        for rule in group["rules"]:
            exprs.append((f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]))
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append((f"panel {panel['title']!r}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        exprs.append((f"variable {var['name']}", var["definition"]))
    return exprs


SELECTOR = re.compile(r"\b(paybus_\w+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")


def test_every_deploy_file_parses() -> None:
    files = [p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml", ".json"}]
    assert len(files) >= 12
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert yaml_docs(path), path


def test_promql_names_only_defined_metrics_and_their_labels() -> None:
    defined = defined_metrics()
    used: set[str] = set()
    for where, expr in promql_expressions():
        for name, selector in SELECTOR.findall(expr):
            used.add(name)
            assert name in defined or name in PENDING_METRICS, f"{where}: unknown metric {name}"
            if selector and name in defined:
                labels = set(MATCHER.findall(selector))
                unknown = labels - defined[name] - TARGET_LABELS
                assert not unknown, f"{where}: {name} has no label(s) {unknown}"
    # The dashboard and rules cover what the design promises to watch.
    for name in ("paybus_consumer_lag", "paybus_events_total", "paybus_dead_letters_total",
                 "paybus_connector_call_seconds_bucket", "paybus_held_events",
                 "paybus_oldest_held_event_age_seconds", "paybus_crm_api_calls_total"):  # fmt: skip
        assert name in used, name


def test_pending_metrics_are_defined() -> None:
    """When this XPASSes, the counters exist: empty PENDING_METRICS and drop this marker."""
    assert set(defined_metrics()) >= PENDING_METRICS


def test_held_age_alert_uses_the_hold_timeout() -> None:
    rules = {
        r["alert"]: r for g in yaml_docs(PROMETHEUS / "rules.yml")[0]["groups"] for r in g["rules"]
    }
    timeout = Settings.model_fields["hold_timeout_s"].default
    assert rules["PaybusHeldEventsAging"]["expr"].strip().endswith(f"> {timeout:g}")


def test_credentials_alert_says_to_restart_the_role_that_retries_parked_commands() -> None:
    # the retry role carries out what was parked (streams/agents/retry.py): restarting only
    # the connectors role leaves the old key in the process that would try them again
    rules = {
        r["alert"]: r for g in yaml_docs(PROMETHEUS / "rules.yml")[0]["groups"] for r in g["rules"]
    }
    description = " ".join(
        rules["PaybusPspCredentialsRefused"]["annotations"]["description"].split()
    )
    assert "retry role" in description


def test_every_alert_has_a_promtool_test() -> None:
    alerts = {
        r["alert"] for g in yaml_docs(PROMETHEUS / "rules.yml")[0]["groups"] for r in g["rules"]
    }
    tests = yaml_docs(PROMETHEUS / "rules_test.yml")[0]["tests"]
    firing = {a["alertname"] for t in tests for a in t["alert_rule_test"] if a["exp_alerts"]}
    silent = {a["alertname"] for t in tests for a in t["alert_rule_test"] if not a["exp_alerts"]}
    assert alerts == firing == silent


# --- topics -----------------------------------------------------------------------------------


def test_strimzi_topics_are_the_rendered_topic_map() -> None:
    expected = render_topics(deploy_topic_map(), "strimzi")
    assert (K8S / "topics.yaml").read_text() == expected, (
        "deploy/k8s/topics.yaml drifted from streams/topics.py: regenerate it with "
        "`paybus topics render --format strimzi > deploy/k8s/topics.yaml`"
    )
    docs = yaml_docs(K8S / "topics.yaml")
    assert [d["spec"]["topicName"] for d in docs] == [s.name for s in deploy_topic_map().all()]


def test_topic_names_in_deploy_files_are_in_the_topic_map() -> None:
    known = {s.name for s in deploy_topic_map().all()}
    looks_like_topic = re.compile(r"^paybus\.[a-z0-9_.-]+$")
    for path in [*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")]:
        for doc in yaml_docs(path):
            for value in scalars(doc):
                if looks_like_topic.match(value):
                    assert value in known, f"{path.name}: {value} is not a topic of the map"


# --- settings, ports, commands ----------------------------------------------------------------


def _paybus_env(node: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in node.items() if k.startswith("PAYBUS_")}


def deploy_env() -> list[tuple[str, dict[str, str]]]:
    compose = yaml_docs(COMPOSE)[0]
    envs = [(f"compose {n}", _paybus_env(s.get("environment") or {}))
            for n, s in compose["services"].items()]  # fmt: skip
    for obj in k8s_objects():
        if obj["kind"] in {"ConfigMap", "Secret"}:
            envs.append(
                (
                    f"k8s {obj['metadata']['name']}",
                    _paybus_env(obj.get("data") or obj["stringData"]),
                )
            )
    return envs


def test_paybus_env_names_are_settings() -> None:
    for where, env in deploy_env():
        for key in env:
            field, _, nested = key.removeprefix("PAYBUS_").lower().partition("__")
            assert field in Settings.model_fields, f"{where}: {key} is not a setting"
            if nested:
                section = Settings.model_fields[field].annotation
                assert nested in section.model_fields, f"{where}: {key} is not a setting"  # type: ignore[union-attr]


@pytest.mark.usefixtures("clean_env")
def test_deploy_env_builds_production_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for where, env in deploy_env():
        if "PAYBUS_PROFILE" not in env:
            continue
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            settings = Settings()
        assert settings.profile == "production", where
        assert settings.web_port == WEB_PORT, where
        assert settings.web_host == "0.0.0.0", f"{where}: must listen beyond loopback"


def test_ports_agree() -> None:
    compose = yaml_docs(COMPOSE)[0]["services"]
    assert compose["webhooks"]["ports"] == [f"{WEB_PORT}:{WEB_PORT}"]
    assert compose["worker"]["expose"] == [str(WEB_PORT)]
    scrape = {
        j["job_name"]: j for j in yaml_docs(PROMETHEUS / "prometheus.yml")[0]["scrape_configs"]
    }
    assert scrape["paybus"]["dns_sd_configs"][0]["names"] == ["worker"]
    assert scrape["paybus"]["dns_sd_configs"][0]["port"] == WEB_PORT
    assert scrape["paybus-webhooks"]["static_configs"][0]["targets"] == [f"webhooks:{WEB_PORT}"]
    prom_port = compose["prometheus"]["ports"][0].split(":")[-1]
    datasource = yaml_docs(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")[0]
    assert datasource["datasources"][0]["url"] == f"http://prometheus:{prom_port}"
    for obj in k8s_objects():
        if obj["kind"] != "Deployment":
            continue
        pod = obj["spec"]["template"]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(WEB_PORT)
        for container in pod["spec"]["containers"]:
            assert [p["containerPort"] for p in container["ports"]] == [WEB_PORT]


def test_probes_use_the_health_endpoints() -> None:
    """Readiness on /readyz and liveness on /healthz (a liveness probe on /readyz would restart
    every pod during a Kafka outage), on the container's own port, for every worker."""
    probed = []
    for obj in k8s_objects():
        if obj["kind"] != "Deployment":
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            if list(c["args"])[:1] != ["worker"]:
                continue
            paths = {k: c[k]["httpGet"]["path"] for k in c if k.endswith("Probe")}
            assert paths == {
                "startupProbe": HEALTHZ, "readinessProbe": READYZ, "livenessProbe": HEALTHZ
            }, obj["metadata"]["name"]  # fmt: skip
            assert {c[k]["httpGet"]["port"] for k in paths} == {p["name"] for p in c["ports"]}
            probed.append(obj["metadata"]["name"])
    assert sorted(probed) == ["paybus-webhooks", "paybus-worker"]
    for name in ("worker", "webhooks"):
        check = " ".join(yaml_docs(COMPOSE)[0]["services"][name]["healthcheck"]["test"])
        assert f"127.0.0.1:{WEB_PORT}{READYZ}'" in check, name


def paybus_commands() -> Iterator[tuple[str, list[str]]]:
    for name, service in yaml_docs(COMPOSE)[0]["services"].items():
        if str(service.get("image", "")).startswith("paybus"):
            yield f"compose {name}", list(service["command"])
    for obj in k8s_objects():
        if obj["kind"] == "Deployment":
            for c in obj["spec"]["template"]["spec"]["containers"]:
                yield f"k8s {obj['metadata']['name']}", list(c["args"])


def test_commands_exist_in_the_cli() -> None:
    from streams.cli import app

    seen = []
    for where, argv in paybus_commands():
        command: Any = typer.main.get_command(app)
        words = [w for w in argv if not w.startswith("-")]
        while words and hasattr(command, "commands"):
            word = words.pop(0)
            assert word in command.commands, f"{where}: `paybus {' '.join(argv)}` has no {word!r}"
            command = command.commands[word]
        options = {o for p in command.params for o in p.opts}
        for flag in (w for w in argv if w.startswith("-")):
            assert flag in options, f"{where}: {flag} is not an option of {command.name}"
        for i, word in enumerate(argv):
            if word in {"--role", "-r"}:
                assert argv[i + 1] in set(ROLES) | PENDING_ROLES, f"{where}: role {argv[i + 1]}"
        seen.append(argv[0])
    assert {"topics", "worker"} <= set(seen)


def test_pending_roles_exist() -> None:
    """When this XPASSes, the web role exists: empty PENDING_ROLES and drop this marker."""
    assert set(ROLES) >= PENDING_ROLES


# --- wiring between files ---------------------------------------------------------------------


def test_scaler_watches_the_real_group_and_partition_count() -> None:
    (scaled,) = [o for o in k8s_objects() if o["kind"] == "ScaledObject"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == Settings.model_fields["app_id"].default
    assert scaled["spec"]["maxReplicaCount"] == deploy_topic_map().partitions
    deployments = {o["metadata"]["name"] for o in k8s_objects() if o["kind"] == "Deployment"}
    assert scaled["spec"]["scaleTargetRef"]["name"] in deployments


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml_docs(K8S / "kustomization.yaml")[0]["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk


def test_compose_mounts_what_prometheus_and_grafana_read() -> None:
    services = yaml_docs(COMPOSE)[0]["services"]
    mounts = {
        v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"] if ":/" in v
    }
    config = yaml_docs(PROMETHEUS / "prometheus.yml")[0]
    for rule_file in config["rule_files"]:
        assert (COMPOSE.parent / mounts[rule_file]).resolve() == PROMETHEUS / "rules.yml"
    grafana = {
        v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"] if ":/" in v
    }
    provider = yaml_docs(DEPLOY / "grafana/provisioning/dashboards/paybus.yml")[0]["providers"][0]
    assert (COMPOSE.parent / grafana[provider["options"]["path"]]).resolve() == DASHBOARD.parent
    uid = yaml_docs(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")[0]["datasources"][
        0
    ]["uid"]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["datasource"]["uid"] == uid for p in panels if p["type"] != "row")


def _app_id(env: Any) -> str:
    if isinstance(env, dict):
        return str(env.get("PAYBUS_APP_ID", "paybus"))
    found = [e.get("value") for e in env or [] if e.get("name") == "PAYBUS_APP_ID"]
    return str(found[0]) if found else "paybus"


def _roles(argv: list[str]) -> frozenset[str]:
    return frozenset(argv[i + 1] for i, w in enumerate(argv) if w in {"--role", "-r"}) or (
        frozenset(ROLES)
    )


def test_workers_with_different_roles_are_in_different_groups() -> None:
    """Every member of a Faust consumer group must run the same agents: a member without an
    agent for a partition it is assigned never processes it (and Tansu refuses the join)."""
    groups: dict[str, set[frozenset[str]]] = {}
    for service in yaml_docs(COMPOSE)[0]["services"].values():
        argv = list(service.get("command") or [])
        if str(service.get("image", "")).startswith("paybus") and argv[:1] == ["worker"]:
            groups.setdefault(f"compose:{_app_id(service.get('environment'))}", set()).add(
                _roles(argv)
            )
    for obj in k8s_objects():
        if obj["kind"] != "Deployment":
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            argv = list(c.get("args") or [])
            if argv[:1] == ["worker"]:
                groups.setdefault(f"k8s:{_app_id(c.get('env'))}", set()).add(_roles(argv))
    assert groups, "no worker found in the deploy files"
    mixed = {g: sorted(map(sorted, r)) for g, r in groups.items() if len(r) > 1}
    assert not mixed, f"one consumer group, different roles: {mixed}"
