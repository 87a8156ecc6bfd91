"""The Grafana dashboards (grafana/generate.py -> grafana/dashboards/*.json) and
their provisioning, without any server: up to date, every query parses, uses only
metrics of monitor/metrics.py and the `${datasource}` datasource."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor import metrics
from tests.dashboards import (
    ANNOTATION,
    PANEL,
    load_dashboards,
    panel_queries,
    panels,
    parse,
    parse_label_values,
    substitute,
    variable_queries,
)

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
DASHBOARDS = load_dashboards(GRAFANA / "dashboards")
BY_TITLE = {d["title"]: d for d in DASHBOARDS}
VALUES = {"domain": "legal", "datasource": "monitor-prometheus"}

METRIC_NAMES = {v for k, v in vars(metrics).items()
                if k.isupper() and isinstance(v, str) and v.startswith("monitor_")}
HISTOGRAMS = {metrics.EVAL_DURATION}

REQUIRED_PANELS = {
    "Overview": ["Drift detected per domain and feature", "Error, refusal and empty-output ratios",
                 "Firing alerts", "Active version per domain"],
    "Domain": ["Drift score per feature and method", "Quality ratios",
               "Mean log-probability and feedback", "Latency quantiles",
               "Golden scores per version (active marked)"],
    "Evaluation": ["Golden scores per version (active marked)",
                   "Golden delta against each baseline", "Regressions per version and baseline",
                   "Evaluation duration", "Time since the last successful evaluation"],
    "Daemon health": ["Records accepted per second", "Consumer lag",
                      "Records rejected per second by reason", "Rule reloads",
                      "Alert delivery failures", "Evaluation queue"],
}

ALL_QUERIES = [q for d in DASHBOARDS for q in panel_queries(d)]


def test_the_committed_dashboards_are_the_generators_output():
    done = subprocess.run([sys.executable, str(GRAFANA / "generate.py"), "--check"],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_check_names_a_stale_file(tmp_path):
    run = [sys.executable, str(GRAFANA / "generate.py"), "--out", str(tmp_path)]
    assert subprocess.run(run, check=False, capture_output=True, timeout=60).returncode == 0
    (tmp_path / "domain.json").write_text("{}\n")
    (tmp_path / "old.json").write_text("{}\n")
    done = subprocess.run(run + ["--check"], check=False, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert "domain.json" in done.stderr and "old.json" in done.stderr
    assert "overview.json" not in done.stderr


def test_the_four_dashboards_exist_with_stable_unique_uids():
    assert sorted(BY_TITLE) == ["Daemon health", "Domain", "Evaluation", "Overview"]
    uids = [d["uid"] for d in DASHBOARDS]
    assert len(set(uids)) == 4 and all(u.startswith("monitor-") for u in uids)
    for d in DASHBOARDS:
        assert d["schemaVersion"] == 39
        ids = [p["id"] for p in panels(d)]
        assert len(ids) == len(set(ids)), d["title"]


@pytest.mark.parametrize("title", sorted(REQUIRED_PANELS))
def test_each_dashboard_has_its_panels(title):
    found = [p["title"] for p in panels(BY_TITLE[title]) if p["type"] != "row"]
    assert set(REQUIRED_PANELS[title]) <= set(found), set(REQUIRED_PANELS[title]) - set(found)
    assert 6 <= len(found) <= 12, (title, len(found))


def test_panels_use_the_kinds_of_grafana_10():
    kinds = {p["type"] for d in DASHBOARDS for p in panels(d)}
    assert kinds <= {"row", "timeseries", "stat", "table", "state-timeline"}
    assert {"timeseries", "stat", "state-timeline"} <= kinds


@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda q: f"{q.dashboard}/{q.panel}/{q.refId}")
def test_every_query_parses_after_substitution(query):
    parse(substitute(query.expr, VALUES, rate_interval="1m", interval="15s", range_="6h"))


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\bmonitor_[a-z_]+", expr))
    out = set()
    for name in names:
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
                name = name.removesuffix(suffix)
        out.add(name)
    return out


def test_every_metric_a_query_reads_is_named_in_monitor_metrics():
    used = set()
    for q in ALL_QUERIES:
        names = _metric_names(q.expr)
        assert names, f"{q.where()}: reads no monitor metric: {q.expr}"
        assert names <= METRIC_NAMES, f"{q.where()}: unknown {names - METRIC_NAMES}"
        used |= names
    for d in DASHBOARDS:
        for v in variable_queries(d):
            metric, _ = parse_label_values(v.query)
            assert metric in METRIC_NAMES, (d["title"], v.name, metric)
    # Every metric the daemon exports is on a dashboard.
    assert METRIC_NAMES - used == set()


def test_a_renamed_metric_would_be_caught():
    assert _metric_names("sum(rate(monitor_records_totl[1m]))") - METRIC_NAMES
    assert not _metric_names("monitor_eval_duration_seconds_bucket") - METRIC_NAMES


def _datasources(node, path="$"):
    """Every `datasource` value in the dashboard, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield path, value
            yield from _datasources(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _datasources(value, f"{path}[{i}]")


@pytest.mark.parametrize("title", sorted(BY_TITLE))
def test_only_the_datasource_variable_is_used(title):
    d = BY_TITLE[title]
    found = list(_datasources(d))
    assert found
    for path, value in found:
        assert value == {"type": "prometheus", "uid": "${datasource}"}, path
    for p in panels(d):
        if p["type"] != "row":
            assert "datasource" in p, p["title"]
            assert all("datasource" in t for t in p["targets"]), p["title"]
    for a in d["annotations"]["list"]:
        assert "datasource" in a, a["name"]
    variable = next(v for v in d["templating"]["list"] if v["name"] == "datasource")
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    assert variable["current"]["value"] == _provisioned_uid()


@pytest.mark.parametrize("title", sorted(BY_TITLE))
def test_units_and_legends_are_set(title):
    for p in panels(BY_TITLE[title]):
        if p["type"] == "row":
            continue
        assert p["fieldConfig"]["defaults"].get("unit"), p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t.get("legendFormat"), (p["title"], t["refId"])
        if p["type"] == "timeseries":
            assert p["options"]["legend"]["showLegend"], p["title"]


def test_drift_score_threshold_lines_are_the_methods_defaults():
    from monitor.drift import METHODS

    panel = next(p for p in panels(BY_TITLE["Domain"])
                 if p["title"] == "Drift score per feature and method")
    levels = {s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]}
    for o in panel["fieldConfig"]["overrides"]:
        for prop in o["properties"]:
            if prop["id"] == "thresholds":
                levels |= {s["value"] for s in prop["value"]["steps"]}
    assert levels - {None} == {m.default_threshold for m in METHODS.values()}
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"


def test_the_domain_dashboard_has_the_domain_variable():
    [variable] = variable_queries(BY_TITLE["Domain"])
    assert variable.name == "domain"
    assert variable.query == "label_values(monitor_records_total, domain)"
    assert parse_label_values(variable.query) == ("monitor_records_total", "domain")
    domain_queries = [q for q in panel_queries(BY_TITLE["Domain"]) if q.kind == PANEL]
    assert all('domain="$domain"' in q.expr for q in domain_queries)


def test_actions_are_annotations():
    for title in ("Overview", "Domain"):
        [a] = [q for q in panel_queries(BY_TITLE[title]) if q.kind == ANNOTATION]
        assert "monitor_actions_total" in a.expr
        parse(substitute(a.expr, VALUES))


def test_nested_rows_and_annotations_are_read():
    health = panel_queries(BY_TITLE["Daemon health"])
    assert "Rule group duration" in {q.panel for q in health}  # in a collapsed row
    dashboard = {"title": "t", "panels": [
        {"type": "row", "title": "r", "panels": [
            {"title": "inner", "targets": [{"refId": "A", "expr": "monitor_build_info"},
                                           {"refId": "B", "expr": "x", "hide": True}]}]}],
        "annotations": {"list": [{"name": "a", "expr": "monitor_alerts"},
                                 {"name": "builtin", "builtIn": 1}]},
        "templating": {"list": [{"name": "d", "type": "query",
                                 "query": "label_values(monitor_records_total, domain)"},
                                {"name": "datasource", "type": "datasource"}]}}
    assert [(q.panel, q.refId, q.kind) for q in panel_queries(dashboard)] == [
        ("inner", "A", PANEL), ("a", "", ANNOTATION)]
    assert [v.query for v in variable_queries(dashboard)] == [
        "label_values(monitor_records_total, domain)"]


def test_substitute_follows_grafana():
    values = {"domain": "legal", "v": "x"}
    assert substitute('a{d="$domain",e="${v}",f="[[v]]",g="${v:regex}"}', values) == \
        'a{d="legal",e="x",f="x",g="x"}'
    assert substitute("rate(a[$__rate_interval]) + rate(a[$__interval]) + "
                      "increase(a[$__range])", {}, rate_interval="2m", interval="30s",
                      range_="3h") == "rate(a[2m]) + rate(a[30s]) + increase(a[3h])"
    assert substitute("$__interval_ms", {"__interval_ms": "1"}) == "1"
    with pytest.raises(KeyError, match="domain"):
        substitute('a{d="$domain"}', {})


def _provisioned_uid() -> str:
    doc = yaml.safe_load((GRAFANA / "provisioning/datasources/monitor.yml").read_text())
    [source] = doc["datasources"]
    assert source["type"] == "prometheus"
    return source["uid"]


def test_provisioning_parses_and_points_at_the_dashboards():
    assert _provisioned_uid() == "monitor-prometheus"
    doc = yaml.safe_load((GRAFANA / "provisioning/dashboards/monitor.yml").read_text())
    [provider] = doc["providers"]
    assert provider["type"] == "file"
    mounted = provider["options"]["path"]
    readme = (GRAFANA / "README.md").read_text()
    # The README mounts grafana/dashboards exactly where the provider reads.
    assert f'grafana/dashboards:{mounted}:ro' in readme
    assert "/etc/grafana/provisioning/datasources" in readme
    assert "/etc/grafana/provisioning/dashboards" in readme


def test_the_example_scrape_config_scrapes_the_daemon_and_loads_the_rules():
    doc = yaml.safe_load((GRAFANA / "prometheus.example.yml").read_text())
    [job] = doc["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
    [pattern] = doc["rule_files"]
    assert sorted((GRAFANA / pattern).parent.resolve().glob("*.yml")) == \
        sorted((REPO / "rules").glob("*.yml"))
