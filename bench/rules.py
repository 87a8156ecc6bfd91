"""Rule evaluator benchmark: run with `.venv/bin/python bench/rules.py` (`--quick`: < 60 s).

The issue: "Rule evaluation time per evaluation for 200 rules over 20k series,
and memory of the series store at the default retention" (3600 s; the daemon
appends a scrape of its own metrics and evaluates every 60 s: 61 samples per
series).

Data: 20,000 series shaped like the daemon's own metrics (100 domains):
monitor_drift_score{domain,feature,method} (100 x 10 x 6), monitor_drift_detected
{domain,feature}, monitor_quality{domain,signal}, monitor_latency_seconds{domain,
quantile}, monitor_records_total{domain} and other counters, monitor_golden_*,
monitor_adapter_active_info, ..., padded with monitor_drift_pvalue{domain,feature,
method,window} up to the count. Random walks (0/1 flags as Markov chains,
counters that only increase); most domains healthy, about one in ten with a
problem of each kind (drift, quality, latency, traffic, golden set), so that a
few hundred alerts are pending or firing. One hour at 60 s steps.

Rules: ONE rule file (YAML, in a temp dir) read by both sides: the default rule
pack (rules/*.yml, with the groups' `interval: 1m` dropped so both sides use
their default) plus generated groups of 20 up to 200 rules: instant selectors
with matchers and comparisons, max/count/sum/avg by, sum without, rate/increase/
delta over counters, *_over_time, offset, `and on (domain)` joins, recording
rules read by the alerting rules after them in the same group, absent(); about
40% alerting rules (most with `for:`) with templated annotations ($labels,
humanize, humanizeDuration, humanizePercentage, printf). `promtool check rules`
checks the file.

1. Peer: the real Prometheus 2.42 (/usr/bin/prometheus) on the same file and the
   same data, loaded two ways (`--peer-load`):
   - backfill: OpenMetrics text -> `promtool tsdb create-blocks-from openmetrics`
     (persistent blocks, read through mmap; the head starts empty, its min
     valid time is the end of the last block, so rule output written "now" is
     accepted);
   - remote-write: the hour pushed step by step through Prometheus' remote-write
     receiver (--web.enable-remote-write-receiver), so it sits in the head in
     memory, as in a Prometheus that scraped the daemon for the last hour (the
     fair peer, for memory too).
   Prometheus starts without rules; once the data (ending a few seconds
   earlier) is in, the rule file is added and loaded with POST /-/reload.
   Prometheus evaluates every `--prom-interval`; per round time = the sum over
   groups of `prometheus_rule_group_last_duration_seconds`, read from its
   /metrics after each evaluation (Prometheus runs groups concurrently; the sum
   is the work of one round, like ours, which runs them one after the other).
   Then every rule's expression is queried through /api/v1/query at one instant
   and compared (series, labels and, for expressions over raw data only,
   values) with ours at the same instant over the same data.
2. Ours: `SeriesStore.scrape` of the hour (as the daemon appends), then rounds:
   one scrape (timed: "scrape/append"), then `RuleManager.evaluate_due(t)` with
   every group due (timed: "evaluation round"). The timed rounds come after 60
   warm-up rounds (`--warmup-rounds`): the store then holds an hour of rule
   output too and alerts are past their `for:`, the steady state of a daemon
   that has run for a while (new series, which invalidate the store's cached
   selections, come every round just after the rules start). Median and p90; the
   first timed round is left out (on both sides). Then diagnostics: one round
   with each rule timed (alerting vs recording, slowest rules; Prometheus'
   own per-rule `evaluationTime` from /api/v1/rules), the same round again at
   the same instant (no series come or go, every selection is cached: what
   new series cost through the invalidated selections), and a cProfile of
   one round (top 10 by own time).
3. Memory of the series store holding the hour: tracemalloc (Python heap the
   store holds, label tuples included) and RSS growth (psutil); bytes per
   sample against the raw 16 bytes (int64 timestamp + float64 value) and
   against Prometheus' head: its live Go heap growth from the remote-write push
   (GC forced through /debug/pprof/heap?gc=1) and its RSS growth. After the
   warm-up, the store (raw hour + rule output) is sized with a getsizeof walk
   (cross-checked against tracemalloc on the raw hour).

Both sides run one after the other, never at once (Prometheus first, then
ours); on this 2-vCPU VM the load average is printed with the results.

Nothing is written into the repository: data, rule file and TSDB go to a temp
dir (removed at the end); `--json PATH` writes the results. Prometheus is
always stopped (its own process, by pid). Without Prometheus, ours is still
measured and the reason is printed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import re
import shlex
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.rules.files import RuleLoadError, load_files  # noqa: E402
from monitor.rules.manager import RuleManager  # noqa: E402
from monitor.series import SeriesStore  # noqa: E402

STEP_MS = 60_000
RETENTION_MS = 3_600_000
HOUR_STEPS = RETENTION_MS // STEP_MS + 1  # 61 samples in [t - 1h, t]

FEATURES = ["prompt_tokens", "output_tokens", "prompt_chars", "latency_seconds", "mean_logprob",
            "feedback_score", "finish_reason", "status", "language", "embedding"]
METHODS = ["psi", "ks", "wasserstein", "jsd", "chi2", "mmd"]
SIGNALS = ["error_ratio", "refusal_ratio", "empty_output_ratio", "truncation_ratio",
           "feedback_mean"]
QUANTILES = ["0.5", "0.9", "0.95", "0.99"]
GOLDEN_METRICS = ["exact_match", "rouge_l", "bleu", "judge_score", "toxicity"]
ACTIONS = ["alert", "rollback", "retrain", "reevaluate"]
REASONS = ["malformed_json", "missing_field", "too_large", "bad_timestamp", "unknown_domain"]
TOPICS = ["llm-logs", "llm-logs-eval"]
PVALUE_WINDOWS = ["15m", "1h", "6h", "24h"]

LD = "{{ $labels.domain }}"
VH = "{{ $value | humanize }}"


# -- data -------------------------------------------------------------------------
class Data:
    """Series (label tuples as the store keys them) and their values at each step.

    Values are a (series x steps) float matrix; `column(step, t_last_ms)` is one
    scrape. Timestamps-as-values (monitor_eval_last_success_timestamp_seconds)
    are ages added to the dataset's end time, so a dataset can be placed at any
    time and `time() - x` still means the same."""

    def __init__(self, n_series: int, n_domains: int, steps: int, seed: int = 7):
        rng = np.random.default_rng(seed)
        domains = [f"d{i:03d}" for i in range(n_domains)]
        # name, labels, kind, parameter, troubled (the domain has a problem of that kind)
        spec: list[tuple[str, dict, str, float, bool]] = []

        def add(metric_, kind_, param_=0.0, trouble_=False, **labels):
            spec.append((metric_, labels, kind_, param_, trouble_))

        # Most domains are healthy; a few have one problem each kind (about 1 in 10).
        for di, d in enumerate(domains):
            # a drifting domain: three of its features drifted
            drifted = ({FEATURES[(di + k) % len(FEATURES)] for k in (0, 3, 7)} if di % 10 == 3
                       else set())
            for f in FEATURES:
                for m in METHODS:
                    add("monitor_drift_score", "score", 0.0, f in drifted, domain=d, feature=f,
                        method=m)
            for f in FEATURES:
                add("monitor_drift_detected", "flag", 0.6 if f in drifted else 0.01, domain=d,
                    feature=f)
            for s in SIGNALS:
                add("monitor_quality", "feedback" if s == "feedback_mean" else "ratio", 0.0,
                    di % 13 == 5, domain=d, signal=s)
            for q in QUANTILES:
                add("monitor_latency_seconds", "latency", float(q), di % 11 == 4, domain=d,
                    quantile=q)
            add("monitor_records_total", "counter", 0.0, di % 12 == 7, domain=d)
            add("monitor_window_samples", "samples", 0.0, domain=d)
            for a in ACTIONS:
                add("monitor_actions_total", "rare_counter", 0.02, domain=d, action=a)
            add("monitor_eval_last_success_timestamp_seconds", "timestamp", 0.0, di % 19 == 0,
                domain=d)
            add("monitor_eval_duration_seconds", "duration", 0.0, domain=d)
            for v, active in (("v1", di % 9 == 0), ("v2", di % 9 != 0)):
                add("monitor_adapter_active_info", "const", 1.0 if active else 0.0, domain=d,
                    version=v, kind="lora", base_model="llama-3.1-8b")
                baseline = "v0" if v == "v1" else "v1"
                for g in GOLDEN_METRICS:
                    add("monitor_golden_score", "golden", 0.0, domain=d, version=v, metric=g)
                    add("monitor_golden_delta", "delta", 0.0, di % 17 == 2, domain=d, version=v,
                        metric=g, baseline=baseline)
                    add("monitor_golden_regression", "flag", 0.3 if di % 17 == 2 else 0.005,
                        domain=d, version=v, metric=g, baseline=baseline)
        for r in REASONS:
            add("monitor_records_rejected_total", "rare_counter", 0.3, reason=r)
        for topic in TOPICS:
            for p in range(12):
                add("monitor_consumer_lag", "lag", 0.0, topic=topic, partition=str(p))
        add("monitor_rules_last_reload_successful", "const", 1.0)
        add("monitor_build_info", "const", 1.0, version="0.1.0")
        pad = n_series - len(spec)
        if pad > len(domains) * len(FEATURES) * len(METHODS) * len(PVALUE_WINDOWS):
            raise SystemExit(f"--series {n_series}: too many for {n_domains} domains")
        k = 0
        for w in PVALUE_WINDOWS:
            for d in domains:
                for f in FEATURES:
                    for m in METHODS:
                        if k < pad:
                            add("monitor_drift_pvalue", "pvalue", 0.0, domain=d, feature=f,
                                method=m, window=w)
                            k += 1
        spec = spec[:n_series]
        self.domains = domains
        self.names = [x[0] for x in spec]
        self.labels = [tuple(sorted({**x[1], "__name__": x[0]}.items())) for x in spec]
        self.text = [x[0] + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(x[1].items())) + "}"
                     for x in spec]
        kinds = np.array([x[2] for x in spec])
        params = np.array([x[3] for x in spec])
        trouble = np.array([x[4] for x in spec])
        self.values = self._walks(rng, kinds, params, trouble, steps)
        self.ts_rows = np.flatnonzero(kinds == "timestamp")
        self.steps = steps

    @staticmethod
    def _walks(rng, kinds, params, trouble, steps):
        out = np.zeros((len(kinds), steps))
        late = np.arange(steps) >= 30  # the last half hour of the history and after

        def walk(mask, start, sigma, lo=None, hi=None):
            n = int(mask.sum())
            v = start + np.cumsum(rng.normal(0, sigma, (n, steps)), axis=1)
            out[mask] = np.clip(v, lo, hi) if lo is not None or hi is not None else v

        def start(mask, lo, hi):
            return rng.uniform(lo, hi, (int(mask.sum()), 1))

        m = kinds == "score"
        walk(m, start(m, 0.0, 0.12) + 0.3 * trouble[m][:, None], 0.005, 0.0, None)
        m = kinds == "pvalue"
        walk(m, start(m, 0.0, 1.0), 0.02, 0.0, 1.0)
        m = kinds == "ratio"
        walk(m, start(m, 0.0, 0.03) + 0.08 * trouble[m][:, None], 0.001, 0.0, 1.0)
        m = kinds == "feedback"
        walk(m, start(m, 3.8, 4.5) - np.outer(trouble[m], late) * 0.4, 0.005)
        m = kinds == "delta"
        walk(m, start(m, -0.01, 0.03) - 0.06 * trouble[m][:, None], 0.001)
        m = kinds == "golden"
        walk(m, start(m, 0.5, 0.9), 0.001, 0.0, 1.0)
        m = kinds == "duration"
        walk(m, start(m, 30, 600), 5.0, 1.0, None)
        m = kinds == "samples"
        walk(m, start(m, 50, 2000), 20.0, 0.0, None)
        out[m] = np.round(out[m])
        m = kinds == "lag"
        walk(m, start(m, 0, 12000), 800.0)
        out[m] = np.round(np.abs(out[m]))
        m = kinds == "latency"  # a troubled domain's latency is 1.6x over the last half hour
        n = int(m.sum())
        base = np.select([params[m] <= 0.5, params[m] <= 0.9, params[m] <= 0.95],
                         [0.3, 1.0, 1.8], 3.5)[:, None] * rng.uniform(0.7, 1.3, (n, 1))
        out[m] = (base * np.exp(np.cumsum(rng.normal(0, 0.005, (n, steps)), axis=1))
                  * (1 + 0.6 * np.outer(trouble[m], late)))
        m = kinds == "flag"  # two-state Markov chain, on a fraction `param` of the time
        n = int(m.sum())
        p = params[m]
        on_rate, off_rate = 0.05 * p, 0.05 * (1 - p)
        state = rng.random(n) < p
        for k in range(steps):
            u = rng.random(n)
            state = np.where(state, u >= off_rate, u < on_rate)
            out[np.flatnonzero(m), k] = state
        m = kinds == "counter"  # records/s per domain; a troubled domain drops to 40% late
        n = int(m.sum())
        rate = rng.uniform(0.5, 20.0, (n, 1)) * (1 - 0.6 * np.outer(trouble[m], late))
        inc = np.round(rate * 60 * rng.uniform(0.8, 1.2, (n, steps)))
        out[m] = np.round(start(m, 0, 1e5)) + np.cumsum(inc, axis=1)
        m = kinds == "rare_counter"  # events with `param` per minute
        n = int(m.sum())
        out[m] = (np.round(start(m, 0, 50))
                  + np.cumsum(rng.poisson(params[m][:, None] * np.ones((1, steps))), axis=1))
        m = kinds == "timestamp"  # an age (s) in the past, added to the dataset's end time
        age = start(m, 0, 26 * 3600) + 40 * 3600 * trouble[m][:, None]
        out[m] = -np.round(age) * np.ones((1, steps))
        m = kinds == "const"
        out[m] = params[m][:, None] * np.ones((1, steps))
        return out

    def column(self, step: int, t_last_ms: int) -> list[float]:
        col = self.values[:, step].copy()
        col[self.ts_rows] += t_last_ms // 1000
        return col.tolist()

    def samples(self, step: int, t_last_ms: int) -> list:
        return list(zip(self.labels, self.column(step, t_last_ms)))

    def time_of(self, step: int, t_last_ms: int) -> int:
        return t_last_ms - (HOUR_STEPS - 1 - step) * STEP_MS


def build_store(data: Data, t_last_ms: int, timings: list | None = None) -> SeriesStore:
    """The hour of history, appended scrape by scrape as the daemon does. Each scrape
    has label tuples of its own (as `metric_samples` builds them; the strings are
    shared), so the store's memory includes the tuples it keeps."""
    store = SeriesStore(RETENTION_MS)
    for step in range(HOUR_STEPS):
        labels = [tuple([(k, v) for k, v in series]) for series in data.labels]
        samples = list(zip(labels, data.column(step, t_last_ms)))
        del labels
        started = time.perf_counter()
        store.scrape(samples, data.time_of(step, t_last_ms))
        if timings is not None:
            timings.append(time.perf_counter() - started)
        del samples
    return store


# -- rules ------------------------------------------------------------------------------
def _rule_blocks():
    """Templates: each takes j (its instance number) and returns rules (dicts), a
    recording rule always before the alerting rule that reads it."""
    # Instance j of a template: j // len(blocks) is its cycle, mixed in so that the
    # same template varies (feature, method, signal, range, ...) from one cycle to the next.
    def v(j):
        return j + j // len(blocks)

    def f(j, k=0):
        return FEATURES[(v(j) + k) % len(FEATURES)]

    def m(j):
        return METHODS[v(j) % len(METHODS)]

    def s(j):
        return SIGNALS[v(j) % 4]  # the ratios

    def q(j):
        return QUANTILES[v(j) % 4]

    def pick(j, *options):  # one option per cycle
        return options[(j // len(blocks)) % len(options)]

    def short(j):
        return pick(j, "5m", "10m", "15m")

    def long(j):
        return pick(j, "10m", "15m", "30m")

    def back(j):
        return pick(j, "30m", "15m", "45m")

    def alert(name, expr, for_="5m", summary="", severity="warning"):
        return {"alert": name, "expr": expr, "for": for_,
                "labels": {"severity": severity, "team": "ml-platform"},
                "annotations": {"summary": summary,
                                "description": f"{summary}. Value: {VH} (rule {name}).",
                                "runbook": f"docs/rules.md#{name.lower()}"}}

    def rec(name, expr):
        return {"record": name, "expr": expr}

    blocks = [
        lambda j: [
            rec(f"domain:drift_score_{f(j)}:max_{j}",
                f'max by (domain) (monitor_drift_score{{feature="{f(j)}"}})'),
            alert(f"DriftScoreHigh{j}",
                  f"domain:drift_score_{f(j)}:max_{j} > {0.3 + 0.02 * (j % 5):.2f}",
                  summary=f"Drift score of {f(j)} in {LD} is {VH}")],
        lambda j: [
            rec(f"domain:drift_detected:count_{j}",
                f'count by (domain) (monitor_drift_detected{{feature=~"{f(j)}|{f(j, 1)}|'
                f'{f(j, 2)}"}} == 1)'),
            alert(f"ManyFeaturesDrifted{j}", f"domain:drift_detected:count_{j} >= 2", "10m",
                  f"{VH} features drifted in {LD}")],
        lambda j: [
            rec(f"domain_feature:drift_score:sum_{j}",
                f'sum without (method) (monitor_drift_score{{feature="{f(j)}"}})')],
        lambda j: [
            rec(f"domain:records:rate{short(j)}_{j}",
                f"sum by (domain) (rate(monitor_records_total[{short(j)}]))"),
            alert(f"TrafficDrop{j}",
                  f"domain:records:rate{short(j)}_{j} < 0.{6 + j % 3} * sum by (domain) "
                  f"(rate(monitor_records_total[{short(j)}] offset {back(j)}))", "10m",
                  f"Traffic of {LD} dropped to {VH}/s")],
        lambda j: [
            alert(f"ActionsRepeated{j}",
                  f'increase(monitor_actions_total{{action="{ACTIONS[v(j) % 4]}"}}[10m]) > 1',
                  "0s", f"{ACTIONS[v(j) % 4]} ran {VH} times in 10m for {LD}")],
        lambda j: [
            alert(f"LatencyHigh{j}",
                  f'avg_over_time(monitor_latency_seconds{{quantile="{q(j)}"}}[10m]) > '
                  f"{[0.5, 1.6, 3, 5.5][v(j) % 4]}", "5m",
                  f"p{q(j)} latency of {LD} is " "{{ $value | humanizeDuration }}")],
        lambda j: [
            alert(f"QualitySignal{j}",
                  f'max by (domain) (monitor_quality{{signal="{s(j)}"}}) > 0.0{5 + j % 5} '
                  "and on (domain) monitor_window_samples >= 100", "5m",
                  f"{s(j)} of {LD} is " "{{ $value | humanizePercentage }}")],
        lambda j: [
            alert(f"LatencyRegression{j}",
                  'monitor_latency_seconds{quantile="0.95"} - '
                  f'monitor_latency_seconds{{quantile="0.95"}} offset 30m > 0.{5 + j % 3}',
                  "5m", f"p95 latency of {LD} grew by {VH}s in 30m")],
        lambda j: [
            rec(f"feature:drift_detected:count_{j}",
                "count by (feature) (monitor_drift_detected"
                + pick(j, "", '{feature!="embedding"}', '{domain=~"d0.*"}') + " == 1)")],
        lambda j: [
            rec(f"records_rejected:ratio_rate_{j}",
                f"sum(rate(monitor_records_rejected_total[{short(j)}])) / "
                f"sum(rate(monitor_records_total[{short(j)}]))")],
        lambda j: [
            alert(f"RecordsAbsent{j}",
                  f'absent(monitor_records_total{{domain="d{j % 10:03d}"}})' if j % 3 else
                  f'absent(monitor_not_exported_{j}{{domain="d{j % 10:03d}"}})',
                  "5m", f"No records from {LD}")],
        lambda j: [
            rec(f"domain_method:drift_pvalue:min_{j}",
                f'min by (domain, method) (monitor_drift_pvalue{{feature="{f(j)}"}})')],
        lambda j: [
            alert(f"GoldenDelta{j}",
                  f'avg by (domain) (monitor_golden_delta{{metric="{GOLDEN_METRICS[v(j) % 5]}"}})'
                  f" < -0.0{2 + j % 3} and on (domain) "
                  "max by (domain) (monitor_adapter_active_info) == 1", "10m",
                  f"Golden {GOLDEN_METRICS[v(j) % 5]} of {LD} fell by {VH}", "critical")],
        lambda j: [
            rec(f"topic_partition:consumer_lag:max_over_time_{j}",
                f"max_over_time(monitor_consumer_lag[{long(j)}])"),
            rec(f"topic_partition:consumer_lag:delta_{j}",
                f"delta(monitor_consumer_lag[{long(j)}])")],
        lambda j: [
            rec(f"domain:feedback:drop_{j}",
                f'clamp_min(monitor_quality{{signal="feedback_mean"}} offset {back(j)} - '
                'monitor_quality{signal="feedback_mean"}, 0)')],
        lambda j: [
            alert(f"PsiMajorShift{j}",
                  f'monitor_drift_score{{method="psi",domain=~"d0{j % 10}.*",'
                  'feature!="embedding"} > 0.25', "10m",
                  f"PSI of {{{{ $labels.feature }}}} in {LD} is {VH}")],
        lambda j: [
            rec(f"domain_signal:quality:avg10m_{j}",
                f'avg_over_time(monitor_quality{{signal="{s(j)}"}}[10m])'),
            alert(f"QualitySustained{j}",
                  f"domain_signal:quality:avg10m_{j} > 0.0{8 + j % 2}", "5m",
                  f"{s(j)} of {LD} averaged {VH} over 10m")],
        lambda j: [
            alert(f"EvalStale{j}",
                  "(time() - monitor_eval_last_success_timestamp_seconds) / 3600 > "
                  f"{36 + 12 * (j % 3)}", "10m",
                  f"Golden evaluation of {LD} is {VH} hours old")],
        lambda j: [
            rec(f"domain:records:increase_{j}",
                f"sum by (domain) (increase(monitor_records_total[{long(j)}]))")],
        lambda j: [
            rec(f"domain:drift_score_high:count_{j}",
                "count without (feature, method) "
                f'(monitor_drift_score{{method="{m(j)}"}} > 0.2)')],
        lambda j: [
            rec(f"golden_score:avg_{j}",
                f"avg by ({pick(j, 'domain, metric', 'domain, version', 'metric')}) "
                "(monitor_golden_score)")],
        lambda j: [
            rec(f"domain:latency_tail:max_{j}",
                "max by (domain) (monitor_latency_seconds"
                f'{{quantile=~"{pick(j, "0.9|0.99", "0.95|0.99", "0.9|0.95")}"}})')],
        lambda j: [
            rec(f"consumer_lag:sum_{j}",
                f"sum by ({pick(j, 'topic', 'partition', 'topic, partition')}) "
                "(monitor_consumer_lag)")],
        lambda j: [
            rec(f"domain:latency:sum_{j}",
                "sum without (quantile) (monitor_latency_seconds"
                + pick(j, "", '{quantile!="0.5"}', '{quantile=~"0.9.*"}') + ")")],
        lambda j: [
            rec(f"domain:drift_significant:avg_{j}",
                f'avg by (domain) (monitor_drift_pvalue{{method="{m(j)}"}} < bool 0.05)')],
        lambda j: [
            rec(f"domain:actions:rate_max_{j}",
                f"max by (domain) (rate(monitor_actions_total[{long(j)}]))")],
        lambda j: [
            rec(f"domain:quality_ratio:max_{j}",
                f'max by (domain) (monitor_quality{{signal=~"{s(j)}|{s(j + 1)}"}})')],
        lambda j: [
            rec(f"golden_regressions:count_{j}",
                f"count by ({pick(j, 'domain, version', 'domain', 'metric')}) "
                "(monitor_golden_regression == 1)")],
        lambda j: [
            rec(f"domain:window_samples:avg_over_time_{j}",
                f"avg_over_time(monitor_window_samples[{long(j)}])")],
        lambda j: [
            rec(f"domain:latency_p95:ratio_{j}",
                'monitor_latency_seconds{quantile="0.95"} / '
                f'monitor_latency_seconds{{quantile="0.95"}} offset {back(j)}')],
    ]
    return blocks


def default_pack() -> tuple[list[dict], str]:
    """The default rule pack's groups (intervals dropped), or [] and why not."""
    files = sorted((ROOT / "rules").glob("*.yml"))
    try:
        load_files(files, 60_000, retention_ms=RETENTION_MS)
    except RuleLoadError as exc:
        return [], f"default pack not loaded: {exc.errors[:3]}"
    groups = []
    for path in files:
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            group.pop("interval", None)
            groups.append(group)
    return groups, f"{sum(len(g['rules']) for g in groups)} rules from {len(files)} files"


def write_rules(path: Path, n_rules: int, per_group: int = 20) -> dict:
    pack, pack_note = default_pack()
    remaining = n_rules - sum(len(g["rules"]) for g in pack)
    blocks = _rule_blocks()
    groups, current, j = [], [], 0
    while remaining > 0:
        rules = blocks[j % len(blocks)](j)[:remaining]
        if current and len(current) + len(rules) > per_group:
            groups.append({"name": f"bench-{len(groups):02d}", "rules": current})
            current = []
        current += rules
        remaining -= len(rules)
        j += 1
    if current:
        groups.append({"name": f"bench-{len(groups):02d}", "rules": current})
    doc = {"groups": pack + groups}
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=200, allow_unicode=True))
    all_rules = [r for g in doc["groups"] for r in g["rules"]]
    return {"rules": len(all_rules), "groups": len(doc["groups"]),
            "alerting": sum("alert" in r for r in all_rules),
            "alerting_with_for": sum("alert" in r and r.get("for", "0s") not in ("0s", "0")
                                     for r in all_rules),
            "default_pack": pack_note}


# -- Prometheus -------------------------------------------------------------------------
_GROUP_LINE = re.compile(r'^(prometheus_rule_group_last_duration_seconds|'
                         r'prometheus_rule_group_last_evaluation_timestamp_seconds|'
                         r'prometheus_rule_evaluation_failures_total|'
                         r'prometheus_rule_evaluations_total)\{rule_group="([^"]*)"\} (\S+)$')
_PLAIN_LINE = re.compile(r'^(process_resident_memory_bytes|go_memstats_heap_inuse_bytes|'
                         r'go_memstats_heap_alloc_bytes|'
                         r'prometheus_tsdb_head_series|prometheus_tsdb_head_samples_appended_total'
                         r'(?:\{type="float"\})?) (\S+)$')


def _http(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 30):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


def _metrics(base: str) -> tuple[dict, dict]:
    _, body = _http(base + "/metrics")
    groups: dict[str, dict[str, float]] = {}
    plain = {}
    for line in body.decode().splitlines():
        g = _GROUP_LINE.match(line)
        if g:
            groups.setdefault(g.group(2), {})[g.group(1)] = float(g.group(3))
            continue
        p = _PLAIN_LINE.match(line)
        if p:
            plain[p.group(1).split("{")[0]] = float(p.group(2))
    return groups, plain


def _memory(base: str) -> dict:
    """Prometheus' RSS and live Go heap (a GC forced through /debug/pprof/heap?gc=1)."""
    _http(base + "/debug/pprof/heap?gc=1")
    _, plain = _metrics(base)
    return {"rss_bytes": plain.get("process_resident_memory_bytes"),
            "heap_live_bytes": plain.get("go_memstats_heap_alloc_bytes"),
            "head_series": plain.get("prometheus_tsdb_head_series")}


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _snappy_literal(raw: bytes) -> bytes:
    """Snappy block format made of literals only (valid, uncompressed)."""
    out = bytearray(_varint(len(raw)))
    for i in range(0, len(raw), 65536):
        chunk = raw[i:i + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + struct.pack("<H", n)
        out += chunk
    return bytes(out)


def _label_bytes(labels) -> bytes:
    out = bytearray()
    for k, v in labels:  # sorted, __name__ first (it sorts before lower-case names)
        kb, vb = k.encode(), v.encode()
        pair = b"\x0a" + _varint(len(kb)) + kb + b"\x12" + _varint(len(vb)) + vb
        out += b"\x0a" + _varint(len(pair)) + pair
    return bytes(out)


def remote_write(base: str, data: Data, t_last_ms: int) -> None:
    """Push the hour step by step (prompb.WriteRequest, hand-encoded protobuf)."""
    prefixes = [_label_bytes(labels) for labels in data.labels]
    pack = struct.Struct("<d").pack
    url = base + "/api/v1/write"
    headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
               "X-Prometheus-Remote-Write-Version": "0.1.0"}
    for step in range(HOUR_STEPS):
        t = data.time_of(step, t_last_ms)
        ts = b"\x10" + _varint(t)
        body = bytearray()
        for prefix, value in zip(prefixes, data.column(step, t_last_ms)):
            sample = b"\x09" + pack(value) + ts
            series = prefix + b"\x12" + _varint(len(sample)) + sample
            body += b"\x0a" + _varint(len(series)) + series
        status, reply = _http(url, _snappy_literal(bytes(body)), headers)
        if status // 100 != 2:
            raise RuntimeError(f"remote write: HTTP {status}: {reply[:200]!r}")


def write_openmetrics(path: Path, data: Data, t_last_ms: int) -> None:
    with path.open("w") as out:
        for step in range(HOUR_STEPS):
            ts = f"{data.time_of(step, t_last_ms) / 1000:.3f}"
            out.write("".join(f"{text} {value!r} {ts}\n"
                              for text, value in zip(data.text, data.column(step, t_last_ms))))
        out.write("# EOF\n")


def run_prometheus(tmp: Path, rule_file: Path, data: Data, load: str, args) -> dict:
    """Load the data, run Prometheus on the rule file, time its rounds, query every
    rule's expression. Returns a dict with `error` when it could not."""
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prometheus or not promtool:
        return {"error": "prometheus/promtool not on PATH (Debian: apt install prometheus)"}
    out: dict = {"load": load}
    version = subprocess.run([prometheus, "--version"], capture_output=True, text=True,
                             check=False)
    out["version"] = (version.stdout or version.stderr).splitlines()[0]
    work = tmp / f"prom-{load}"
    storage = work / "tsdb"
    storage.mkdir(parents=True)
    # Prometheus starts without rules; the data goes in (blocks before the start,
    # or pushed into the head after it), ending a few seconds before the rules are
    # loaded (POST /-/reload), so that instant selectors (5m lookback) and
    # rate(...[5m]) see it during the whole run.
    config = work / "prometheus.yml"
    settings = {"global": {"evaluation_interval": f"{round(args.prom_interval * 1000)}ms",
                           "scrape_interval": "60s"}}
    config.write_text(yaml.safe_dump(settings))
    if load == "backfill":
        lead_ms = 3_000 + int(0.6 * len(data.labels))  # about the time writing + promtool take
        t_last_ms = (int(time.time() * 1000) + lead_ms) // 1000 * 1000
        out["t_last_ms"] = t_last_ms
        om = work / "data.om.txt"
        started = time.perf_counter()
        write_openmetrics(om, data, t_last_ms)
        out["openmetrics_mib"] = round(om.stat().st_size / 2**20, 1)
        proc = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(om),
                               str(storage)], capture_output=True, text=True, check=False)
        om.unlink()
        out["load_seconds"] = round(time.perf_counter() - started, 1)
        if proc.returncode != 0:
            return {**out, "error": f"promtool create-blocks-from failed: "
                                    f"{(proc.stderr or proc.stdout)[-800:]}"}
        out["block_bytes"] = sum(p.stat().st_size for p in storage.rglob("*") if p.is_file())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    command = [prometheus, f"--config.file={config}", f"--storage.tsdb.path={storage}",
               f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
               "--log.level=warn"]
    if load == "remote-write":
        command.append("--web.enable-remote-write-receiver")
    log_path = work / "prometheus.log"
    log = log_path.open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    out["command"] = shlex.join(command)

    def log_tail() -> str:
        log.flush()
        return log_path.read_text()[-1500:]

    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                return {**out, "error": f"prometheus exited ({proc.returncode}): {log_tail()}"}
            try:
                if _http(base + "/-/ready", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.time() > deadline:
                return {**out, "error": f"prometheus not ready after 60 s: {log_tail()}"}
            time.sleep(0.2)
        out["memory_started"] = _memory(base)
        if load == "remote-write":
            t_last_ms = int(time.time() * 1000) // 1000 * 1000
            out["t_last_ms"] = t_last_ms
            started = time.perf_counter()
            remote_write(base, data, t_last_ms)
            out["load_seconds"] = round(time.perf_counter() - started, 1)
            out["memory_loaded"] = _memory(base)
        if time.time() * 1000 < t_last_ms + 1000:
            time.sleep(t_last_ms / 1000 + 1 - time.time())
        config.write_text(yaml.safe_dump({**settings, "rule_files": [str(rule_file)]}))
        status, body = _http(base + "/-/reload", b"")
        if status != 200:
            return {**out, "error": f"reload: HTTP {status} {body[:300]!r}"}
        # Each group's evaluations: its timestamp -> duration (first seen wins: the
        # duration is set just before the timestamp, at the end of an evaluation).
        evals: dict[str, dict[float, float]] = {}
        failures: dict[str, float] = {}
        evaluations: dict[str, float] = {}
        plain: dict = {}
        want = args.rounds + 1
        started = time.time()
        deadline = started + args.prom_timeout
        while time.time() < deadline:
            groups, plain = _metrics(base)
            for name, g in groups.items():
                ts = g.get("prometheus_rule_group_last_evaluation_timestamp_seconds", 0)
                if ts > 0 and "prometheus_rule_group_last_duration_seconds" in g:
                    evals.setdefault(name, {}).setdefault(
                        ts, g["prometheus_rule_group_last_duration_seconds"])
                failures[name] = g.get("prometheus_rule_evaluation_failures_total", 0)
                evaluations[name] = g.get("prometheus_rule_evaluations_total", 0)
            if groups and all(len(evals.get(name, ())) >= want for name in groups):
                break
            time.sleep(min(0.5, args.prom_interval / 4))
        if proc.poll() is not None:
            return {**out, "error": f"prometheus exited ({proc.returncode}): {log_tail()}"}
        if not evals:
            return {**out, "error": f"no rule group evaluated in {args.prom_timeout} s: "
                                    f"{log_tail()}"}
        per_group = {name: [d for _, d in sorted(e.items())] for name, e in evals.items()}
        n = min(len(v) for v in per_group.values())
        rounds = [sum(v[k] for v in per_group.values()) for k in range(n)]
        out.update(groups=len(per_group), rounds_seen=n, round_seconds=rounds,
                   evaluation_failures=sum(failures.values()),
                   rule_evaluations=sum(evaluations.values()),
                   rss_bytes=plain.get("process_resident_memory_bytes"),
                   go_heap_inuse_bytes=plain.get("go_memstats_heap_inuse_bytes"),
                   head_series=plain.get("prometheus_tsdb_head_series"),
                   head_samples_appended=plain.get("prometheus_tsdb_head_samples_appended_total"))
        out["memory_end"] = _memory(base)
        _, body = _http(base + "/api/v1/rules")
        rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
        out["unhealthy_rules"] = [f'{r["name"]}: {r.get("lastError")}' for r in rules
                                  if r.get("health") != "ok"]
        # Each rule's last evaluation (query, alert state and templates, append).
        out["rule_seconds"] = {"alerting": sum(r["evaluationTime"] for r in rules
                                               if r["type"] == "alerting"),
                               "recording": sum(r["evaluationTime"] for r in rules
                                                if r["type"] == "recording")}
        out["slowest_rules"] = [(r["name"], r["evaluationTime"]) for r in
                                sorted(rules, key=lambda r: -r["evaluationTime"])[:5]]
        # Every rule's expression at one instant, for the comparison with ours.
        t_q_ms = int(time.time() * 1000)
        out["t_query_ms"] = t_q_ms
        results, query_errors = {}, {}
        for expr in {r["expr"] for g in yaml.safe_load(rule_file.read_text())["groups"]
                     for r in g["rules"]}:
            try:
                _, body = _http(base + "/api/v1/query", urllib.parse.urlencode(
                    {"query": expr, "time": f"{t_q_ms / 1000:.3f}"}).encode())
                doc = json.loads(body)["data"]
                if doc["resultType"] == "scalar":
                    results[expr] = [((), float(doc["result"][1]))]
                else:
                    results[expr] = [(tuple(sorted(s["metric"].items())), float(s["value"][1]))
                                     for s in doc["result"]]
            except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
                query_errors[expr] = str(exc)
        out["query_results"] = results
        out["query_errors"] = query_errors
        return out
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        return {**out, "error": f"{type(exc).__name__}: {exc}; log: {log_tail()}"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# -- ours -------------------------------------------------------------------------------
def compare(data: Data, rule_file: Path, peer: dict) -> dict:
    """Every rule's expression, ours vs Prometheus, at Prometheus' query instant over
    the same data, after one evaluation of all groups at that instant (so that the
    recorded series the expressions read exist on both sides)."""
    t_last, t_q = peer["t_last_ms"], peer["t_query_ms"]
    store = build_store(data, t_last)
    manager = RuleManager(store)
    manager.replace(load_files([rule_file], 60_000, retention_ms=RETENTION_MS))
    manager.evaluate_due(t_q)
    recorded = {r.name for gs in manager.groups for r in gs.group.rules if r.kind == "record"}
    counts, label_diffs, value_diffs, errors = [], [], [], []
    checked = non_empty = raw_only = 0
    for gs in manager.groups:
        for state in gs.rules:
            expr = state.rule.expr
            theirs = peer["query_results"].get(expr)
            if theirs is None:
                continue
            checked += 1
            try:
                ours = state.rule.query.vector(store, t_q)
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                errors.append(f"{state.rule.name}: {exc}")
                continue
            non_empty += bool(theirs)
            if len(ours) != len(theirs):
                counts.append(f"{state.rule.name}: ours {len(ours)}, Prometheus {len(theirs)}")
            mine, peer_map = dict(ours), dict(theirs)
            if set(mine) != set(peer_map):
                label_diffs.append(f"{state.rule.name}: {len(set(mine) - set(peer_map))} only "
                                   "ours, "
                                   f"{len(set(peer_map) - set(mine))} only Prometheus")
                continue
            if any(re.search(rf"\b{re.escape(n)}\b", expr) for n in recorded):
                continue  # recorded at other instants on each side: values may differ
            raw_only += 1
            bad = [k for k, v in mine.items()
                   if not (v == peer_map[k] or (math.isnan(v) and math.isnan(peer_map[k]))
                           or math.isclose(v, peer_map[k], rel_tol=1e-9, abs_tol=1e-12))]
            if bad:
                value_diffs.append(f"{state.rule.name}: {len(bad)} of {len(mine)} values differ, "
                                   f"e.g. {bad[0]}: ours {mine[bad[0]]!r}, "
                                   f"Prometheus {peer_map[bad[0]]!r}")
    return {"expressions_compared": checked, "non_empty_in_prometheus": non_empty,
            "values_compared_raw_data_only": raw_only, "count_mismatches": counts,
            "label_mismatches": label_diffs, "value_mismatches": value_diffs,
            "our_errors": errors, "our_rule_failures_at_query_instant": manager.failures}


def _p90(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[max(0, math.ceil(0.9 * len(xs)) - 1)]


def _store_bytes(store: SeriesStore) -> int:
    """sys.getsizeof over what the store holds (series, lists, floats, timestamps, label
    tuples, its dicts), each object once; strings are left out (shared with the
    application, as tracemalloc leaves them out of the measurement above)."""
    seen: set[int] = set()
    total = 0

    def containers(obj):  # the store's indexes and caches: dicts and lists, not the series
        nonlocal total
        if isinstance(obj, (dict, list)) and id(obj) not in seen:
            seen.add(id(obj))
            total += sys.getsizeof(obj)
            for item in (obj.values() if isinstance(obj, dict) else obj):
                containers(item)

    containers(store.series)
    containers(getattr(store, "_by_name", {}))
    containers(getattr(store, "_selections", {}))
    size = sys.getsizeof
    for labels, series in store.series.items():
        for obj in (series, series.times, series.values, labels, series.labels, *labels,
                    *series.labels, *series.times, *series.values):
            if id(obj) not in seen:
                seen.add(id(obj))
                total += size(obj)
    return total


def bench_ours(data: Data, rule_file: Path, t_last_ms: int, rounds: int, warmup: int,
               profile: bool) -> dict:
    out: dict = {}
    process = psutil.Process()
    # Memory: the Python heap the store holds (labels included), then RSS growth.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = build_store(data, t_last_ms)
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    samples = store.samples()
    out["memory"] = {"series": len(store.series), "samples": samples,
                     "samples_per_series": round(samples / len(store.series), 1),
                     "heap_bytes": heap, "heap_mib": round(heap / 2**20, 1),
                     "getsizeof_bytes": _store_bytes(store),
                     "heap_bytes_per_sample": round(heap / samples, 1),
                     "raw_bytes_per_sample": 16,
                     "ratio_vs_raw": round(heap / samples / 16, 1)}
    del store
    gc.collect()
    rss0 = process.memory_info().rss
    first: list[float] = []
    store = build_store(data, t_last_ms, first)
    gc.collect()
    rss = process.memory_info().rss - rss0
    out["memory"].update(rss_growth_bytes=rss, rss_growth_mib=round(rss / 2**20, 1),
                         rss_bytes_per_sample=round(rss / samples, 1))
    out["history_scrapes"] = {"first_scrape_ms": round(first[0] * 1000, 1),
                              "median_ms": round(statistics.median(first[1:]) * 1000, 2)}

    groups = load_files([rule_file], 60_000, retention_ms=RETENTION_MS)
    manager = RuleManager(store)
    manager.replace(groups)
    out["rules"] = sum(len(g.rules) for g in groups)
    out["groups"] = len(groups)
    scrape_s, eval_s, warm_s = [], [], []
    gc.collect()
    gc.freeze()  # the hour of history is old objects, as in a daemon that has run for an hour
    # Warm-up: the rules run for `warmup` rounds first (untimed as rounds), so that the
    # store also holds their output and the timed rounds see the steady state of a
    # daemon that has run for a while (new series, which invalidate the store's cached
    # selections, are rarer then than just after the rules start).
    for k in range(1, warmup + rounds + 2):
        t = t_last_ms + k * STEP_MS
        batch = data.samples(HOUR_STEPS - 1 + k, t_last_ms)
        started = time.perf_counter()
        store.scrape(batch, t)
        scraped = time.perf_counter() - started
        started = time.perf_counter()
        manager.evaluate_due(t)
        evaluated = time.perf_counter() - started
        if any(gs.last_eval_ms != t for gs in manager.groups):
            raise RuntimeError("not every group was due")
        if k <= warmup:
            warm_s.append(evaluated)
            if k == warmup:
                gc.collect()
                out["memory"]["after_warmup"] = {
                    "series": len(store.series), "samples": store.samples(),
                    "getsizeof_bytes": _store_bytes(store)}
                gc.freeze()
            continue
        scrape_s.append(scraped)
        eval_s.append(evaluated)
        print(f"  ours round {k - warmup} (after {warmup} warm-up rounds): scrape "
              f"{scraped * 1000:.1f} ms, evaluation {evaluated * 1000:.1f} ms, "
              f"{len(manager.alerts())} alerts, {manager.failures} failures", file=sys.stderr)
    out["warmup_round_seconds"] = warm_s
    out["round_seconds"] = eval_s
    out["scrape_seconds"] = scrape_s
    out["evaluation_failures"] = manager.failures
    out["failing_rules"] = sorted({f"{s.rule.name}: {s.last_error}" for s in manager.rules
                                   if s.last_error})
    out["alerts_pending_or_firing"] = len(manager.alerts())
    out["series_after"] = len(store.series)
    out["samples_written_last_round"] = sum(s.last_samples for s in manager.rules)
    # One more round with each rule's evaluation timed (query, alert state and
    # templates; not the writes into the store), for where the time goes.
    k = warmup + rounds + 2
    t = t_last_ms + k * STEP_MS
    store.scrape(data.samples(HOUR_STEPS - 1 + k, t_last_ms), t)
    spent: dict = {}
    for state in manager.rules:
        def timed(*a, _evaluate=state.evaluate, _state=state):
            started = time.perf_counter()
            try:
                return _evaluate(*a)
            finally:
                spent[_state] = time.perf_counter() - started
        state.evaluate = timed
    started = time.perf_counter()
    manager.evaluate_due(t)
    whole = time.perf_counter() - started
    for state in manager.rules:
        del state.evaluate
    out["rule_seconds"] = {"alerting": sum(v for s, v in spent.items() if s.is_alert),
                           "recording": sum(v for s, v in spent.items() if not s.is_alert),
                           "writes_and_notifications": whole - sum(spent.values())}
    out["slowest_rules"] = [(s.rule.name, v) for s, v in
                            sorted(spent.items(), key=lambda p: -p[1])[:5]]
    # The same round again at the same instant, 1 + 3 times: no series come or go, so
    # the first re-evaluation fills the store's selection cache (new series invalidate
    # cached selections) and the next ones run with every selection cached (median).
    series_before = len(store.series)
    again = []
    for _ in range(4):
        started = time.perf_counter()
        for gs in manager.groups:
            manager.evaluate_group(gs, t)
        again.append(time.perf_counter() - started)
    out["same_instant_again"] = {"seconds": statistics.median(again[1:]),
                                 "new_series": len(store.series) - series_before}
    if profile:
        k = warmup + rounds + 3
        t = t_last_ms + k * STEP_MS
        series_before = len(store.series)
        store.scrape(data.samples(HOUR_STEPS - 1 + k, t_last_ms), t)
        pruned = series_before - len(store.series)
        before = set(store.series)
        profiler = cProfile.Profile()
        profiler.enable()
        manager.evaluate_due(t)
        profiler.disable()
        after = set(store.series)
        # New series (and series pruned by the scrape: no sample in the last hour)
        # invalidate the store's cached selections.
        out["profiled_round_series"] = {"new": len(after - before), "pruned_by_its_scrape": pruned}
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(10)
        out["profile_top10_tottime"] = text.getvalue()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(15)
        out["profile_top15_cumulative"] = text.getvalue()
    gc.unfreeze()
    return out


# -- report -------------------------------------------------------------------------------
def _ms(xs: list[float]) -> tuple[float, float]:
    warm = xs[1:] if len(xs) > 1 else xs
    return statistics.median(warm) * 1000, _p90(warm) * 1000


def report(results: dict) -> str:
    ours = results["ours"]
    o_med, o_p90 = _ms(ours["round_seconds"])
    s_med, s_p90 = _ms(ours["scrape_seconds"])
    mem = ours["memory"]
    peers = results.get("prometheus", {})
    loads = ("backfill", "remote-write")
    lines = [(f"\n## Rule evaluation: {ours['rules']} rules in {ours['groups']} groups over "
              f"{mem['series']:,} series x {mem['samples_per_series']:g} samples "
              "(first round left out; median / p90)\n"),
             ("| measure | ours | Prometheus (backfill) | Prometheus (remote-write) "
              "| ours / Prometheus |"),
             "|---|---|---|---|---|"]

    def ok(p):
        return p is not None and "round_seconds" in p

    def row(name, mine, fn, ratio_fn=None):
        cells = []
        for load in loads:
            p = peers.get(load)
            cells.append("not run" if p is None else "failed" if not ok(p) else (fn(p) or "-"))
        ratios = []
        if ratio_fn is not None:
            for load in loads:
                if ok(peers.get(load)):
                    r = ratio_fn(peers[load])
                    if r is not None:
                        ratios.append(f"{r:.2f}x ({load})")
        lines.append(f"| {name} | {mine} | {' | '.join(cells)} | {', '.join(ratios)} |")

    def med(p):
        return _ms(p["round_seconds"])[0]

    def grown(p, key):
        if "memory_loaded" not in p:
            return None
        return p["memory_loaded"][key] - p["memory_started"][key]

    row("**evaluation round, ms**", f"**{o_med:.1f}** / {o_p90:.1f}",
        lambda p: "**{:.1f}** / {:.1f}".format(*_ms(p["round_seconds"])),
        lambda p: o_med / med(p))
    row("per rule, ms", f"{o_med / ours['rules']:.3f}", lambda p: f"{med(p) / ours['rules']:.3f}")
    row("rounds timed (+1 first)", str(len(ours["round_seconds"]) - 1),
        lambda p: str(p["rounds_seen"] - 1))
    row("rule evaluation failures", str(ours["evaluation_failures"]),
        lambda p: f"{p['evaluation_failures']:.0f}")
    rs = ours["rule_seconds"]
    row("one round split, ms: alerting / recording rules (/ ours: writes+notifications)",
        f"{rs['alerting'] * 1000:.1f} / {rs['recording'] * 1000:.1f} / "
        f"{rs['writes_and_notifications'] * 1000:.1f}",
        lambda p: f"{p['rule_seconds']['alerting'] * 1000:.1f} / "
                  f"{p['rule_seconds']['recording'] * 1000:.1f}")
    row(f"scrape/append of {mem['series']:,} series, ms",
        f"{s_med:.1f} / {s_p90:.1f} (first, creating them: "
        f"{ours['history_scrapes']['first_scrape_ms']:.0f})",
        lambda p: f"loading the hour: {p.get('load_seconds', '?')} s")
    row("**store memory, live heap, MiB**",
        f"**{mem['heap_mib']}** (tracemalloc; {mem['heap_bytes_per_sample']} B/sample, "
        f"{mem['ratio_vs_raw']}x the raw 16 B)",
        lambda p: (f"**{grown(p, 'heap_live_bytes') / 2**20:.1f}** (Go live heap growth from "
                   f"the push; {grown(p, 'heap_live_bytes') / mem['samples']:.1f} B/sample)"
                   if grown(p, "heap_live_bytes") is not None else
                   "(in mmap'ed blocks, not the heap)"),
        lambda p: mem["heap_bytes"] / grown(p, "heap_live_bytes")
        if grown(p, "heap_live_bytes") else None)
    after = mem.get("after_warmup")
    if after:
        lines.append(f"| store after {results['config']['warmup_rounds']} rounds of rules "
                     f"(raw + rule output), MiB | {after['getsizeof_bytes'] / 2**20:.1f} "
                     f"(getsizeof; {after['series']:,} series, {after['samples']:,} samples, "
                     f"{after['getsizeof_bytes'] / after['samples']:.1f} B/sample) | | | |")
    row("store memory, RSS growth, MiB",
        f"{mem['rss_growth_mib']} ({mem['rss_bytes_per_sample']} B/sample)",
        lambda p: (f"{grown(p, 'rss_bytes') / 2**20:.1f}"
                   if grown(p, "rss_bytes") is not None else ""),
        lambda p: (mem["rss_growth_bytes"] / grown(p, "rss_bytes")
                   if grown(p, "rss_bytes") else None))
    row("Prometheus process RSS / live Go heap at the end, MiB", "",
        lambda p: f"{p['memory_end']['rss_bytes'] / 2**20:.0f} / "
                  f"{p['memory_end']['heap_live_bytes'] / 2**20:.0f}")
    row("Prometheus blocks on disk", "",
        lambda p: (f"{p['block_bytes'] / 2**20:.1f} MiB, "
                   f"{p['block_bytes'] / mem['samples']:.2f} B/sample"
                   if p.get("block_bytes") else ""))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="4,000 series (20 domains), 60 rules, 5 rounds, "
                             "evaluation_interval 2s")
    parser.add_argument("--series", type=int, default=20_000)
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10,
                        help="timed evaluation rounds per side (plus one first, cold round)")
    parser.add_argument("--warmup-rounds", type=int, default=HOUR_STEPS - 1,
                        help="rounds of ours before the timed ones (default 60: an hour of "
                             "rule output in the store, alerts past their `for:`)")
    parser.add_argument("--peer-load", default=None,
                        help="how Prometheus gets the data: backfill, remote-write, both "
                             "comma-separated (the default) or none")
    parser.add_argument("--prom-interval", type=float, default=5.0,
                        help="Prometheus' evaluation_interval, seconds")
    parser.add_argument("--prom-timeout", type=float, default=150.0,
                        help="longest wait for Prometheus' rounds, seconds")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the cProfile of one extra round of ours")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.series, args.domains, args.rules, args.rounds = 4000, 20, 60, 5
        args.prom_interval = 2.0
        args.prom_timeout = min(args.prom_timeout, 40.0)
    if args.peer_load is None:
        args.peer_load = "backfill,remote-write"
    command = shlex.join([sys.executable, *sys.argv])
    print(f"# {command}", file=sys.stderr)
    started = time.perf_counter()
    results: dict = {"command": command,
                     "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
                     "config": {k: (str(v) if isinstance(v, Path) else v)
                                for k, v in vars(args).items()}}
    loads = [x for x in args.peer_load.split(",") if x and x != "none"]
    for load in loads:
        if load not in ("backfill", "remote-write"):
            parser.error(f"--peer-load: unknown {load!r}")
    steps = HOUR_STEPS + args.warmup_rounds + args.rounds + 4
    data = Data(args.series, args.domains, steps)
    with tempfile.TemporaryDirectory(prefix="bench-rules-") as tmp_name:
        tmp = Path(tmp_name)
        rule_file = tmp / "bench-rules.yml"
        results["rule_file"] = write_rules(rule_file, args.rules)
        print(f"rules: {results['rule_file']}", file=sys.stderr)
        promtool = shutil.which("promtool")
        if promtool:
            check = subprocess.run([promtool, "check", "rules", str(rule_file)],
                                   capture_output=True, text=True, check=False)
            results["promtool_check_rules"] = ("ok" if check.returncode == 0
                                               else (check.stdout + check.stderr)[-1000:])
        results["prometheus"] = {}
        # Prometheus first, alone on the machine; then ours (never both at once).
        for load in loads:
            print(f"prometheus ({load}) ...", file=sys.stderr)
            peer = run_prometheus(tmp, rule_file, data, load, args)
            results["prometheus"][load] = peer
            if "error" in peer:
                print(f"  Prometheus ({load}) not measured: {peer['error']}", file=sys.stderr)
            else:
                med, p90 = _ms(peer["round_seconds"])
                print(f"  Prometheus ({load}): {peer['rounds_seen']} rounds, median {med:.1f} ms, "
                      f"p90 {p90:.1f} ms, failures {peer['evaluation_failures']:.0f}",
                      file=sys.stderr)
            shutil.rmtree(tmp / f"prom-{load}", ignore_errors=True)
        print("ours ...", file=sys.stderr)
        t_last_ms = int(time.time() * 1000) // 1000 * 1000
        results["ours"] = bench_ours(data, rule_file, t_last_ms, args.rounds, args.warmup_rounds,
                                     args.profile)
        for load, peer in results["prometheus"].items():
            if "query_results" in peer:
                peer["comparison"] = compare(data, rule_file, peer)
                del peer["query_results"]
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    print(f"# {command}")
    machine, rf = results["machine"], results["rule_file"]
    print(f"# {os.cpu_count()} CPUs, Python {platform.python_version()}, load average (1, 5, "
          f"15 min) {machine['load_average_at_start']} at the start, "
          f"{machine['load_average_at_end']} at the end")
    print(f"# {rf['rules']} rules ({rf['alerting']} alerting, {rf['alerting_with_for']} with "
          f"for:), {rf['groups']} groups; default pack: {rf['default_pack']}; promtool check "
          f"rules: {results.get('promtool_check_rules', 'promtool not found')}")
    for load, peer in results["prometheus"].items():
        if "error" in peer:
            print(f"# Prometheus ({load}) NOT measured: {peer['error']}")
        else:
            print(f"# Prometheus ({load}): {peer['version']}, evaluation_interval "
                  f"{args.prom_interval}s, {peer['groups']} groups; head series at the end "
                  f"{int(peer.get('head_series') or 0):,}")
    print(report(results))
    ours = results["ours"]
    print(f"\nours: {ours['alerts_pending_or_firing']} alerts pending/firing after the rounds, "
          f"{ours['series_after']:,} series in the store (recorded + ALERTS), "
          f"{ours['samples_written_last_round']:,} samples written by the last round")
    print("slowest rules, ours (last timed round):",
          ", ".join(f"{n} {v * 1000:.1f} ms" for n, v in ours["slowest_rules"]))
    for load, peer in results["prometheus"].items():
        if peer.get("slowest_rules"):
            print(f"slowest rules, Prometheus ({load}):",
                  ", ".join(f"{n} {v * 1000:.1f} ms" for n, v in peer["slowest_rules"]))
    again = ours["same_instant_again"]
    print(f"ours, the same round evaluated again at the same instant (no series come or go, "
          f"every selection cached; {again['new_series']} new series), median of 3: "
          f"{again['seconds'] * 1000:.1f} ms")
    print(f"rounds, ms: ours {[round(x * 1000, 1) for x in ours['round_seconds']]}")
    for load, peer in results["prometheus"].items():
        if "round_seconds" in peer:
            print(f"rounds, ms: Prometheus ({load}) "
                  f"{[round(x * 1000, 1) for x in peer['round_seconds']]}")
    if len(ours["warmup_round_seconds"]) > 1:
        first = ours["warmup_round_seconds"][1:11]
        print(f"ours, rounds 2-{len(first) + 1} after the rules start (warm-up, new series "
              f"every round): median {statistics.median(first) * 1000:.1f} ms; timed rounds "
              f"come after {len(ours['warmup_round_seconds'])} warm-up rounds")
    mem = ours["memory"]
    print(f"store of the raw hour: tracemalloc {mem['heap_bytes'] / 2**20:.1f} MiB, getsizeof "
          f"walk {mem['getsizeof_bytes'] / 2**20:.1f} MiB (cross-check); the rules write "
          f"{ours['samples_written_last_round']:,} samples per round (Prometheus' head holds "
          "them too)")
    if ours["failing_rules"]:
        print("ours, failing rules:", *ours["failing_rules"][:10], sep="\n  ")
    for load, peer in results["prometheus"].items():
        if peer.get("unhealthy_rules"):
            print(f"Prometheus ({load}), unhealthy rules:", *peer["unhealthy_rules"][:10],
                  sep="\n  ")
        cmp_ = peer.get("comparison")
        if cmp_:
            print(f"\ncheck vs Prometheus ({load}) at one instant: {cmp_['expressions_compared']} "
                  f"expressions ({cmp_['non_empty_in_prometheus']} non-empty in Prometheus); "
                  f"{len(cmp_['count_mismatches'])} series-count mismatches, "
                  f"{len(cmp_['label_mismatches'])} label-set mismatches, "
                  f"{len(cmp_['value_mismatches'])} value mismatches out of "
                  f"{cmp_['values_compared_raw_data_only']} raw-data expressions compared to 1e-9")
            for key in ("count_mismatches", "label_mismatches", "value_mismatches", "our_errors"):
                for line in cmp_[key][:8]:
                    print(f"  {key}: {line}")
            if peer.get("query_errors"):
                print(f"  Prometheus query errors: {list(peer['query_errors'].items())[:3]}")
    if "profile_top10_tottime" in ours:
        c = ours["profiled_round_series"]
        print(f"\ncProfile of one extra round of ours (top 10 by own time; the round created "
              f"{c['new']} new series, its scrape pruned {c['pruned_by_its_scrape']}):")
        skip = ("Ordered", "List reduced")
        print("\n".join(line for line in ours["profile_top10_tottime"].splitlines()
                        if line.strip() and not line.lstrip().startswith(skip)))
    print(f"\ntotal {results['total_seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
