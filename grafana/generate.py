"""Generate the Grafana dashboards of `grafana/dashboards/` from this file.

    .venv/bin/python grafana/generate.py           # (re)write the JSON files
    .venv/bin/python grafana/generate.py --check   # exit 1 naming the files that differ

A change to a dashboard is one edit here, then a run; `--check` (also run by
tests/unit/test_dashboards.py) fails when the committed JSON is not what this
file generates. Standard library only, plus two constants of the monitor itself
(the drift methods' default thresholds and the default alpha), so the threshold
lines follow the code.

Conventions of the output (Grafana 10/11, schemaVersion 39):

- every panel, target, variable and annotation uses the datasource variable
  `${datasource}` (type prometheus); grafana/provisioning/datasources/monitor.yml
  provisions one with the fixed uid `monitor-prometheus`, the variable's default;
- metric names are literal PromQL, checked against monitor/metrics.py by the
  unit tests (a renamed metric fails there);
- no query hides a missing metric (`or vector(0)`): each returns data whenever
  the metrics it reads exist, which the end-to-end test checks on a real
  Prometheus (tests/dashboards.py);
- panel ids and grid positions follow the order of the panels below, so the
  output is stable;
- joins with `monitor_adapter_active_info` aggregate it by (domain, version)
  first, so that a daemon scraped twice (two `instance`s during a rolling
  restart) does not make the join fail with duplicate series.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "dashboards"
sys.path.insert(0, str(ROOT))

from monitor.config import DriftConfig  # after the path is set
from monitor.drift import METHODS

PROVISIONED_UID = "monitor-prometheus"  # grafana/provisioning/datasources/monitor.yml
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TAG = "lora-monitor"

# Thresholds drawn on panels. Drift: each method's registered default
# (monitor/drift/<method>.py, DEFAULT_THRESHOLD; `drift.thresholds` in the config
# may override them, and `monitor_drift_detected` is the decision that counts).
DRIFT_THRESHOLDS = {name: method.default_threshold for name, method in sorted(METHODS.items())}
DRIFT_ALPHA = DriftConfig.model_fields["alpha"].default
# The default alert rules' thresholds (rules/quality.yml, rules/golden.yml, rules/health.yml).
ERROR_RATIO_MAX = 0.05         # HighErrorRatio, HighEmptyOutputRatio
REFUSAL_RATIO_MAX = 0.10       # HighRefusalRatio
LATENCY_P95_MAX_S = 5.0        # HighLatencyP95
EVAL_STALE_S = 48 * 3600       # GoldenEvalStale
CONSUMER_LAG_MAX = 10_000      # ConsumerLagHigh

RATIO_SIGNALS = "error_ratio|refusal_ratio|empty_output_ratio"
SCORE_SIGNALS = "mean_logprob|feedback_mean"


# -- building blocks ------------------------------------------------------------------
def target(expr: str, legend: str, *, instant: bool = False, table: bool = False) -> dict:
    """One Prometheus query of a panel (its refId is set by the panel: A, B, ...)."""
    return {"datasource": DATASOURCE, "editorMode": "code", "expr": expr,
            "format": "table" if table else "time_series", "instant": instant,
            "legendFormat": legend, "range": not instant}


def steps(base: str = "green", *levels: tuple[float, str]) -> dict:
    """Absolute thresholds: `base` colour below the first level, then each (value, colour)."""
    return {"mode": "absolute",
            "steps": [{"color": base, "value": None}]
            + [{"color": color, "value": value} for value, color in levels]}


def value_map(*entries: tuple[str, str, str]) -> list[dict]:
    """Value mappings from (value, text, colour)."""
    return [{"type": "value", "options": {
        value: {"color": color, "index": i, "text": text}
        for i, (value, text, color) in enumerate(entries)}}]


def override(regex: str, **properties) -> dict:
    """Field override for the series whose display name matches `regex`."""
    return {"matcher": {"id": "byRegexp", "options": regex},
            "properties": [{"id": key.replace("__", "."), "value": value}
                           for key, value in properties.items()]}


def _panel(kind: str, title: str, targets: list[dict], description: str, width: int,
           height: int, defaults: dict, options: dict, overrides: list[dict]) -> dict:
    targets = [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]
    return {"type": kind, "title": title, "description": description, "datasource": DATASOURCE,
            "gridPos": {"h": height, "w": width},
            "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
            "options": options, "targets": targets}


def timeseries(title: str, targets: list[dict], unit: str, *, thresholds: dict | None = None,
               description: str = "", width: int = 12, height: int = 8, minimum=None,
               maximum=None, log: bool = False, overrides: list[dict] = ()) -> dict:
    """A line chart; `thresholds` are drawn as dashed lines."""
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
              "spanNulls": False,
              "scaleDistribution": {"type": "log", "log": 10} if log else {"type": "linear"},
              "thresholdsStyle": {"mode": "dashed" if thresholds else "off"}}
    if minimum is not None:
        custom["axisSoftMin"] = minimum
    if maximum is not None:
        custom["axisSoftMax"] = maximum
    defaults = {"unit": unit, "color": {"mode": "palette-classic"}, "custom": custom,
                "thresholds": thresholds or steps()}
    options = {"legend": {"showLegend": True, "displayMode": "table", "placement": "bottom",
                          "calcs": ["lastNotNull", "max"]},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return _panel("timeseries", title, targets, description, width, height, defaults, options,
                  overrides)


def stat(title: str, targets: list[dict], unit: str, *, thresholds: dict | None = None,
         description: str = "", width: int = 6, height: int = 4, show_name: bool = False,
         mappings: list[dict] = ()) -> dict:
    """Last value per series; `show_name` shows the legend only (for `*_info` metrics)."""
    defaults = {"unit": unit, "color": {"mode": "thresholds"}, "mappings": list(mappings),
                "thresholds": thresholds or steps()}
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "colorMode": "value", "graphMode": "none", "justifyMode": "auto",
               "orientation": "auto", "textMode": "name" if show_name else "value_and_name",
               "wideLayout": True, "showPercentChange": False}
    return _panel("stat", title, targets, description, width, height, defaults, options, [])


def state_timeline(title: str, targets: list[dict], mappings: list[dict], *,
                   thresholds: dict | None = None, description: str = "", width: int = 12,
                   height: int = 8) -> dict:
    """One row per series, coloured by its (mapped) value over time."""
    defaults = {"unit": "none", "color": {"mode": "thresholds"}, "mappings": mappings,
                "thresholds": thresholds or steps(), "custom": {"fillOpacity": 70,
                                                                "lineWidth": 0}}
    options = {"mergeValues": True, "showValue": "auto", "alignValue": "left",
               "rowHeight": 0.9, "legend": {"showLegend": True, "displayMode": "list",
                                            "placement": "bottom"},
               "tooltip": {"mode": "single", "sort": "none"}}
    return _panel("state-timeline", title, targets, description, width, height, defaults,
                  options, [])


def table(title: str, targets: list[dict], unit: str, *, description: str = "",
          width: int = 12, height: int = 8, hide: tuple[str, ...] = ("Time",)) -> dict:
    """Instant query as a table, one row per series (its labels as columns)."""
    targets = [{**t, "format": "table", "instant": True, "range": False} for t in targets]
    defaults = {"unit": unit, "color": {"mode": "thresholds"}, "thresholds": steps(),
                "custom": {"align": "auto"}}
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    panel = _panel("table", title, targets, description, width, height, defaults, options, [])
    panel["transformations"] = [{"id": "organize", "options": {
        "excludeByName": {name: True for name in hide}}}]
    return panel


def row(title: str, collapsed: list[dict] | None = None) -> dict:
    """A row header; `collapsed` panels are nested in the row (shown when opened)."""
    return {"type": "row", "title": title, "collapsed": collapsed is not None,
            "gridPos": {"h": 1, "w": 24}, "panels": list(collapsed or [])}


def layout(panels: list[dict]) -> list[dict]:
    """Grid positions left to right, top to bottom, and ids 1, 2, ... in order."""
    next_id = 1
    x = y = line_height = 0

    def place(panel: dict) -> None:
        nonlocal next_id, x, y, line_height
        pos = panel["gridPos"]
        if panel["type"] == "row" or x + pos["w"] > 24:
            x, y, line_height = 0, y + line_height, 0
        panel["id"] = next_id
        next_id += 1
        panel["gridPos"] = {"h": pos["h"], "w": pos["w"], "x": x, "y": y}
        x += pos["w"]
        line_height = max(line_height, pos["h"])
        if panel["type"] == "row":
            x, y, line_height = 0, y + pos["h"], 0
            for nested in panel["panels"]:
                place(nested)
            if panel["panels"]:  # nested panels take no room while the row is collapsed
                x, y, line_height = 0, panel["gridPos"]["y"] + 1, 0

    for panel in panels:
        place(panel)
    return panels


def datasource_variable() -> dict:
    return {"name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "current": {"text": "Monitor Prometheus",
                                               "value": PROVISIONED_UID},
            "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def label_variable(name: str, metric: str, label: str, *, text: str,
                   multi: bool = False) -> dict:
    """A query variable `label_values(metric, label)`; `multi` adds All (matches `.*`)."""
    query = f"label_values({metric}, {label})"
    variable = {"name": name, "label": text, "type": "query", "datasource": DATASOURCE,
                "definition": query,
                "query": {"qryType": 1, "query": query,
                          "refId": "PrometheusVariableQueryEditor-VariableQuery"},
                "current": {}, "hide": 0, "includeAll": multi, "multi": multi,
                "options": [], "refresh": 2, "regex": "", "skipUrlSync": False, "sort": 1}
    if multi:
        variable["allValue"] = ".*"
    return variable


def annotation(name: str, expr: str, title: str, tags: str, color: str) -> dict:
    """Annotations from the datasource: one per step where `expr` has a series."""
    return {"name": name, "datasource": DATASOURCE, "enable": True, "hide": False,
            "iconColor": color, "expr": expr, "step": "1m", "titleFormat": title,
            "tagKeys": tags, "textFormat": "", "useValueForTime": False}


def actions_annotation(selector: str, by: str) -> dict:
    """Actions (rollback, retrain, ...): an increase of `monitor_actions_total`, or a
    series that appears (its first action with that outcome starts at 1, which
    `increase` alone would miss)."""
    actions = f"monitor_actions_total{{{selector}}}"
    expr = (f"sum by ({by}) (increase({actions}[1m]) > 0 "
            f"or ({actions} unless {actions} offset 1m))")
    title = ("{{domain}}: " if "domain" in by else "") + "{{action}} ({{outcome}})"
    return annotation("Actions", expr, title, by.replace(" ", ""), "orange")


def dashboard(uid: str, title: str, description: str, panels: list[dict], *,
              variables: list[dict] = (), annotations: list[dict] = ()) -> dict:
    return {"uid": uid, "title": title, "description": description, "tags": [TAG],
            "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
            "fiscalYearStartMonth": 0, "liveNow": False, "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"}, "timepicker": {}, "timezone": "",
            "weekStart": "",
            "links": [{"title": "Monitor dashboards", "type": "dashboards", "tags": [TAG],
                       "asDropdown": True, "includeVars": True, "keepTime": True}],
            "annotations": {"list": list(annotations)},
            "templating": {"list": [datasource_variable(), *variables]},
            "panels": layout(panels)}


# -- panels used on more than one dashboard ---------------------------------------------
def records_rate(selector: str = "", by: str = "domain", width: int = 12) -> dict:
    return timeseries("Records accepted per second", [target(
        f"sum by ({by}) (rate(monitor_records_total{{{selector}}}[$__rate_interval]))",
        "{{domain}}")], "recps", width=width, minimum=0,
        description="Accepted records per second (the counter comes from the state store, "
                    "so a restart neither loses nor repeats any).")


def golden_scores(selector: str, legend_prefix: str, width: int = 12) -> dict:
    """Golden scores per version; the version a domain serves is drawn again, thick,
    with "(active)" in its name. nll left axis, exact_match (a share) right axis."""
    scores = f"monitor_golden_score{{{selector}}}"
    return timeseries("Golden scores per version (active marked)", [
        target(scores, legend_prefix + "{{version}} · {{metric}}"),
        target(f"{scores} * on (domain, version) group_left () "
               f"max by (domain, version) (monitor_adapter_active_info{{{selector}}})",
               legend_prefix + "{{version}} · {{metric}} (active)")],
        "none", width=width, minimum=0,
        description="Latest golden-set score of each evaluated version: nll (mean token "
                    "NLL, lower is better, left axis) and exact_match (share, higher is "
                    "better, right axis). The active version's series repeat as "
                    "\"(active)\", drawn thick.",
        overrides=[override(".*exact_match.*", unit="percentunit",
                            custom__axisPlacement="right"),
                   override(r".*\(active\)$", custom__lineWidth=4,
                            custom__showPoints="always")])


# -- the dashboards ------------------------------------------------------------------
def overview() -> dict:
    panels = [
        row("Drift"),
        state_timeline("Drift detected per domain and feature", [target(
            "max by (domain, feature) (monitor_drift_detected)", "{{domain}} · {{feature}}")],
            value_map(("0", "no drift", "green"), ("1", "drift", "red")), width=16,
            description="1 when a feature drifted: enough samples, effect above its "
                        "threshold and Benjamini-Hochberg adjusted p-value below alpha."),
        stat("Drifted features per domain", [target(
            "sum by (domain) (monitor_drift_detected)", "{{domain}}")], "short",
            thresholds=steps("green", (1, "red")), width=8, height=8),
        row("Quality"),
        timeseries("Error, refusal and empty-output ratios", [target(
            f'monitor_quality{{signal=~"{RATIO_SIGNALS}"}}', "{{domain}} · {{signal}}")],
            "percentunit", minimum=0, thresholds=steps("green", (ERROR_RATIO_MAX, "red")),
            description="Over each domain's current window. Line: the error and "
                        "empty-output alert threshold (rules/quality.yml)."),
        records_rate(),
        row("Alerts and versions"),
        state_timeline("Firing alerts", [target(
            'max by (alertname, domain) (monitor_alerts{alertstate="firing"})',
            "{{alertname}} {{domain}}")],
            value_map(("1", "firing", "red")), thresholds=steps("red"),
            description="Alerts of the daemon's own rule evaluator while firing "
                        "(rules/*.yml)."),
        state_timeline("Active version per domain", [target(
            "max by (domain, version) (monitor_adapter_active_info)",
            "{{domain}}: {{version}}")],
            value_map(("1", "active", "blue")), thresholds=steps("blue"),
            description="The adapter version each domain serves, from the registry."),
        stat("Regressed comparisons of the active version", [target(
            "sum by (domain) (monitor_golden_regression * on (domain, version) "
            "group_left () max by (domain, version) (monitor_adapter_active_info))",
            "{{domain}}")], "short",
            thresholds=steps("green", (1, "red")), width=24,
            description="Golden-set comparisons (metric × baseline) in which the version "
                        "a domain serves regressed."),
    ]
    return dashboard("monitor-overview", "Overview",
                     "All domains: drift, quality, alerts and the versions served.",
                     panels, annotations=[actions_annotation("", "domain, action, outcome")])


def domain() -> dict:
    sel = 'domain="$domain"'
    mmd = [name for name, value in DRIFT_THRESHOLDS.items() if value != DRIFT_THRESHOLDS["psi"]]
    per_method = ", ".join(f"{name} {value:g}" for name, value in DRIFT_THRESHOLDS.items())
    panels = [
        row("Traffic"),
        stat("Active version", [target(f"monitor_adapter_active_info{{{sel}}}",
                                       "{{version}} ({{kind}})")],
             "none", show_name=True, thresholds=steps("blue"), height=8),
        stat("Window samples", [target(f"monitor_window_samples{{{sel}}}", "samples")],
             "short", height=8, description="Records in the domain's current window."),
        records_rate(sel),
        row("Drift"),
        timeseries("Drift score per feature and method", [target(
            f"monitor_drift_score{{{sel}}}", "{{feature}} · {{method}}")], "none",
            minimum=0, thresholds=steps("green", (DRIFT_THRESHOLDS["psi"], "red")),
            overrides=[override(f".* · ({'|'.join(mmd)})$", thresholds=steps(
                "green", *[(DRIFT_THRESHOLDS[name], "red") for name in mmd]))],
            description="Score of the current window against the reference. Lines: the "
                        f"methods' default thresholds ({per_method}); the configuration "
                        "may set others (drift.thresholds)."),
        state_timeline("Drift detected per feature", [target(
            f"monitor_drift_detected{{{sel}}}", "{{feature}}")],
            value_map(("0", "no drift", "green"), ("1", "drift", "red"))),
        timeseries("Drift test p-value", [target(
            f"monitor_drift_pvalue{{{sel}}}", "{{feature}} · {{method}}")], "none",
            log=True, thresholds=steps("red", (DRIFT_ALPHA, "green")),
            description="Unadjusted p-value of the test methods. Line: the default alpha "
                        f"({DRIFT_ALPHA:g}), applied after Benjamini-Hochberg adjustment."),
        row("Quality and latency"),
        timeseries("Quality ratios", [target(
            f'monitor_quality{{{sel}, signal=~"{RATIO_SIGNALS}"}}', "{{signal}}")],
            "percentunit", minimum=0, thresholds=steps("green", (ERROR_RATIO_MAX, "red")),
            overrides=[override("refusal_ratio", thresholds=steps(
                "green", (REFUSAL_RATIO_MAX, "red")))],
            description="Over the current window. Lines: the default alert thresholds "
                        "(rules/quality.yml)."),
        timeseries("Mean log-probability and feedback", [target(
            f'monitor_quality{{{sel}, signal=~"{SCORE_SIGNALS}"}}', "{{signal}}")], "none",
            description="Over the current window's records that carry them."),
        timeseries("Latency quantiles", [target(
            f"monitor_latency_seconds{{{sel}}}", "p{{quantile}}")], "s", minimum=0,
            thresholds=steps("green", (LATENCY_P95_MAX_S, "red")),
            description="Over the current window (1% relative accuracy). Line: the p95 alert "
                        "threshold (HighLatencyP95)."),
        row("Golden set"),
        golden_scores(sel, ""),
    ]
    return dashboard("monitor-domain", "Domain",
                     "One domain: drift per feature and method, quality, latency, golden "
                     "scores; actions as annotations.", panels,
                     variables=[label_variable("domain", "monitor_records_total", "domain",
                                               text="Domain")],
                     annotations=[actions_annotation(sel, "action, outcome")])


def evaluation() -> dict:
    sel = 'domain=~"$domain"'
    versions = "{{domain}} {{version}}"
    buckets = f"sum by (domain, le) (monitor_eval_duration_seconds_bucket{{{sel}}})"
    panels = [
        golden_scores(sel, "{{domain}} ", width=24),
        timeseries("Golden delta against each baseline", [target(
            f"monitor_golden_delta{{{sel}}}", versions + " vs {{baseline}} · {{metric}}")],
            "none", thresholds=steps("red", (0, "green")),
            description="Candidate minus baseline, higher is better (for nll: baseline NLL "
                        "minus candidate NLL). Below 0: worse than the baseline."),
        state_timeline("Regressions per version and baseline", [target(
            f"monitor_golden_regression{{{sel}}}", versions + " vs {{baseline}} · {{metric}}")],
            value_map(("0", "ok", "green"), ("1", "regressed", "red")),
            description="1 when the paired interval lies entirely on the bad side of the "
                        "margin."),
        stat("Regressed comparisons per domain", [target(
            f"sum by (domain) (monitor_golden_regression{{{sel}}})", "{{domain}}")], "short",
            thresholds=steps("green", (1, "red")), width=8, height=6),
        stat("Evaluations finished", [target(
            f"sum by (domain) (monitor_eval_duration_seconds_count{{{sel}}})", "{{domain}}")],
            "short", width=8, height=6, description="Finished runs in the state store."),
        stat("Time since the last successful evaluation", [target(
            f"time() - max by (domain) (monitor_eval_last_success_timestamp_seconds{{{sel}}})",
            "{{domain}}")], "s", thresholds=steps("green", (EVAL_STALE_S, "red")), width=8,
            height=6, description="Red after 48 h (GoldenEvalStale)."),
        timeseries("Evaluation duration", [
            target(f"histogram_quantile(0.5, {buckets})", "{{domain}} p50"),
            target(f"histogram_quantile(0.9, {buckets})", "{{domain}} p90"),
            target(f"sum by (domain) (monitor_eval_duration_seconds_sum{{{sel}}}) / "
                   f"sum by (domain) (monitor_eval_duration_seconds_count{{{sel}}})",
                   "{{domain}} mean")], "s", width=24, minimum=0,
            description="Over all finished runs in the state store (the histogram is "
                        "rebuilt from them, so it is not rated)."),
    ]
    return dashboard("monitor-evaluation", "Evaluation",
                     "Golden-set evaluations: scores, deltas and regressions per domain and "
                     "version, duration and freshness.", panels,
                     variables=[label_variable("domain", "monitor_records_total", "domain",
                                               text="Domain", multi=True)])


def daemon_health() -> dict:
    panels = [
        row("Ingest"),
        records_rate(width=8),
        timeseries("Records rejected per second by reason", [target(
            "sum by (reason) (rate(monitor_records_rejected_total[$__rate_interval]))",
            "{{reason}}")], "recps", width=8, minimum=0,
            description="Each rejected record is in the dead-letter topic."),
        timeseries("Consumer lag", [target(
            "sum by (topic, partition) (monitor_consumer_lag)", "{{topic}}/{{partition}}")],
            "short", width=8, minimum=0,
            thresholds=steps("green", (CONSUMER_LAG_MAX, "red")),
            description="Messages behind each partition's end offset. Line: the "
                        "ConsumerLagHigh threshold (summed per topic)."),
        row("Rules and alerts"),
        state_timeline("Rule reloads", [target(
            "monitor_rules_last_reload_successful", "last reload")],
            value_map(("0", "failed", "red"), ("1", "ok", "green")), width=8,
            description="A failed reload keeps the old rules running."),
        timeseries("Rule evaluations per second", [
            target("sum (rate(monitor_rule_evaluations_total[$__rate_interval]))",
                   "evaluations"),
            target("sum (rate(monitor_rule_evaluation_failures_total[$__rate_interval]))",
                   "failures")], "ops", width=8, minimum=0),
        timeseries("Alert delivery failures", [
            target("sum by (target) "
                   "(rate(monitor_alert_notifications_failed_total[$__rate_interval]))",
                   "{{target}} failed"),
            target("sum by (target) "
                   "(rate(monitor_alert_notifications_dropped_total[$__rate_interval]))",
                   "{{target}} dropped")], "ops", width=8, minimum=0,
            description="Failed POST attempts (retried) and alerts dropped (queue full or "
                        "refused), per delivery target."),
        row("Queues"),
        timeseries("Alert queue", [target(
            "sum by (target) (monitor_alert_queue_length)", "{{target}}")], "short",
            width=8, minimum=0, description="Alerts waiting to be sent, per target."),
        timeseries("Evaluation queue", [target(
            "sum by (state) (monitor_eval_queue_length)", "{{state}}")], "short", width=8,
            minimum=0, description="Evaluation jobs queued or running."),
        stat("Build", [target("monitor_build_info", "{{version}}")], "none", show_name=True,
             thresholds=steps("blue"), width=8, height=8),
        row("Details", collapsed=[
            timeseries("Alert notifications sent per second", [target(
                "sum by (target) "
                "(rate(monitor_alert_notifications_sent_total[$__rate_interval]))",
                "{{target}}")], "ops", width=8, minimum=0),
            timeseries("Rule group duration", [target(
                "max by (rule_group) (monitor_rule_group_last_duration_seconds)",
                "{{rule_group}}")], "s", width=8, minimum=0),
            timeseries("Rule evaluator series", [target("monitor_rule_series", "series")],
                       "short", width=8, minimum=0),
        ]),
    ]
    return dashboard("monitor-health", "Daemon health",
                     "The monitor itself: ingest, rejected records, consumer lag, rules, "
                     "alert delivery and the evaluation queue.", panels)


DASHBOARDS = {
    "overview.json": overview,
    "domain.json": domain,
    "evaluation.json": evaluation,
    "daemon-health.json": daemon_health,
}


def render() -> dict[str, str]:
    """{file name: JSON text} of every dashboard."""
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
            for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming the files that differ")
    parser.add_argument("--out", type=Path, default=OUT, help="folder (default: %(default)s)")
    args = parser.parse_args(argv)
    rendered = render()
    if args.check:
        stale = [name for name, text in rendered.items()
                 if not (args.out / name).is_file()
                 or (args.out / name).read_text(encoding="utf-8") != text]
        extra = sorted(p.name for p in args.out.glob("*.json") if p.name not in rendered)
        for name in stale:
            print(f"{args.out / name}: differs from grafana/generate.py's output",
                  file=sys.stderr)
        for name in extra:
            print(f"{args.out / name}: not generated by grafana/generate.py", file=sys.stderr)
        if stale or extra:
            print("run: .venv/bin/python grafana/generate.py", file=sys.stderr)
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (args.out / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(rendered)} dashboards to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
