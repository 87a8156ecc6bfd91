"""PromQL: parse with `promql-parser`, refuse what we do not evaluate, evaluate the rest.

Expressions are parsed by the `promql_parser` wheel (a real PromQL parser, the
Rust one that targets Prometheus 2.45 syntax), checked against the supported
subset (DESIGN.md §5) and compiled into a tree of closures evaluated at one
instant over a `SeriesStore`. The semantics follow Prometheus 2.x, the
version promtool on Debian 12 ships (2.42), as closely as our conformance
corpus can check:

* an instant selector returns each series' latest sample in
  [t - offset - 5m, t - offset] unless that sample is a staleness marker;
* a range selector returns the samples in [t - offset - range, t - offset]
  (both ends closed, as in 2.x), staleness markers left out;
* `rate`/`increase`/`delta` extrapolate to the range boundaries exactly as
  Prometheus' `extrapolatedRate`, with counter resets;
* arithmetic, `bool` comparisons, functions (except `last_over_time`) and
  aggregations drop the metric name; one-to-one matching keeps only the `on`
  labels (or drops the `ignoring` ones);
* sums and means are accumulated in the same order and with the same
  formulas as Prometheus, so results compare equal to the last bit.

>>> from monitor.series import SeriesStore
>>> store = SeriesStore()
>>> for minute in range(11):
...     _ = store.append((("__name__", "hits_total"), ("job", "a")), minute * 60_000, 10.0 * minute)
>>> compile_expr('rate(hits_total[5m])').evaluate(store, 600_000)
[((('job', 'a'),), 0.16666666666666669)]
>>> compile_expr('topk(1, hits_total)')
Traceback (most recent call last):
...
monitor.rules.promql.UnsupportedError: aggregation topk is not supported (supported: avg, count, max, min, sum)
"""

from __future__ import annotations

import math
from datetime import timedelta
from bisect import bisect_right
from typing import Callable, Union

import promql_parser as pp

from monitor.series import Labels, SeriesStore, is_stale

LOOKBACK_MS = 300_000

Vector = list  # of (Labels, float)
Value = Union[float, list, str]

AGGREGATIONS = ("avg", "count", "max", "min", "sum")
OVER_TIME = ("avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
             "count_over_time", "last_over_time")
FUNCTIONS = OVER_TIME + ("rate", "increase", "delta", "absent", "absent_over_time", "time",
                         "vector", "scalar", "abs", "clamp_min", "clamp_max")
ARITHMETIC = ("+", "-", "*", "/", "%", "^")
COMPARISON = ("==", "!=", ">", "<", ">=", "<=")
SET_OPS = ("and", "or", "unless")


class PromQLError(ValueError):
    """An expression that does not parse."""


class UnsupportedError(PromQLError):
    """A valid PromQL expression using a construct outside the supported subset."""

    def __init__(self, construct: str, detail: str = ""):
        self.construct = construct
        super().__init__(f"{construct} is not supported{detail}")


class EvaluationError(RuntimeError):
    """A query that failed at evaluation time (Prometheus' error, same wording)."""


class Context:
    __slots__ = ("store", "t")

    def __init__(self, store: SeriesStore, t: int):
        self.store = store
        self.t = t


class Query:
    """A compiled expression. `kind` is "vector" or "scalar" (or "matrix", "string")."""

    def __init__(self, text: str, fn: Callable[[Context], Value], kind: str, max_range_ms: int):
        self.regexes: tuple[str, ...] = ()  # the label regexes (=~, !~) it matches with
        self.text = text
        self._fn = fn
        self.kind = kind
        self.max_range_ms = max_range_ms  # how far back in time the query reads

    def evaluate(self, store: SeriesStore, t_ms: int) -> Value:
        return self._fn(Context(store, int(t_ms)))

    def vector(self, store: SeriesStore, t_ms: int) -> Vector:
        """The result as a vector (a scalar becomes one sample without labels)."""
        value = self.evaluate(store, t_ms)
        if isinstance(value, list):
            return value
        if isinstance(value, float):
            return [((), value)]
        raise EvaluationError("rule result is not a vector or scalar")

    def __repr__(self) -> str:
        return f"Query({self.text!r})"


def compile_expr(text: str) -> Query:
    """Parse and compile; `PromQLError` / `UnsupportedError` say what is wrong."""
    try:
        node = pp.parse(text)
    except ValueError as exc:
        raise PromQLError(str(exc)) from None
    compiler = _Compiler()
    fn, kind = compiler.compile(node)
    query = Query(text, fn, kind, compiler.max_range_ms)
    query.regexes = tuple(compiler.regexes)
    return query


def _ms(delta: timedelta | None) -> int:
    if delta is None:
        return 0
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def _drop_name(labels: Labels) -> Labels:
    if labels and labels[0][0] == "__name__":
        return labels[1:]
    return tuple(p for p in labels if p[0] != "__name__")


def _check_unique(vector: Vector) -> Vector:
    if len(vector) > 1 and len({labels for labels, _ in vector}) != len(vector):
        raise EvaluationError("vector cannot contain metrics with the same labelset")
    return vector


# -- arithmetic with Go's float semantics ------------------------------------
def _div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _mod(a: float, b: float) -> float:
    try:
        return math.fmod(a, b)
    except ValueError:
        return math.nan


def _pow(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except OverflowError:
        return math.inf if a > 0 or b == int(b) and int(b) % 2 == 0 else -math.inf
    except (ValueError, ZeroDivisionError):
        if a == 0 and b < 0:
            return -math.inf if b == int(b) and int(b) % 2 and math.copysign(1, a) < 0 else math.inf
        return math.nan


def _gomax(a: float, b: float) -> float:
    """Go's math.Max: +Inf wins over NaN, NaN over the rest, +0 over -0."""
    if a == math.inf or b == math.inf:
        return math.inf
    if a != a or b != b:
        return math.nan
    if a == 0 and b == 0:
        return b if math.copysign(1, a) < 0 else a
    return a if a > b else b


def _gomin(a: float, b: float) -> float:
    """Go's math.Min: -Inf wins over NaN, NaN over the rest, -0 over +0."""
    if a == -math.inf or b == -math.inf:
        return -math.inf
    if a != a or b != b:
        return math.nan
    if a == 0 and b == 0:
        return a if math.copysign(1, a) < 0 else b
    return a if a < b else b


_OPS: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _div,
    "%": _mod,
    "^": _pow,
}
_CMP: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


def _kahan_inc(inc: float, total: float, c: float) -> tuple[float, float]:
    t = total + inc
    if abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


# -- range functions -----------------------------------------------------------
def _sum_over_time(times, values) -> float:
    total = c = 0.0
    for v in values:
        total, c = _kahan_inc(v, total, c)
    return total if math.isinf(total) else total + c


def _avg_over_time(times, values) -> float:
    mean = c = 0.0
    count = 0.0
    for v in values:
        count += 1
        if math.isinf(mean):
            if math.isinf(v) and (mean > 0) == (v > 0):
                continue
            if not math.isinf(v) and v == v:
                continue
        mean, c = _kahan_inc(v / count - mean / count, mean, c)
    return mean if math.isinf(mean) else mean + c


def _max_over_time(times, values) -> float:
    best = values[0]
    for v in values:
        if v > best or best != best:
            best = v
    return best


def _min_over_time(times, values) -> float:
    best = values[0]
    for v in values:
        if v < best or best != best:
            best = v
    return best


_OVER_TIME_FNS = {
    "sum_over_time": _sum_over_time,
    "avg_over_time": _avg_over_time,
    "max_over_time": _max_over_time,
    "min_over_time": _min_over_time,
    "count_over_time": lambda times, values: float(len(values)),
    "last_over_time": lambda times, values: values[-1],
}


def _extrapolated_rate(times, values, range_start: int, range_end: int, range_ms: int,
                       is_counter: bool, is_rate: bool) -> float | None:
    """Prometheus' extrapolatedRate (promql/functions.go), float samples."""
    if len(values) < 2:
        return None
    result = values[-1] - values[0]
    if is_counter:
        prev = values[0]
        for v in values[1:]:
            if v < prev:
                result += prev
            prev = v
    duration_to_start = (times[0] - range_start) / 1000
    duration_to_end = (range_end - times[-1]) / 1000
    sampled = (times[-1] - times[0]) / 1000
    average = sampled / (len(values) - 1)
    if is_counter and result > 0 and values[0] >= 0:
        to_zero = sampled * (values[0] / result)
        if to_zero < duration_to_start:
            duration_to_start = to_zero
    threshold = average * 1.1
    interval = sampled
    interval += duration_to_start if duration_to_start < threshold else average / 2
    interval += duration_to_end if duration_to_end < threshold else average / 2
    factor = interval / sampled
    if is_rate:
        factor /= range_ms / 1000
    return result * factor


class _Compiler:
    def __init__(self):
        self.max_range_ms = LOOKBACK_MS
        self.regexes: list[str] = []

    def compile(self, node) -> tuple[Callable[[Context], Value], str]:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise UnsupportedError(type(node).__name__)
        return method(node)

    # -- leaves --------------------------------------------------------------
    def _NumberLiteral(self, node):
        value = float(node.val)
        return (lambda ctx: value), "scalar"

    def _StringLiteral(self, node):
        value = node.val
        return (lambda ctx: value), "string"

    def _ParenExpr(self, node):
        return self.compile(node.expr)

    def _matchers(self, vs) -> list[tuple[str, str, str]]:
        if vs.at is not None:
            raise UnsupportedError("the @ modifier")
        if vs.matchers.or_matchers:
            raise UnsupportedError("'or' between label matchers")
        ops = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~",
               "MatchOp.NotRe": "!~"}
        matchers = []
        if vs.name is not None:
            matchers.append(("__name__", "=", vs.name))
        for m in vs.matchers.matchers:
            if m.name == "__name__" and vs.name is not None and m.op == pp.MatchOp.Equal \
                    and m.value == vs.name:
                continue
            matchers.append((m.name, ops[str(m.op)], m.value))
            if matchers[-1][1] in ("=~", "!~"):
                self.regexes.append(m.value)
        return matchers

    def _offset(self, vs) -> int:
        offset = _ms(vs.offset)
        if offset < 0:
            raise UnsupportedError("a negative offset")
        return offset

    def _VectorSelector(self, node):
        matchers = self._matchers(node)
        offset = self._offset(node)
        self.max_range_ms = max(self.max_range_ms, offset + LOOKBACK_MS)

        def select(ctx: Context) -> Vector:
            maxt = ctx.t - offset
            out = []
            for series in ctx.store.matching(matchers):
                times = series.times
                if not times or times[0] > maxt:
                    continue
                if times[-1] <= maxt:
                    i = len(times) - 1
                else:
                    i = bisect_right(times, maxt) - 1
                if times[i] < maxt - LOOKBACK_MS:
                    continue
                value = series.values[i]
                if value != value and is_stale(value):
                    continue
                out.append((series.labels, value))
            return out

        return select, "vector"

    def _MatrixSelector(self, node):
        vs = node.vector_selector
        matchers = self._matchers(vs)
        offset = self._offset(vs)
        range_ms = _ms(node.range)
        self.max_range_ms = max(self.max_range_ms, offset + range_ms)

        def select(ctx: Context):
            maxt = ctx.t - offset
            out = []
            for labels, times, values in ctx.store.select(matchers, maxt - range_ms, maxt):
                if any(v != v for v in values):
                    pairs = [(t, v) for t, v in zip(times, values) if not is_stale(v)]
                    if not pairs:
                        continue
                    times, values = [p[0] for p in pairs], [p[1] for p in pairs]
                out.append((labels, times, values))
            return out

        select.range_ms = range_ms  # type: ignore[attr-defined]
        select.offset_ms = offset  # type: ignore[attr-defined]
        return select, "matrix"

    def _SubqueryExpr(self, node):
        raise UnsupportedError("a subquery", " (write a recording rule and a range over it)")

    # -- operators -----------------------------------------------------------
    def _UnaryExpr(self, node):
        inner, kind = self.compile(node.expr)
        if kind == "scalar":
            return (lambda ctx: -inner(ctx)), "scalar"
        if kind != "vector":
            raise PromQLError(f"unary expression only allowed on expressions of type scalar or "
                              f"instant vector, got {kind}")
        return (lambda ctx: _check_unique([(_drop_name(labels), -v) for labels, v in inner(ctx)])), \
            "vector"

    def _BinaryExpr(self, node):
        op = str(node.op).lower()
        if op == "atan2":
            raise UnsupportedError("the atan2 operator")
        lhs, lkind = self.compile(node.lhs)
        rhs, rkind = self.compile(node.rhs)
        modifier = node.modifier
        return_bool = bool(modifier and modifier.return_bool)
        if lkind == "scalar" and rkind == "scalar":
            if op in COMPARISON:
                cmp = _CMP[op]
                return (lambda ctx: 1.0 if cmp(lhs(ctx), rhs(ctx)) else 0.0), "scalar"
            fn = _OPS[op]
            return (lambda ctx: fn(lhs(ctx), rhs(ctx))), "scalar"
        if lkind == "vector" and rkind == "vector":
            return self._vector_vector(op, lhs, rhs, modifier, return_bool), "vector"
        swap = lkind == "scalar"
        vec, scalar = (rhs, lhs) if swap else (lhs, rhs)
        return self._vector_scalar(op, vec, scalar, swap, return_bool), "vector"

    def _vector_scalar(self, op, vec, scalar, swap, return_bool):
        if op in COMPARISON:
            cmp = _CMP[op]

            def compare(ctx):
                s = scalar(ctx)
                out = []
                for labels, v in vec(ctx):
                    keep = cmp(s, v) if swap else cmp(v, s)
                    if return_bool:
                        out.append((_drop_name(labels), 1.0 if keep else 0.0))
                    elif keep:
                        out.append((labels, v))
                return _check_unique(out) if return_bool else out

            return compare
        fn = _OPS[op]

        def arithmetic(ctx):
            s = scalar(ctx)
            if swap:
                out = [(_drop_name(labels), fn(s, v)) for labels, v in vec(ctx)]
            else:
                out = [(_drop_name(labels), fn(v, s)) for labels, v in vec(ctx)]
            return _check_unique(out)

        return arithmetic

    def _vector_vector(self, op, lhs, rhs, modifier, return_bool):
        card = str(modifier.card) if modifier is not None else ""
        if card.endswith("ManyToOne"):
            raise UnsupportedError("group_left", " (many-to-one matching)")
        if card.endswith("OneToMany"):
            raise UnsupportedError("group_right", " (one-to-many matching)")
        matching = modifier.matching if modifier is not None else None
        on = matching is not None and str(matching.type).endswith("Include")
        names = tuple(sorted(set(matching.labels))) if matching is not None else ()
        if on:
            def signature(labels: Labels):
                return tuple(p for p in labels if p[0] in names)
        else:
            skip = set(names) | {"__name__"}

            def signature(labels: Labels):
                return tuple(p for p in labels if p[0] not in skip)

        if op in SET_OPS:
            return self._set_op(op, lhs, rhs, signature)

        is_cmp = op in COMPARISON
        fn = _CMP[op] if is_cmp else _OPS[op]
        drop = not is_cmp

        def result_labels(labels: Labels) -> Labels:
            if drop or return_bool:
                labels = _drop_name(labels)
            if on:
                return tuple(p for p in labels if p[0] in names)
            if names:
                return tuple(p for p in labels if p[0] not in names)
            return labels

        def binop(ctx):
            left, right = lhs(ctx), rhs(ctx)
            if not left or not right:
                return []
            by_sig = {}
            for labels, v in right:
                sig = signature(labels)
                if sig in by_sig:
                    raise EvaluationError(
                        f"found duplicate series for the match group {_fmt(sig)} on the right "
                        f"hand-side of the operation: [{_fmt(labels)}, {_fmt(by_sig[sig][0])}];"
                        "many-to-many matching not allowed: matching labels must be unique on "
                        "one side")
                by_sig[sig] = (labels, v)
            matched = set()
            out = []
            for labels, lv in left:
                sig = signature(labels)
                match = by_sig.get(sig)
                if match is None:
                    continue
                rv = match[1]
                if is_cmp:
                    keep = fn(lv, rv)
                    if return_bool:
                        value = 1.0 if keep else 0.0
                    elif keep:
                        value = lv
                    else:
                        continue
                else:
                    value = fn(lv, rv)
                if sig in matched:
                    raise EvaluationError("multiple matches for labels: many-to-one matching "
                                          "must be explicit (group_left/group_right)")
                matched.add(sig)
                out.append((result_labels(labels), value))
            return _check_unique(out)

        return binop

    def _set_op(self, op, lhs, rhs, signature):
        if op == "and":
            def and_(ctx):
                left = lhs(ctx)
                if not left:
                    return []
                right = {signature(labels) for labels, _ in rhs(ctx)}
                return [s for s in left if signature(s[0]) in right]
            return and_
        if op == "or":
            def or_(ctx):
                left, right = lhs(ctx), rhs(ctx)
                if not left:
                    return list(right)
                if not right:
                    return list(left)
                seen = {signature(labels) for labels, _ in left}
                return _check_unique(list(left) + [s for s in right if signature(s[0]) not in seen])
            return or_

        def unless(ctx):
            left = lhs(ctx)
            if not left:
                return []
            right = {signature(labels) for labels, _ in rhs(ctx)}
            return [s for s in left if signature(s[0]) not in right]
        return unless

    # -- aggregations --------------------------------------------------------
    def _AggregateExpr(self, node):
        op = str(node.op).lower()
        if op not in AGGREGATIONS:
            raise UnsupportedError(f"aggregation {op}",
                                   f" (supported: {', '.join(AGGREGATIONS)})")
        inner, kind = self.compile(node.expr)
        if kind != "vector":
            raise PromQLError(f"expected type instant vector in aggregation expression, got {kind}")
        modifier = node.modifier
        without = modifier is not None and str(modifier.type).endswith("Without")
        grouping = tuple(sorted(set(modifier.labels))) if modifier is not None else ()
        drop = set(grouping) | {"__name__"}

        def key(labels: Labels) -> Labels:
            if without:
                return tuple(p for p in labels if p[0] not in drop)
            return tuple(p for p in labels if p[0] in grouping)

        def aggregate(ctx):
            groups: dict[Labels, list] = {}
            for labels, v in inner(ctx):
                k = key(labels)
                g = groups.get(k)
                if g is None:
                    groups[k] = [v, v, 1]  # value, mean, count
                    continue
                g[2] += 1
                if op == "sum":
                    g[0] += v
                elif op == "avg":
                    mean = g[1]
                    if math.isinf(mean):
                        if math.isinf(v) and (mean > 0) == (v > 0):
                            continue
                        if not math.isinf(v) and v == v:
                            continue
                    g[1] = mean + (v / g[2] - mean / g[2])
                elif op == "max":
                    if g[0] < v or g[0] != g[0]:
                        g[0] = v
                elif op == "min":
                    if g[0] > v or g[0] != g[0]:
                        g[0] = v
            if op == "avg":
                return [(k, g[1]) for k, g in groups.items()]
            if op == "count":
                return [(k, float(g[2])) for k, g in groups.items()]
            return [(k, g[0]) for k, g in groups.items()]

        return aggregate, "vector"

    # -- functions -----------------------------------------------------------
    def _Call(self, node):
        name = node.func.name
        if name not in FUNCTIONS:
            raise UnsupportedError(f"function {name}()")
        args = [self.compile(a) for a in node.args]
        if name == "time":
            return (lambda ctx: ctx.t / 1000), "scalar"
        if name == "vector":
            fn = args[0][0]
            return (lambda ctx: [((), fn(ctx))]), "vector"
        if name == "scalar":
            fn = args[0][0]

            def scalar(ctx):
                v = fn(ctx)
                return v[0][1] if len(v) == 1 else math.nan
            return scalar, "scalar"
        if name == "abs":
            fn = args[0][0]
            return (lambda ctx: _check_unique([(_drop_name(l), abs(v)) for l, v in fn(ctx)])), \
                "vector"
        if name in ("clamp_min", "clamp_max"):
            fn, bound = args[0][0], args[1][0]
            clamp = _gomax if name == "clamp_min" else _gomin
            return (lambda ctx: _check_unique(
                [(_drop_name(l), clamp(bound(ctx), v)) for l, v in fn(ctx)])), "vector"
        if name in ("absent", "absent_over_time"):
            fn = args[0][0]
            arg = node.args[0]
            while isinstance(arg, pp.ParenExpr):
                arg = arg.expr
            vs = arg.vector_selector if isinstance(arg, pp.MatrixSelector) else arg
            labels = _absent_labels(vs) if isinstance(vs, pp.VectorSelector) else ()
            return (lambda ctx: [] if fn(ctx) else [(labels, 1.0)]), "vector"
        matrix = args[0][0]
        range_ms, offset = matrix.range_ms, matrix.offset_ms
        if name in _OVER_TIME_FNS:
            fn = _OVER_TIME_FNS[name]
            keep_name = name == "last_over_time"
            return (lambda ctx: _check_unique([
                (labels if keep_name else _drop_name(labels), fn(times, values))
                for labels, times, values in matrix(ctx)])), "vector"
        is_counter = name != "delta"
        is_rate = name == "rate"

        def rate(ctx):
            end = ctx.t - offset
            start = end - range_ms
            out = []
            for labels, times, values in matrix(ctx):
                v = _extrapolated_rate(times, values, start, end, range_ms, is_counter, is_rate)
                if v is not None:
                    out.append((_drop_name(labels), v))
            return _check_unique(out)

        return rate, "vector"


def _absent_labels(vs) -> Labels:
    out: dict[str, str] = {}
    has: set[str] = set()
    for m in vs.matchers.matchers:
        if m.name == "__name__":
            continue
        if m.op == pp.MatchOp.Equal and m.name not in has:
            out[m.name] = m.value
            has.add(m.name)
        else:
            out.pop(m.name, None)
    return tuple(sorted((k, v) for k, v in out.items() if v != ""))


def _fmt(labels: Labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


def format_e(value: float, upper: bool = False) -> str:
    """Go's strconv.FormatFloat(v, 'e', -1, 64): the shortest exponent form.

    >>> format_e(1.0), format_e(0.5), format_e(1234.5), format_e(1e-7, upper=True)
    ('1e+00', '5e-01', '1.2345e+03', '1E-07')
    """
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    for digits in range(17):
        text = f"{value:.{digits}e}"
        if float(text) == value:
            break
    mantissa, exponent = text.split("e")
    sign, exponent = exponent[0], exponent[1:].lstrip("0").rjust(2, "0")
    return f"{mantissa}{'E' if upper else 'e'}{sign}{exponent}"


def format_labels(labels: Labels) -> str:
    """Labels as promtool prints them: name{a="b"} or {a="b"}."""
    d = dict(labels)
    name = d.pop("__name__", "")
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(d.items()))
    return f"{name}{{{inner}}}"
