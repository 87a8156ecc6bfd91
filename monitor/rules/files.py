"""Rule files: read, validate and compile Prometheus rule files (DESIGN.md §5).

Validation follows promtool 2.42's `check rules` (model/rulefmt) and reports
every error of every file at once, in promtool's format:

    rules/drift.yml: 7:15: group "drift", rule 1, "PromptLengthDrift": could not parse expression: ...

On top of promtool's checks we refuse, at load time, expressions that use a
construct outside the subset the daemon evaluates (naming the construct). A
range that reaches further back than the series store keeps is a warning
(`Group.warnings`): the rule works, over the history there is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from monitor.errors import yaml_error_where
from monitor.rules import template
from monitor.rules.promql import PromQLError, Query, UnsupportedError, compile_expr

_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?"
                       r"(?:(\d+)ms)?$")
_UNITS_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_GROUP_FIELDS = {"name", "interval", "limit", "rules"}
_RULE_FIELDS = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


class RuleLoadError(Exception):
    """Every error found, each a promtool-style line."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


def parse_duration(text: str) -> int:
    """Prometheus duration ("1h30m", "90s", "0") in milliseconds.

    >>> parse_duration("1h30m"), parse_duration("0"), parse_duration("250ms")
    (5400000, 0, 250)
    """
    if text == "":
        raise ValueError("empty duration string")
    if text == "0":
        return 0
    m = _DURATION.match(text)
    if m is None or not any(m.groups()):
        raise ValueError(f'not a valid duration string: "{text}"')
    return sum(int(g) * unit for g, unit in zip(m.groups(), _UNITS_MS) if g)


def format_duration(ms: int) -> str:
    """Prometheus' short form: 90000 -> "1m30s".

    >>> format_duration(5_400_000), format_duration(0), format_duration(1500)
    ('1h30m', '0s', '1s500ms')
    """
    if ms == 0:
        return "0s"
    out = []
    for unit, size in zip(("y", "w", "d", "h", "m", "s", "ms"), _UNITS_MS):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)


@dataclass
class Rule:
    """One alerting or recording rule, compiled."""

    kind: str  # "alert" | "record"
    name: str
    query: Query
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    file: str = ""
    line: int = 0
    group: str = ""
    index: int = 0  # 1-based, as promtool counts

    @property
    def expr(self) -> str:
        return self.query.text

    @property
    def where(self) -> str:
        return f'{self.file}: group "{self.group}", rule {self.index}, "{self.name}"'


@dataclass
class Group:
    name: str
    file: str
    interval_ms: int
    rules: list[Rule]
    limit: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.file};{self.name}"


def expand_paths(paths: list[str | Path], *, missing_ok: bool = False) -> list[Path]:
    """Files as given; folders give their *.yml / *.yaml files (sorted, not recursive)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix in (".yml", ".yaml") and f.is_file())
        elif p.exists():
            files.append(p)
        elif not missing_ok:
            raise RuleLoadError([f"{p}: no such file or folder"])
    return files


def load_files(paths: list[str | Path], default_interval_ms: int = 60_000, *,
               retention_ms: int | None = None, missing_ok: bool = False) -> list[Group]:
    """All groups of all files, or `RuleLoadError` with every error of every file."""
    errors: list[str] = []
    groups: list[Group] = []
    for path in expand_paths(paths, missing_ok=missing_ok):
        found, errs = load_file(path, default_interval_ms, retention_ms=retention_ms)
        groups += found
        errors += errs
    if errors:
        raise RuleLoadError(errors)
    return groups


def load_file(path: str | Path, default_interval_ms: int = 60_000, *,
              retention_ms: int | None = None) -> tuple[list[Group], list[str]]:
    """(groups, errors) of one file; errors are promtool-style lines."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{name}: {exc}"]
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        where, problem = yaml_error_where(exc)
        return [], [f"{name}:{where} yaml: {problem}"]
    return _Validator(name, default_interval_ms, retention_ms).document(root)


def _pos(node) -> str:
    return f"{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _mapping(node) -> dict[str, tuple]:
    """Key -> (key node, value node) of a YAML mapping node."""
    return {k.value: (k, v) for k, v in node.value}


class _Validator:
    def __init__(self, file: str, default_interval_ms: int, retention_ms: int | None):
        self.file = file
        self.default_interval_ms = default_interval_ms
        self.retention_ms = retention_ms
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def err(self, message: str, node=None) -> None:
        self.errors.append(f"{self.file}: {_pos(node) + ': ' if node is not None else ''}{message}")

    def document(self, root) -> tuple[list[Group], list[str]]:
        if root is None:
            return [], []
        if not isinstance(root, yaml.MappingNode):
            self.err("yaml: the file must be a mapping with a `groups:` list", root)
            return [], self.errors
        top = _mapping(root)
        for key, (knode, _) in top.items():
            if key != "groups":
                self.err(f"yaml: unmarshal errors:\n  line {knode.start_mark.line + 1}: field {key} "
                         "not found in type rulefmt.RuleGroups", knode)
        if "groups" not in top:
            return [], self.errors
        gnode = top["groups"][1]
        if not isinstance(gnode, yaml.SequenceNode):
            if not (isinstance(gnode, yaml.ScalarNode) and gnode.value in ("", "null", "~")):
                self.err("yaml: `groups` must be a list", gnode)
            return [], self.errors
        groups, seen = [], set()
        for node in gnode.value:
            group = self.group(node, seen)
            if group is not None:
                groups.append(group)
        return (groups if not self.errors else []), self.errors

    def group(self, node, seen: set[str]) -> Group | None:
        if not isinstance(node, yaml.MappingNode):
            self.err("yaml: a group must be a mapping (name, interval, rules)", node)
            return None
        fields = _mapping(node)
        for key, (knode, _) in fields.items():
            if key not in _GROUP_FIELDS:
                self.err(f"yaml: unmarshal errors:\n  line {knode.start_mark.line + 1}: field {key} "
                         "not found in type rulefmt.RuleGroup", knode)
        before_warnings = len(self.warnings)
        name = self.scalar(fields, "name") or ""
        if name == "":
            self.err("Groupname must not be empty", node)
        elif name in seen:
            self.err(f'groupname: "{name}" is repeated in the same file', node)
        seen.add(name)
        interval_ms = self.duration(fields, "interval") or self.default_interval_ms
        limit = 0
        if "limit" in fields:
            try:
                limit = int(fields["limit"][1].value)
            except (TypeError, ValueError):
                self.err(f"yaml: cannot unmarshal {fields['limit'][1].value!r} into int",
                         fields["limit"][1])
        rules = []
        rnode = fields.get("rules", (None, None))[1]
        if rnode is not None and isinstance(rnode, yaml.SequenceNode):
            for index, r in enumerate(rnode.value, start=1):
                rule = self.rule(r, name, index)
                if rule is not None:
                    rules.append(rule)
        elif rnode is not None and not (isinstance(rnode, yaml.ScalarNode)
                                         and rnode.value in ("", "null", "~")):
            self.err("yaml: `rules` must be a list", rnode)
        group = Group(name, self.file, interval_ms, rules, limit, self.warnings[before_warnings:])
        return group

    def scalar(self, fields, key) -> str | None:
        if key not in fields:
            return None
        node = fields[key][1]
        if node.tag == "tag:yaml.org,2002:null":
            return None  # `for: ~` / `for:` is no value, as yaml.v3 reads it
        if not isinstance(node, yaml.ScalarNode):
            self.err(f"yaml: `{key}` must be a string", node)
            return None
        return node.value

    def duration(self, fields, key) -> int:
        text = self.scalar(fields, key)
        if text is None:
            return 0
        try:
            return parse_duration(text)
        except ValueError as exc:
            self.err(str(exc), fields[key][1])
            return 0

    def string_map(self, fields, key) -> dict[str, str]:
        if key not in fields:
            return {}
        node = fields[key][1]
        if isinstance(node, yaml.ScalarNode) and node.value in ("", "null", "~"):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.err(f"yaml: `{key}` must be a mapping of strings", node)
            return {}
        out = {}
        for k, v in node.value:
            if not isinstance(v, yaml.ScalarNode):
                self.err(f"yaml: `{key}.{k.value}` must be a string", v)
                continue
            out[k.value] = v.value
        return out

    def rule(self, node, group: str, index: int) -> Rule | None:
        if not isinstance(node, yaml.MappingNode):
            self.err("yaml: a rule must be a mapping (alert or record, expr, ...)", node)
            return None
        fields = _mapping(node)
        for key, (knode, _) in fields.items():
            if key not in _RULE_FIELDS:
                self.err(f"yaml: unmarshal errors:\n  line {knode.start_mark.line + 1}: field {key} "
                         "not found in type rulefmt.RuleNode", knode)
        record = self.scalar(fields, "record") or ""
        alert = self.scalar(fields, "alert") or ""
        name = alert or record
        before = len(self.errors)

        def problem(message: str, at=None) -> None:
            where = f"{_pos(at)}: " if at is not None else ""
            self.errors.append(f'{self.file}: {where}group "{group}", rule {index}, "{name}": '
                               f"{message}")

        record_node = fields.get("record", (None, node))[1]
        alert_node = fields.get("alert", (None, node))[1]
        expr_node = fields.get("expr", (None, node))[1]
        if record and alert:
            self.errors.append(f'{self.file}: {_pos(record_node)}: {_pos(alert_node)}: group '
                               f'"{group}", rule {index}, "{name}": only one of \'record\' and '
                               "'alert' must be set")
        if not record and not alert:
            problem("one of 'record' or 'alert' must be set", record_node)
        expr = self.scalar(fields, "expr") or ""
        query = None
        if expr == "":
            problem("field 'expr' must be set in rule", expr_node)
        else:
            try:
                query = compile_expr(expr)
            except UnsupportedError as exc:
                problem(f"{exc} by the monitor's rule evaluator (docs/rules.md#supported-promql)",
                        expr_node)
            except PromQLError as exc:
                problem(f"could not parse expression: {exc}", expr_node)
            else:
                if query.kind not in ("vector", "scalar"):
                    problem(f"the expression returns a {query.kind}; a rule needs an instant "
                            "vector or a scalar", expr_node)
                elif self.retention_ms is not None and query.max_range_ms > self.retention_ms:
                    self.warnings.append(
                        f'{self.file}: {_pos(expr_node)}: group "{group}", rule {index}, '
                        f'"{name}": warning: the expression reads {_dur(query.max_range_ms)} back, '
                        f"more than the series store keeps (rules.retention_seconds = "
                        f"{_dur(self.retention_ms)}); it sees only the history there is")
        for_ms = self.duration(fields, "for")
        keep_ms = self.duration(fields, "keep_firing_for")
        labels = self.string_map(fields, "labels")
        annotations = self.string_map(fields, "annotations")
        if record:
            if annotations:
                problem("invalid field 'annotations' in recording rule", record_node)
            if for_ms:
                problem("invalid field 'for' in recording rule", record_node)
            if keep_ms:
                problem("invalid field 'keep_firing_for' in recording rule", record_node)
            if not _METRIC_NAME.match(record):
                problem(f"invalid recording rule name: {record}", record_node)
        for k in sorted(labels):
            if not _LABEL_NAME.match(k) or k == "__name__":
                problem(f"invalid label name: {k}")
        for k in sorted(annotations):
            if not _LABEL_NAME.match(k):
                problem(f"invalid annotation name: {k}")
        if alert:
            for kind, mapping in (("label", labels), ("annotation", annotations)):
                for k, text in sorted(mapping.items()):
                    try:
                        template.parse(text)
                    except template.TemplateError as exc:
                        # promtool's wording; the column is ours (Go gives only the line).
                        problem(f'{kind} "{k}": template: __alert_{alert}:{exc.line}: '
                                f"{exc.message} (column {exc.column})")
        if len(self.errors) > before or query is None:
            return None
        return Rule("alert" if alert else "record", name, query, labels, annotations, for_ms,
                    keep_ms, self.file, node.start_mark.line + 1, group, index)


def _dur(ms: int) -> str:
    return format_duration(ms)
