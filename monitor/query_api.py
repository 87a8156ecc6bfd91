"""Read-only JSON views for `monitor.http` (DESIGN.md §9): PromQL queries over
the daemon's own series, and the domains of the adapter registry.

`GET /api/v1/query` and `GET /api/v1/query_range` answer in the shape of
Prometheus' HTTP API, over the rule engine's in-memory `SeriesStore` (what the
rules see: the daemon's own metrics, scraped at each rule evaluation, for
`rules.retention_seconds`), with the PromQL subset of `monitor.rules.promql`:

    {"status": "success", "data": {"resultType": "matrix",
     "result": [{"metric": {"__name__": "…", "domain": "legal"},
                 "values": [[1764359649, "0.5"], …]}]}}

Errors: `{"status": "error", "errorType": "bad_data", "error": "…"}` with 400
(a bad parameter or expression), `errorType` "execution" with 422 (an
evaluation that failed). A range query evaluates at most `MAX_POINTS` steps.

`domains_view` is `GET /api/v1/domains`: each domain of the registry the
daemon runs with, its active version and each version's latest stored
golden-set verdict.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime
from decimal import Decimal
from typing import Callable, Iterable

from monitor.timestamps import rfc3339

MAX_POINTS = 11_000  # per series, as Prometheus' query_range
MAX_TIME = 9_223_372_036_854.775  # seconds: int64 milliseconds, Prometheus' own limit
# Label regexes run on Python's backtracking engine (Prometheus has RE2's linear
# one), so the API refuses the shapes that can take exponential or high
# polynomial time: a repetition of something that repeats or alternates, more
# than MAX_STARS unbounded repetitions, or a very long pattern.
MAX_STARS = 3
MAX_REGEX_CHARS = 512

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class BadData(ValueError):
    """A parameter or expression Prometheus would answer with `bad_data` (400)."""


# -- parameters --------------------------------------------------------------------------

def parse_time(text: str | None, name: str) -> float:
    """Unix seconds (a decimal number) or RFC 3339, as Prometheus' parseTime."""
    if text is None or text == "":
        raise BadData(f'invalid parameter "{name}": cannot parse "" to a valid timestamp')
    if _NUMBER.match(text):
        value = float(text)
        if math.isfinite(value) and abs(value) <= MAX_TIME:
            return value
    else:
        try:
            stamp = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if stamp.tzinfo is not None and "T" in text.upper():
                return stamp.timestamp()
    raise BadData(f'invalid parameter "{name}": cannot parse "{text}" to a valid timestamp')


def parse_step(text: str | None) -> float:
    """Seconds (a decimal number) or a Prometheus duration ("15s", "1m30s")."""
    from monitor.rules.files import parse_duration

    if text is None or text == "":
        raise BadData('invalid parameter "step": cannot parse "" to a valid duration')
    if _NUMBER.match(text):
        value = float(text)
        if math.isfinite(value):
            return value
    else:
        try:
            return parse_duration(text) / 1000
        except ValueError:
            pass
    raise BadData(f'invalid parameter "step": cannot parse "{text}" to a valid duration')


# -- formatting ------------------------------------------------------------------------------

def format_value(value: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64), as Prometheus writes sample values.

    >>> [format_value(v) for v in (1.0, 0.5, 1e-7, 1e21, -0.0, float("nan"), float("-inf"))]
    ['1', '0.5', '0.0000001', '1000000000000000000000', '-0', 'NaN', '-Inf']
    """
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _stamp(t_ms: int) -> float | int:
    """Seconds as Prometheus writes them: 1764359649 or 1764359649.25."""
    return t_ms // 1000 if t_ms % 1000 == 0 else t_ms / 1000


def _metric(labels: Iterable[tuple[str, str]]) -> dict[str, str]:
    return dict(labels)


def regex_risk(pattern: str) -> str | None:
    """Why matching `pattern` could take very long (None: it cannot).

    >>> regex_risk("legal|support") is None, regex_risk("prompt_.*") is None
    (True, True)
    >>> regex_risk("(.*.*)*z")
    'a repetition of something that itself repeats or alternates'
    """
    try:
        from re import _parser as sre_parse  # Python 3.11+
    except ImportError:  # pragma: no cover
        import sre_parse
    from re import error as re_error

    if len(pattern) > MAX_REGEX_CHARS:
        return f"longer than {MAX_REGEX_CHARS} characters"
    try:
        parsed = sre_parse.parse(pattern)
    except re_error as exc:
        raise BadData(f'invalid parameter "query": bad regex "{pattern}": {exc}') from None
    repeats = {sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, sre_parse.POSSESSIVE_REPEAT}
    unbounded = 0

    def walk(items, inside_repeat: bool) -> str | None:
        nonlocal unbounded
        for op, arg in items:
            if op in repeats:
                low, high, body = arg
                if high is sre_parse.MAXREPEAT or high > 16:
                    unbounded += 1
                    if inside_repeat:
                        return "a repetition of something that itself repeats or alternates"
                why = walk(body, inside_repeat or high > 1)
            elif op is sre_parse.BRANCH:
                if inside_repeat:
                    return "a repetition of something that itself repeats or alternates"
                why = next((w for w in (walk(b, inside_repeat) for b in arg[1]) if w), None)
            elif op is sre_parse.SUBPATTERN:
                why = walk(arg[-1], inside_repeat)
            elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
                why = walk(arg[1], inside_repeat)
            else:
                why = None
            if why:
                return why
        return None

    why = walk(parsed, False)
    if why is None and unbounded > MAX_STARS:
        why = f"more than {MAX_STARS} unbounded repetitions"
    return why


# -- queries ---------------------------------------------------------------------------------

class QueryAPI:
    """PromQL over `engine.store` (a `SeriesStore`), read under `engine.lock`
    (the `RuleEngine`'s: each evaluation step takes it, so a long range query
    never holds up a rule evaluation for more than one step)."""

    def __init__(self, engine, clock: Callable[[], float] = time.time,
                 max_points: int = MAX_POINTS):
        self.engine = engine
        self.clock = clock
        self.max_points = max_points

    def _compile(self, text: str | None):
        from monitor.rules.promql import PromQLError, compile_expr

        if text is None or not text.strip():
            raise BadData('invalid parameter "query": empty query')
        try:
            query = compile_expr(text)
        except PromQLError as exc:
            raise BadData(f'invalid parameter "query": {exc}') from None
        for pattern in query.regexes:
            why = regex_risk(pattern)
            if why is not None:
                raise BadData(f'invalid parameter "query": regex "{pattern}" is refused: {why}')
        return query

    def _at(self, query, t_ms: int):
        with self.engine.lock:
            return query.evaluate(self.engine.store, t_ms)

    def query(self, params: dict[str, str]) -> tuple[int, dict]:
        """`/api/v1/query?query=Q[&time=T]`: the value at one instant (default: now)."""
        try:
            query = self._compile(params.get("query"))
            at = params.get("time")
            t = parse_time(at, "time") if at not in (None, "") else self.clock()
        except BadData as exc:
            return _error(400, "bad_data", str(exc))
        t_ms = round(t * 1000)
        try:
            value = self._at(query, t_ms)
        except Exception as exc:  # EvaluationError, or a bug: the answer says which
            return _error(422, "execution", _why(exc))
        stamp = _stamp(t_ms)
        if query.kind == "scalar":
            data = {"resultType": "scalar", "result": [stamp, format_value(value)]}
        elif query.kind == "string":
            data = {"resultType": "string", "result": [stamp, str(value)]}
        elif query.kind == "matrix":
            data = {"resultType": "matrix", "result": [
                {"metric": _metric(labels),
                 "values": [[_stamp(ts), format_value(v)] for ts, v in zip(times, values)]}
                for labels, times, values in sorted(value, key=lambda s: s[0])]}
        else:
            data = {"resultType": "vector", "result": [
                {"metric": _metric(labels), "value": [stamp, format_value(v)]}
                for labels, v in value]}
        return 200, {"status": "success", "data": data}

    def query_range(self, params: dict[str, str]) -> tuple[int, dict]:
        """`/api/v1/query_range?query=Q&start=S&end=E&step=STEP`: a matrix, one
        series per label set seen at any step, evaluated at start, start+step, … ≤ end."""
        try:
            start = parse_time(params.get("start"), "start")
            end = parse_time(params.get("end"), "end")
            if end < start:
                raise BadData('invalid parameter "end": end timestamp must not be before '
                              'start time')
            step = parse_step(params.get("step"))
            if step <= 0:
                raise BadData('invalid parameter "step": zero or negative query resolution '
                              'step widths are not accepted. Try a positive integer')
            if (end - start) / step > self.max_points:
                raise BadData(f"exceeded maximum resolution of {self.max_points:,} points per "
                              "timeseries. Try decreasing the query resolution (?step=XX)")
            query = self._compile(params.get("query"))
            if query.kind not in ("vector", "scalar"):
                kind = "range vector" if query.kind == "matrix" else query.kind
                raise BadData(f'invalid expression type "{kind}" for range query, must be '
                              'Scalar or instant Vector')
        except BadData as exc:
            return _error(400, "bad_data", str(exc))
        start_ms, end_ms = round(start * 1000), round(end * 1000)
        step_ms = max(1, round(step * 1000))
        series: dict[tuple, list] = {}
        try:
            for t_ms in range(start_ms, end_ms + 1, step_ms):
                value = self._at(query, t_ms)
                points = [((), value)] if query.kind == "scalar" else value
                for labels, v in points:
                    series.setdefault(tuple(labels), []).append([_stamp(t_ms), format_value(v)])
        except Exception as exc:
            return _error(422, "execution", _why(exc))
        result = [{"metric": _metric(labels), "values": values}
                  for labels, values in sorted(series.items())]
        return 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}


def _why(exc: Exception) -> str:
    from monitor.rules.promql import EvaluationError

    return str(exc) if isinstance(exc, EvaluationError) else f"{exc.__class__.__name__}: {exc}"


def _error(status: int, kind: str, message: str) -> tuple[int, dict]:
    return status, {"status": "error", "errorType": kind, "error": message}


# -- domains ---------------------------------------------------------------------------------

def domains_view(registry, runs: Iterable[dict] = ()) -> list[dict]:
    """`GET /api/v1/domains`: the registry's domains (sorted) with each version's
    status and latest finished golden-set verdict. `runs` are the state store's
    finished evaluation runs, oldest first (`StateStore.latest_eval_runs()`, the
    reader behind `latest_verdicts`); the last one of a version wins.

    >>> from pathlib import Path
    >>> from monitor.registry import Domain, Registry, Version
    >>> legal = Domain("legal", "tiny", "lora", "v2", Path("/r/g.jsonl"),
    ...                {"v1": Version("v1", Path("/r/v1"), "good"),
    ...                 "v2": Version("v2", Path("/r/v2"), None)}, None)
    >>> registry = Registry(Path("/r/registry.yaml"), Path("/r"), {}, {"legal": legal})
    >>> runs = [{"domain": "legal", "version": "v2", "status": "done", "verdict": "regressed",
    ...          "finished_at": 0.0}]
    >>> domains_view(registry, runs)[0]["versions"][1]
    {'version': 'v2', 'status': None, 'verdict': 'regressed', 'evaluated_at': '1970-01-01T00:00:00.000Z'}
    """
    if registry is None:
        return []
    latest: dict[tuple[str, str], dict] = {}
    for run in runs:
        if run.get("status", "done") == "done":
            latest[(run["domain"], run["version"])] = run
    out = []
    for name, domain in sorted(registry.domains.items()):
        versions = []
        for vname, version in domain.versions.items():
            run = latest.get((name, vname)) or {}
            versions.append({"version": vname,
                             "status": version.status if version is not None else None,
                             "verdict": run.get("verdict"),
                             "evaluated_at": rfc3339(run.get("finished_at"))})
        out.append({"domain": name, "kind": domain.kind, "base_model": domain.base_model,
                    "active": domain.active, "versions": versions})
    return out
