"""`monitor rules test`: promtool's rule unit-test format, run by our evaluator.

The file format is promtool's (https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/):
`rule_files`, `evaluation_interval`, `group_eval_order`, `tests` with
`interval`, `input_series` (`a+bxn`, `axn`, `_`, `_xn`, `stale`),
`external_labels`, `external_url`, `alert_rule_test` (`exp_alerts` with
`exp_labels` / `exp_annotations`) and `promql_expr_test` (`exp_samples`).

The procedure is promtool 2.42's (cmd/promtool/unittest.go): every group is
evaluated at 0, evaluation_interval, 2 x evaluation_interval, ... up to the
largest eval_time; an alert test at eval_time T is checked against the
*firing* alerts right after the evaluation at the largest step <= T; PromQL
tests run after all evaluations. Input samples lie at i x interval (interval
defaults to 0 in promtool 2.42: all samples at time 0, the first one kept).
The verdicts agree with `promtool test rules` on tests/conformance/.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

import promql_parser as pp
import yaml

from monitor.rules.alerts import FIRING
from monitor.rules.files import RuleLoadError, format_duration, load_files, parse_duration
from monitor.rules.manager import RuleManager
from monitor.rules.promql import EvaluationError, PromQLError, compile_expr, format_e
from monitor.series import STALE_NAN, Labels, SeriesStore

_FILE_FIELDS = {"rule_files", "evaluation_interval", "group_eval_order", "tests"}
_GROUP_FIELDS = {"interval", "input_series", "alert_rule_test", "promql_expr_test",
                 "external_labels", "external_url", "name"}


class TestFileError(ValueError):
    pass


# -- input series notation ------------------------------------------------------
_NUMBER = re.compile(r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|0[xX][0-9a-fA-F]+|Inf|NaN)$",
                     re.IGNORECASE)


def expand_values(text: str) -> list[float | None]:
    """promtool's series values: None is an omitted sample.

    >>> expand_values("1+2x3 _x2 5x1 stale -1-1x1")
    [1.0, 3.0, 5.0, 7.0, None, None, 5.0, 5.0, 'stale', -1.0, -2.0]
    """
    out: list = []
    for item in str(text).split():
        base, times, count = item, None, 0
        if "x" in item:
            base, _, times = item.rpartition("x")
            if not times.isdigit():
                raise TestFileError(f"bad series value {item!r}: expected a count after 'x'")
            count = int(times)
        if base == "_":
            out += [None] * (count if times is not None else 1)
            continue
        start, step = _value_and_step(base, item)
        if times is None:
            if step is not None:
                raise TestFileError(f"bad series value {item!r}: a step ({base}) needs a count "
                                    "(xN)")
            out.append(start)
            continue
        if start == "stale":
            raise TestFileError(f"bad series value {item!r}: \"stale\" cannot be repeated")
        value = start
        for _ in range(count + 1):
            out.append(value)
            if step is not None and value != "stale":
                value += step
    return out


def _value_and_step(base: str, item: str):
    if base == "stale":
        return "stale", None
    # a+b / a-b: split at the last sign that is not an exponent's or the leading one.
    for i in range(len(base) - 1, 0, -1):
        if base[i] in "+-" and base[i - 1] not in "eE":
            return _number(base[:i], item), _number(base[i:], item)
    return _number(base, item), None


def _number(text: str, item: str) -> float:
    if not _NUMBER.match(text):
        raise TestFileError(f"bad series value {item!r}: expected a number or \"stale\"")
    body = text.lstrip("+-")
    if body[:2].lower() == "0x":
        return float(int(text, 16))
    return float(text)


def parse_series(text: str) -> Labels:
    """A series as promtool writes it: `name{a="b"}` or `{__name__="x", a="b"}`."""
    text = text.strip()
    if text in ("", "{}"):
        return ()
    try:
        node = pp.parse(text)
    except ValueError as exc:
        raise TestFileError(f"bad series {text!r}: {exc}") from None
    if not isinstance(node, pp.VectorSelector):
        raise TestFileError(f"bad series {text!r}: expected name{{label=\"value\", ...}}")
    labels = {}
    if node.name:
        labels["__name__"] = node.name
    for m in node.matchers.matchers:
        if m.op != pp.MatchOp.Equal:
            raise TestFileError(f"bad series {text!r}: only = is allowed between a label and "
                                "its value")
        labels[m.name] = m.value
    return tuple(sorted((k, v) for k, v in labels.items() if v != ""))


# -- running ---------------------------------------------------------------------
@dataclass
class FileResult:
    path: str
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


def run_files(paths: list[str]) -> list[FileResult]:
    return [run_file(p) for p in paths]


def _strict_mapping(doc, allowed: set[str], what: str) -> dict:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise TestFileError(f"{what} must be a mapping")
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise TestFileError(f"field {unknown[0]} not found in {what}")
    return doc


def _duration(value, what: str) -> int:
    if value is None:
        return 0
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise TestFileError(f"{what}: {exc}") from None


class _Loader(yaml.SafeLoader):
    """YAML without YAML 1.1's booleans (yes/no/on/off/true/false stay strings, as
    when promtool decodes them into string fields); `1e6` is a number, as in Go."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."))


def run_file(path: str) -> FileResult:
    try:
        doc = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader)
        doc = _strict_mapping(doc, _FILE_FIELDS, "the unit-test file")
        base = os.path.dirname(path)
        rule_files = []
        for pattern in doc.get("rule_files") or []:
            pattern = str(pattern)
            if pattern and not os.path.isabs(pattern):
                pattern = os.path.join(base, pattern)
            rule_files += sorted(glob.glob(pattern))
        interval = _duration(doc.get("evaluation_interval"), "evaluation_interval") or 60_000
        order = {}
        for i, name in enumerate(doc.get("group_eval_order") or []):
            if name in order:
                raise TestFileError(f"group name repeated in evaluation order: {name}")
            order[name] = i
        errors = []
        for tg in doc.get("tests") or []:
            errors += _run_group(_strict_mapping(tg, _GROUP_FIELDS, "a test group"), interval,
                                 order, rule_files)
        return FileResult(path, errors)
    except (OSError, yaml.YAMLError, TestFileError) as exc:
        return FileResult(path, [str(exc)])


def _run_group(tg: dict, eval_interval: int, order: dict, rule_files: list[str]) -> list[str]:
    load_interval = _duration(tg.get("interval"), "interval")
    store = SeriesStore(retention_ms=10 ** 15, max_series=10 ** 9)
    for item in tg.get("input_series") or []:
        labels = parse_series(str(item.get("series", "")))
        for i, value in enumerate(expand_values(item.get("values", ""))):
            if value is None:
                continue
            t = i * load_interval
            series = store.series.get(labels)
            if series is not None and series.times and series.times[-1] >= t:
                continue  # promtool keeps the first sample at a timestamp
            store.append(labels, t, STALE_NAN if value == "stale" else value)
    try:
        groups = load_files(rule_files, default_interval_ms=load_interval or eval_interval)
    except RuleLoadError as exc:
        return exc.errors
    groups.sort(key=lambda g: order.get(g.name, 0))
    external_labels = {str(k): str(v) for k, v in (tg.get("external_labels") or {}).items()}
    manager = RuleManager(store, external_labels=external_labels,
                          external_url=str(tg.get("external_url") or ""))
    manager.replace(groups)

    alert_tests = tg.get("alert_rule_test") or []
    expr_tests = tg.get("promql_expr_test") or []
    by_time: dict[int, list[dict]] = {}
    for case in alert_tests:
        if not case.get("alertname"):
            name = f" (in TestGroup {tg['name']})" if tg.get("name") else ""
            return [f"an item under alert_rule_test misses required attribute alertname at "
                    f"eval_time {case.get('eval_time', '0s')}{name}"]
        by_time.setdefault(_duration(case.get("eval_time"), "eval_time"), []).append(case)
    times = sorted(by_time)
    max_t = max([*times, *(_duration(c.get("eval_time"), "eval_time") for c in expr_tests), 0])
    errors: list[str] = []
    prefix = f"    name: {tg['name']},\n" if tg.get("name") else ""
    current = 0
    t = 0
    while t <= max_t:
        eval_errors = []
        for gs in manager.groups:
            manager.evaluate_group(gs, t)
            for state in gs.rules:
                if state.last_error:
                    eval_errors.append(f"    rule: {state.rule.name}, time: "
                                       f"{format_duration(t)}, err: {state.last_error}")
        errors += eval_errors
        if eval_errors:
            return errors
        while current < len(times) and t <= times[current] < t + eval_interval:
            at = times[current]
            for case in by_time[at]:
                errors += _check_alerts(manager, case, at, prefix)
            current += 1
        t += eval_interval
    for case in expr_tests:
        errors += _check_expr(store, case, prefix)
    return errors


def _check_alerts(manager: RuleManager, case: dict, at: int, prefix: str) -> list[str]:
    name = case["alertname"]
    got = []
    for state in manager.rules:
        if state.is_alert and state.rule.name == name:
            got += [(alert.labels, tuple(sorted(alert.annotations.items())))
                    for alert in state.active.values() if alert.state == FIRING]
    expected = []
    for exp in case.get("exp_alerts") or []:
        labels = {str(k): str(v) for k, v in (exp.get("exp_labels") or {}).items()}
        labels["alertname"] = name
        annotations = {str(k): str(v) for k, v in (exp.get("exp_annotations") or {}).items()}
        expected.append((tuple(sorted(labels.items())), tuple(sorted(annotations.items()))))
    got.sort()
    expected.sort()
    if got == expected:
        return []
    return [f"{prefix}    alertname: {name}, time: {format_duration(at)}, \n"
            f"        exp:{_indent(_alerts_text(expected))}, \n"
            f"        got:{_indent(_alerts_text(got))}"]


def _indent(text: str, indent: str = " " * 12) -> str:
    """promtool's indentLines: every line but the first gets the indent."""
    return ("\n" + indent).join(text.split("\n"))


def _alerts_text(alerts) -> str:
    if not alerts:
        return "[]"
    parts = []
    for i, (labels, annotations) in enumerate(alerts):
        parts.append(f"{i}:\n  Labels:{_labels_text(labels)}\n  Annotations:{_labels_text(annotations)}")
    return "[\n" + ",\n".join(parts) + "\n]"


def _labels_text(labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


def _check_expr(store: SeriesStore, case: dict, prefix: str) -> list[str]:
    expr = str(case.get("expr", ""))
    at = _duration(case.get("eval_time"), "eval_time")
    where = f'    expr: "{expr}", time: {format_duration(at)}'
    try:
        got = compile_expr(expr).vector(store, at)
    except (PromQLError, EvaluationError) as exc:
        return [f"{where}, err: {exc}"]
    expected = []
    for sample in case.get("exp_samples") or []:
        try:
            labels = parse_series(str(sample.get("labels", "")))
        except TestFileError as exc:
            return [f'{where}, err: labels "{sample.get("labels", "")}": {exc}']
        expected.append((labels, float(sample.get("value", 0))))
    got = sorted(got, key=lambda s: s[0])
    expected.sort(key=lambda s: s[0])
    # Go's reflect.DeepEqual on float64: NaN never equals NaN.
    same = len(got) == len(expected) and all(
        g[0] == e[0] and g[1] == e[1] for g, e in zip(got, expected))
    if same:
        return []
    return [f"{where},\n        exp: {_samples_text(expected)}\n        got: {_samples_text(got)}"]


def _samples_text(samples) -> str:
    if not samples:
        return "nil"
    return ", ".join(f"{_labels_text(labels)} {format_e(v, upper=True)}" for labels, v in samples)
