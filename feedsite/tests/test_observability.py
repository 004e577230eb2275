"""The dashboard and the alert rules only query metrics the processes export, and promtool
accepts the rules and the Prometheus config."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml
from django_prometheus.middleware import Metrics
from prometheus_client import REGISTRY

import core.metrics  # noqa: F401  (registers the project's metrics)

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
# PromQL words that are not metric names.
PROMQL = {
    "sum",
    "max",
    "min",
    "rate",
    "increase",
    "deriv",
    "histogram_quantile",
    "by",
    "and",
    "or",
    "le",
    "view",
    "partition",
    "error",
    "dependency",
    "m",
}


def exported() -> set[str]:
    """Every series name /metrics can show: the project's metrics and django_prometheus's."""
    Metrics.get_instance()
    names = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, [""]))
    return names


def metric_names(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_labels))
    return {w for w in words - PROMQL if not re.fullmatch(r"\d+|e", w)}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/feedsite.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_rules() -> list[dict]:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_the_dashboard_has_the_panels_operators_need():
    dashboard = json.loads((DEPLOY / "grafana/dashboards/feedsite.json").read_text())
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in (
        "by endpoint",
        "latency by endpoint",
        "cache hit",
        "posts per second",
        "fan-out rows",
        "batch duration",
        "post-to-feed",
        "consumer lag",
        "outbox",
        "dead letters",
    ):
        assert topic in titles


@pytest.mark.parametrize("expr", dashboard_exprs())
def test_every_dashboard_query_uses_exported_metrics(expr):
    names = metric_names(expr)
    assert names, expr
    assert names <= exported(), f"not exported: {names - exported()}"


def test_alert_rules_are_well_formed():
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == {
        "FanoutConsumerLagGrowing",
        "FanoutPartitionStalled",
        "OutboxOldestRowTooOld",
        "DeadLettersAppearing",
        "FanoutBreakerTripped",
        "ReadinessFailing",
        "PostToFeedLatencyHigh",
    }
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])
        assert rule["expr"].count("(") == rule["expr"].count(")")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_uses_exported_metrics(rule):
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    assert names <= exported(), f"not exported: {names - exported()}"


def test_prometheus_loads_the_rules_and_compose_mounts_them():
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounts = {
        target: source for source, target, *_ in (v.split(":") for v in compose["prometheus"]["volumes"])
    }
    config_dir = PurePosixPath(next(t for t, s in mounts.items() if s == "./deploy/prometheus.yml")).parent
    # Prometheus reads relative rule files from its config file's directory.
    assert prometheus["rule_files"] == ["alerts.yml"]
    assert mounts[str(config_dir / "alerts.yml")] == "./deploy/alerts.yml"
    grafana = compose["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_the_name_check_can_fail():
    assert metric_names("sum(rate(feed_no_such_metric_total[5m]))") - exported() == {
        "feed_no_such_metric_total"
    }


# --- Checked by Prometheus's own tool ------------------------------------------------------
# promtool is in Debian's prometheus package, which make test installs when it is missing.
PROMTOOL = os.environ.get("PROMTOOL", "promtool")


def promtool(*args: str | Path) -> subprocess.CompletedProcess:
    if shutil.which(PROMTOOL) is None:
        pytest.fail(f"{PROMTOOL} is missing: install Debian's prometheus package", pytrace=False)
    return subprocess.run([PROMTOOL, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_alert_rules():
    result = promtool("check", "rules", DEPLOY / "alerts.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_accepts_the_prometheus_config_and_the_rules_it_loads():
    """The config is checked where compose mounts it, with the rule files beside it."""
    result = promtool("check", "config", DEPLOY / "prometheus.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_refuses_a_broken_rule(tmp_path):
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    rules["groups"][0]["rules"][0]["expr"] = "rate(feed_fanout_rows_total[5m]"
    broken = tmp_path / "alerts.yml"
    broken.write_text(yaml.safe_dump(rules))

    result = promtool("check", "rules", broken)

    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
