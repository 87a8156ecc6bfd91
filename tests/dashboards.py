"""Reading the Grafana dashboards of grafana/dashboards/ and proving their queries
against a real Prometheus (import as `from tests.dashboards import ...`).

    dashboards = load_dashboards(REPO / "grafana" / "dashboards")
    for q in panel_queries(dashboards[0]):           # PanelQuery(dashboard, panel, ...)
        promql_parser.parse(substitute(q.expr, {"domain": "legal"}))
    failures = check_against_prometheus(prom.url, dashboards, {"domain": "legal"},
                                        start, end, step=5)
    assert not failures, "\\n".join(failures)

Substitution follows Grafana: `$var`, `${var}`, `${var:format}` and `[[var]]`
take the variable's value; `$__rate_interval`, `$__interval` and `$__range`
take the durations given. Standard library plus `promql_parser`.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import promql_parser

PANEL = "panel"
ANNOTATION = "annotation"


@dataclass(frozen=True)
class PanelQuery:
    """One PromQL query of a dashboard: a panel target (`kind` "panel", `panel` is its
    title, `ref_id` its refId) or an annotation (`kind` "annotation", `panel` is the
    annotation's name, `ref_id` "")."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str
    kind: str = PANEL

    @property
    def refId(self) -> str:  # Grafana's spelling
        return self.ref_id

    def where(self) -> str:
        what = f"panel {self.panel!r} {self.ref_id}" if self.kind == PANEL \
            else f"annotation {self.panel!r}"
        return f"{self.dashboard}: {what}"


@dataclass(frozen=True)
class VariableQuery:
    """A template variable of type `query`: `query` is its text, e.g.
    `label_values(monitor_records_total, domain)`."""

    dashboard: str
    name: str
    query: str
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None


@dataclass(frozen=True)
class QueryResult:
    """What one query did on Prometheus: `expr` after substitution, `series` the
    number of series returned (0: empty), `error` set when it did not parse or
    Prometheus refused it (then `series` is 0)."""

    query: PanelQuery
    variables: tuple[tuple[str, str], ...]
    expr: str
    series: int
    error: str | None = None

    def describe(self) -> str:
        given = ", ".join(f"{k}={v}" for k, v in self.variables)
        where = self.query.where() + (f" [{given}]" if given else "")
        if self.error:
            return f"{where}: {self.error}: {self.expr}"
        return f"{where}: empty result: {self.expr}"


# -- reading dashboards ---------------------------------------------------------------
def load_dashboards(folder: str | Path) -> list[dict]:
    """Every `*.json` dashboard of `folder`, sorted by file name."""
    return [json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(Path(folder).glob("*.json"))]


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, nested rows' panels included (rows themselves too)."""
    def walk(items):
        for panel in items:
            yield panel
            yield from walk(panel.get("panels", []))
    yield from walk(dashboard.get("panels", []))


def panel_queries(dashboard: dict) -> list[PanelQuery]:
    """The PromQL of every panel target (in panel order, nested rows included), then
    of every annotation with an `expr` (kind "annotation"). Targets without an
    `expr` and hidden targets are left out."""
    title = dashboard.get("title", "")
    out = []
    for panel in panels(dashboard):
        for t in panel.get("targets", []):
            if t.get("expr") and not t.get("hide"):
                out.append(PanelQuery(title, panel.get("title", ""), t.get("refId", ""),
                                      t["expr"], PANEL))
    for a in dashboard.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append(PanelQuery(title, a.get("name", ""), "", a["expr"], ANNOTATION))
    return out


def variable_queries(dashboard: dict) -> list[VariableQuery]:
    """The dashboard's template variables of type `query` (the datasource variable
    and constants are not queries)."""
    out = []
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        query = v.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        out.append(VariableQuery(dashboard.get("title", ""), v["name"],
                                 query or v.get("definition", ""), bool(v.get("multi")),
                                 bool(v.get("includeAll")), v.get("allValue")))
    return out


LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<metric>.+?)\s*,\s*)?"
                          r"(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$")


def parse_label_values(query: str) -> tuple[str | None, str]:
    """(metric or None, label) of `label_values([metric,] label)`; ValueError otherwise."""
    match = LABEL_VALUES.match(query)
    if not match:
        raise ValueError(f"not a label_values() query: {query!r}")
    return match["metric"], match["label"]


# -- substitution ---------------------------------------------------------------------
_BUILTIN = re.compile(r"\$__(rate_interval|interval|range)(?![A-Za-z0-9_])")
_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[A-Za-z0-9_]+)?\}")
_BRACKETS = re.compile(r"\[\[([A-Za-z_][A-Za-z0-9_]*)\]\]")
_PLAIN = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def substitute(expr: str, variables: dict[str, str], *, rate_interval: str = "1m",
               interval: str = "15s", range_: str = "1h") -> str:
    """`expr` with Grafana's variables replaced: `$__rate_interval`, `$__interval`,
    `$__range` by the durations given, then `${var}` (any `:format` ignored),
    `[[var]]` and `$var` by `variables[var]`. KeyError names a variable that has no
    value.

    >>> substitute('rate(x{d="$domain"}[$__rate_interval])', {"domain": "legal"})
    'rate(x{d="legal"}[1m])'
    >>> substitute('y{d=~"${domain}|[[domain]]"}[$__range]', {"domain": "a"}, range_="2h")
    'y{d=~"a|a"}[2h]'
    """
    builtins = {"rate_interval": rate_interval, "interval": interval, "range": range_}
    expr = _BUILTIN.sub(lambda m: builtins[m[1]], expr)

    def value(match: re.Match) -> str:
        name = match[1]
        if name not in variables:
            raise KeyError(f"no value for the dashboard variable ${name}")
        return str(variables[name])

    for pattern in (_BRACED, _BRACKETS, _PLAIN):
        expr = pattern.sub(value, expr)
    return expr


def parse(expr: str):
    """`promql_parser.parse(expr)`, raising ValueError with the parser's message."""
    try:
        return promql_parser.parse(expr)
    except Exception as exc:  # the parser raises ValueError, but be sure
        raise ValueError(str(exc)) from exc


def duration(seconds: float) -> str:
    """A PromQL duration for `seconds` (whole seconds, at least 1s): 90 -> '90s'."""
    return f"{max(1, round(seconds))}s"


# -- Prometheus -----------------------------------------------------------------------
def api_get(prom_url: str, path: str, params: list[tuple[str, str]], timeout: float = 30.0):
    """`data` of a Prometheus HTTP API answer; RuntimeError with Prometheus' reason."""
    url = prom_url.rstrip("/") + path + "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            doc = json.loads(reply.read())
    except urllib.error.HTTPError as exc:  # 400/422: Prometheus says why in the body
        try:
            doc = json.loads(exc.read())
        except ValueError:
            raise RuntimeError(f"HTTP {exc.code} from {path}") from exc
    if doc.get("status") != "success":
        raise RuntimeError(f"{doc.get('errorType', 'error')}: {doc.get('error', doc)}")
    return doc["data"]


def label_values(prom_url: str, label: str, metric: str | None = None, *,
                 start: float | None = None, end: float | None = None) -> list[str]:
    """Prometheus' values of `label` (`/api/v1/label/<label>/values`), only on series
    of `metric` when given (as Grafana resolves `label_values(metric, label)`)."""
    params = [("match[]", metric)] if metric else []
    if start is not None:
        params.append(("start", repr(float(start))))
    if end is not None:
        params.append(("end", repr(float(end))))
    return sorted(api_get(prom_url, f"/api/v1/label/{label}/values", params))


def query_range(prom_url: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    """`GET /api/v1/query_range`: the result matrix (a list of series, each with
    `metric` and `values`); RuntimeError carries Prometheus' error."""
    data = api_get(prom_url, "/api/v1/query_range",
                [("query", expr), ("start", repr(float(start))), ("end", repr(float(end))),
                 ("step", repr(float(step)))])
    return data["result"]


def resolve_variables(prom_url: str, dashboard: dict, variables: dict, start: float,
                      end: float) -> dict[str, list[str]]:
    """{name: values to try} for the dashboard's query variables: the values given in
    `variables` (a string or a list of strings) where given, else every value
    Prometheus has for the `label_values()` query in [start, end]; plus the other
    entries of `variables` as they are (for `$var` that are not query variables).
    ValueError when a query variable has no value at all."""
    resolved: dict[str, list[str]] = {
        name: [value] if isinstance(value, str) else list(value)
        for name, value in variables.items()}
    for v in variable_queries(dashboard):
        if v.name in resolved:
            continue
        metric, label = parse_label_values(v.query)
        values = label_values(prom_url, label, metric, start=start, end=end)
        if not values:
            raise ValueError(f"{v.dashboard}: variable ${v.name}: {v.query} has no values")
        resolved[v.name] = values
    return resolved


def _combinations(resolved: dict[str, list[str]], used: set[str]) -> list[dict[str, str]]:
    combos: list[dict[str, str]] = [{}]
    for name in sorted(resolved):
        values = resolved[name] if name in used else resolved[name][:1]
        combos = [{**c, name: value} for c in combos for value in values]
    return combos


def run_queries(prom_url: str, dashboards: list[dict], variables: dict, start: float,
                end: float, step: float, *, rate_interval: str = "1m",
                interval: str | None = None) -> list[QueryResult]:
    """Every query of every dashboard (panel targets and annotations) on Prometheus,
    once per combination of the values of the query variables it uses (see
    `resolve_variables`; `datasource` needs no value). `$__interval` defaults to
    `step`, `$__range` is `end - start`. Never raises for a query: a parse error,
    an unknown variable or Prometheus' error is the result's `error`."""
    interval = interval or duration(step)
    results = []
    for dash in dashboards:
        resolved = resolve_variables(prom_url, dash, variables, start, end)
        for q in panel_queries(dash):
            used = {m[1] for p in (_BRACED, _BRACKETS, _PLAIN)
                    for m in p.finditer(_BUILTIN.sub("", q.expr))}
            for combo in _combinations(resolved, used):
                shown = tuple((k, v) for k, v in combo.items() if k in used)
                try:
                    expr = substitute(q.expr, combo, rate_interval=rate_interval,
                                      interval=interval, range_=duration(end - start))
                except KeyError as exc:
                    results.append(QueryResult(q, shown, q.expr, 0, exc.args[0]))
                    continue
                try:
                    parse(expr)
                except ValueError as exc:
                    results.append(QueryResult(q, shown, expr, 0, f"does not parse: {exc}"))
                    continue
                try:
                    series = query_range(prom_url, expr, start, end, step)
                except (RuntimeError, OSError) as exc:
                    results.append(QueryResult(q, shown, expr, 0, f"prometheus: {exc}"))
                    continue
                results.append(QueryResult(q, shown, expr, len(series)))
    return results


def check_against_prometheus(prom_url: str, dashboards: list[dict], variables: dict,
                             start: float, end: float, step: float, *,
                             rate_interval: str = "1m", interval: str | None = None,
                             annotations: str = "any") -> list[str]:
    """One human-readable failure per query of `dashboards` that does not parse,
    that Prometheus refuses, or that returns no series over [start, end] (Unix
    seconds, `step` seconds apart). An empty list: every panel has data.

    `variables` gives the template variables' values: {"domain": "legal"} or
    {"domain": ["legal", "medical"]} (each value is tried, and each must give
    data); a `label_values(metric, label)` variable not given takes every value
    Prometheus has for it (`/api/v1/label/<label>/values?match[]=metric`).

    Panel queries must return data for every value tried. Annotation queries
    (which match only when something happened, e.g. an action) are judged by
    `annotations`: "any" (the default) needs data for at least one value tried,
    "all" for every value, "ignore" only needs them to parse and run.
    """
    if annotations not in ("any", "all", "ignore"):
        raise ValueError("annotations must be 'any', 'all' or 'ignore'")
    failures = []
    seen_annotation: dict[PanelQuery, list[QueryResult]] = {}
    for r in run_queries(prom_url, dashboards, variables, start, end, step,
                         rate_interval=rate_interval, interval=interval):
        if r.error:
            failures.append(r.describe())
        elif r.query.kind == ANNOTATION:
            seen_annotation.setdefault(r.query, []).append(r)
        elif r.series == 0:
            failures.append(r.describe())
    for query, results in seen_annotation.items():
        empty = [r for r in results if r.series == 0]
        if annotations == "all":
            failures.extend(r.describe() for r in empty)
        elif annotations == "any" and len(empty) == len(results):
            tried = "; ".join(", ".join(f"{k}={v}" for k, v in r.variables) or "-"
                              for r in results)
            failures.append(f"{query.where()}: empty for every value tried ({tried}): "
                            f"{results[0].expr}")
    return failures
