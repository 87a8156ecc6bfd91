"""Unit tests of rule-file loading and validation (monitor.rules.files, DESIGN.md §5).

Errors are promtool's lines, `file: line:col: group "g", rule N, "Name": message`,
every error of every file at once; constructs outside the evaluated subset are
refused at load time with the construct named.
"""

from __future__ import annotations

import re
import textwrap

import pytest

from monitor.rules.files import (
    Group,
    RuleLoadError,
    expand_paths,
    format_duration,
    load_file,
    load_files,
    parse_duration,
)


def write(path, text: str):
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def errors_of(path, **kw) -> list[str]:
    groups, errors = load_file(path, **kw)
    assert (groups == []) == bool(errors) or not errors
    return errors


def col_of(path, line: int, needle: str) -> int:
    """1-based column where `needle` starts on 1-based `line` of the file."""
    return path.read_text().splitlines()[line - 1].index(needle) + 1


GOOD = """
groups:
  - name: quality
    interval: 30s
    limit: 5
    rules:
      - record: domain:errors:max
        expr: max by (domain) (monitor_quality{signal="error_ratio"})
        labels: {team: ml}
      - alert: ErrorsHigh
        expr: domain:errors:max > 0.5
        for: 2m
        keep_firing_for: 1m
        labels:
          severity: page
          action: rollback
        annotations:
          summary: "{{ $labels.domain }} at {{ $value | humanizePercentage }}"
  - name: other
    rules:
      - alert: Absent
        expr: absent(monitor_build_info)
"""


def test_a_valid_file_gives_compiled_groups_and_rules(tmp_path):
    path = write(tmp_path / "good.yml", GOOD)

    groups, errors = load_file(path)

    assert errors == []
    assert [(g.name, g.interval_ms, g.limit, g.file) for g in groups] == [
        ("quality", 30_000, 5, str(path)), ("other", 60_000, 0, str(path))]
    record, alert = groups[0].rules
    assert (record.kind, record.name, record.labels, record.index, record.line) == (
        "record", "domain:errors:max", {"team": "ml"}, 1, 6)
    assert record.expr == 'max by (domain) (monitor_quality{signal="error_ratio"})'
    assert (alert.kind, alert.name, alert.for_ms, alert.keep_firing_for_ms, alert.index) == (
        "alert", "ErrorsHigh", 120_000, 60_000, 2)
    assert alert.labels == {"severity": "page", "action": "rollback"}
    assert alert.annotations == {"summary": "{{ $labels.domain }} at {{ $value | humanizePercentage }}"}
    assert alert.where == f'{path}: group "quality", rule 2, "ErrorsHigh"'
    assert groups[0].key == f"{path};quality"
    assert groups[1].rules[0].query.kind == "vector"


def test_the_default_interval_applies_to_groups_without_one(tmp_path):
    path = write(tmp_path / "good.yml", GOOD)

    groups, _ = load_file(path, default_interval_ms=15_000)

    assert [g.interval_ms for g in groups] == [30_000, 15_000]


def test_an_empty_file_or_an_empty_groups_list_is_valid(tmp_path):
    assert load_file(write(tmp_path / "a.yml", "")) == ([], [])
    assert load_file(write(tmp_path / "b.yml", "groups: []\n")) == ([], [])
    assert load_file(write(tmp_path / "c.yml", "groups:\n")) == ([], [])


BAD = """
groups:
  - name: g
    rules:
      - alert: Parse
        expr: sum(up
      - alert: Refused
        expr: topk(1, up) > 0
      - record: ok:rule
        expr: up
"""


def test_parse_errors_point_at_the_expr_value(tmp_path):
    path = write(tmp_path / "bad.yml", BAD)

    errors = errors_of(path)

    col = col_of(path, 5, "sum(up")
    assert col == 15
    assert errors[0] == (f'{path}: 5:{col}: group "g", rule 1, "Parse": could not parse expression: '
                         "unclosed left parenthesis")
    col = col_of(path, 7, "topk")
    assert errors[1].startswith(f'{path}: 7:{col}: group "g", rule 2, "Refused": aggregation topk '
                                "is not supported")
    assert len(errors) == 2
    assert load_file(path)[0] == []  # any error: no groups


def test_every_error_of_every_rule_is_reported_at_once(tmp_path):
    path = write(tmp_path / "many.yml", """
        groups:
          - name: g
            interval: 1x
            rules:
              - alert: A
                expr: up ==
                for: 5y2w1d3h
              - record: r:x
                alert: B
                expr: up
              - record: "bad name"
                expr: up
                for: 1m
                annotations: {a: b}
              - alert: C
                expr: up
                labels: {"0bad": x, "__name__": y, ok: "{{ .Foo "}
                annotations: {"a-b": z}
              - expr: up
              - alert: D
              - alert: E
                expr: up[5m]
        """)

    errors = errors_of(path)

    p = str(path)
    assert errors == [
        f'{p}: 3:15: not a valid duration string: "1x"',
        f'{p}: 6:15: group "g", rule 1, "A": could not parse expression: invalid promql query',
        f"{p}: 8:17: 9:16: group \"g\", rule 2, \"B\": only one of 'record' and 'alert' must be set",
        f"{p}: 11:17: group \"g\", rule 3, \"bad name\": invalid field 'annotations' in recording rule",
        f"{p}: 11:17: group \"g\", rule 3, \"bad name\": invalid field 'for' in recording rule",
        f'{p}: 11:17: group "g", rule 3, "bad name": invalid recording rule name: bad name',
        f'{p}: group "g", rule 4, "C": invalid label name: 0bad',
        f'{p}: group "g", rule 4, "C": invalid label name: __name__',
        f'{p}: group "g", rule 4, "C": invalid annotation name: a-b',
        f'{p}: group "g", rule 4, "C": label "ok": template: __alert_C:1: unclosed action (column 9)',
        f"{p}: 19:9: group \"g\", rule 5, \"\": one of 'record' or 'alert' must be set",
        f"{p}: 20:9: group \"g\", rule 6, \"D\": field 'expr' must be set in rule",
        (f'{p}: 22:15: group "g", rule 7, "E": the expression returns a matrix; a rule needs an '
         "instant vector or a scalar"),
    ]


def test_the_promtool_line_format(tmp_path):
    path = write(tmp_path / "bad.yml", BAD)

    for line in errors_of(path):
        assert re.match(r'^.+: \d+:\d+: group "[^"]*", rule \d+, "[^"]*": .+$', line), line


def test_duplicate_groups_in_one_file(tmp_path):
    path = write(tmp_path / "dup.yml", """
        groups:
          - name: g
            rules: []
          - name: g
            rules: []
          - rules: []
        """)

    assert errors_of(path) == [f'{path}: 4:5: groupname: "g" is repeated in the same file',
                               f"{path}: 6:5: Groupname must not be empty"]


def test_the_same_group_name_in_two_files_is_allowed(tmp_path):
    write(tmp_path / "a.yml", "groups:\n  - name: g\n    rules: []\n")
    write(tmp_path / "b.yml", "groups:\n  - name: g\n    rules: []\n")

    groups = load_files([tmp_path])

    assert [g.key for g in groups] == [f"{tmp_path / 'a.yml'};g", f"{tmp_path / 'b.yml'};g"]


def test_unknown_fields_at_every_level(tmp_path):
    path = write(tmp_path / "unknown.yml", """
        groups:
          - name: g
            evaluation: 1m
            rules:
              - alert: A
                expr: up
                severity: page
        extra: 1
        """)

    errors = errors_of(path)

    p = str(path)
    assert f"{p}: 8:1: yaml: unmarshal errors:\n  line 8: field extra not found in type rulefmt.RuleGroups" \
        in errors
    assert f"{p}: 3:5: yaml: unmarshal errors:\n  line 3: field evaluation not found in type " \
           "rulefmt.RuleGroup" in errors
    assert f"{p}: 7:9: yaml: unmarshal errors:\n  line 7: field severity not found in type " \
           "rulefmt.RuleNode" in errors
    assert len(errors) == 3


@pytest.mark.parametrize("field, value", [("for", "5 minutes"), ("for", "1.5m"), ("for", "-1m"),
                                          ("for", "1m1h"), ("keep_firing_for", "x"),
                                          ("for", "10")])
def test_bad_durations(tmp_path, field, value):
    path = write(tmp_path / "d.yml", f"""
        groups:
          - name: g
            rules:
              - alert: A
                expr: up
                {field}: "{value}"
        """)

    errors = errors_of(path)

    col = col_of(path, 6, '"')
    assert errors == [f'{path}: 6:{col}: not a valid duration string: "{value}"']


def test_null_durations_are_zero_like_promtool(tmp_path):
    path = write(tmp_path / "null.yml", """
        groups:
          - name: g
            interval:
            rules:
              - alert: A
                expr: up == 0
                for:
                keep_firing_for: ~
        """)

    groups, errors = load_file(path)

    assert errors == []
    assert groups[0].rules[0].for_ms == 0


def test_unsupported_constructs_name_the_construct(tmp_path):
    path = write(tmp_path / "u.yml", """
        groups:
          - name: g
            rules:
              - alert: A
                expr: a * on(job) group_left b
              - alert: B
                expr: histogram_quantile(0.9, rate(x[5m]))
              - alert: C
                expr: max_over_time(x[1h:5m]) > 1
              - record: d
                expr: x offset -1m
        """)

    errors = errors_of(path)

    assert len(errors) == 4
    for error, construct in zip(errors, ["group_left", "function histogram_quantile()",
                                         "a subquery", "a negative offset"]):
        assert f"{construct} is not supported" in error
        assert "by the monitor's rule evaluator" in error
    assert errors[0].startswith(f'{path}: 5:15: group "g", rule 1, "A": ')


def test_templates_that_do_not_parse_are_errors_for_alerts_only(tmp_path):
    path = write(tmp_path / "t.yml", """
        groups:
          - name: g
            rules:
              - alert: A
                expr: up
                annotations:
                  summary: "{{ if }}"
                  ok: "{{ $value }}"
              - record: r
                expr: up
                labels: {x: "{{ unclosed"}
        """)

    errors = errors_of(path)

    assert len(errors) == 1
    assert errors[0].startswith(f'{path}: group "g", rule 1, "A": annotation "summary": '
                                "template: __alert_A:1: ")


def test_record_and_alert_both_missing_or_both_set(tmp_path):
    path = write(tmp_path / "r.yml", """
        groups:
          - name: g
            rules:
              - record: r
                alert: A
                expr: up
        """)

    assert errors_of(path) == [
        f"{path}: 4:17: 5:16: group \"g\", rule 1, \"A\": only one of 'record' and 'alert' must be set"]


@pytest.mark.parametrize("name", ["bad name", "1abc", "a-b", "a.b"])
def test_invalid_recording_rule_names(tmp_path, name):
    path = write(tmp_path / "n.yml", f"""
        groups:
          - name: g
            rules:
              - record: "{name}"
                expr: up
        """)

    assert errors_of(path) == [(f'{path}: 4:17: group "g", rule 1, "{name}": invalid recording '
                                f"rule name: {name}")]


def test_valid_names_with_colons(tmp_path):
    path = write(tmp_path / "n.yml", """
        groups:
          - name: g
            rules:
              - record: "job:rate5m:sum"
                expr: up
                labels: {_x: "1", A9: "b"}
        """)

    assert errors_of(path) == []


def test_yaml_syntax_errors_have_a_position(tmp_path):
    path = write(tmp_path / "y.yml", "groups:\n  - name: [\n")

    errors = errors_of(path)

    assert len(errors) == 1 and re.match(rf"^{re.escape(str(path))}: \d+:\d+: yaml: ", errors[0])


def test_wrong_shapes_are_errors(tmp_path):
    assert errors_of(write(tmp_path / "a.yml", "- 1\n- 2\n")) != []
    assert errors_of(write(tmp_path / "b.yml", "groups: 3\n")) != []
    assert errors_of(write(tmp_path / "c.yml", "groups:\n  - name: g\n    rules: 3\n")) != []
    assert errors_of(write(tmp_path / "d.yml", "groups:\n  - name: g\n    limit: x\n")) != []


def test_the_retention_warning_is_a_warning_not_an_error(tmp_path):
    path = write(tmp_path / "w.yml", """
        groups:
          - name: g
            rules:
              - alert: LongRange
                expr: rate(x[2h]) > 0
              - alert: Short
                expr: rate(x[5m]) > 0
        """)

    groups, errors = load_file(path, retention_ms=3_600_000)

    assert errors == []
    assert len(groups[0].rules) == 2
    assert groups[0].warnings == [
        (f'{path}: 5:15: group "g", rule 1, "LongRange": warning: the expression reads 2h back, '
         "more than the series store keeps (rules.retention_seconds = 1h); it sees only the history "
         "there is")]
    # without a retention, or with one long enough: no warning
    assert load_file(path)[0][0].warnings == []
    assert load_file(path, retention_ms=7_200_000)[0][0].warnings == []
    # load_files passes it on
    assert load_files([path], retention_ms=3_600_000)[0].warnings == groups[0].warnings


def test_warnings_belong_to_their_group(tmp_path):
    path = write(tmp_path / "w.yml", """
        groups:
          - name: a
            rules:
              - alert: A
                expr: x offset 2h
          - name: b
            rules:
              - alert: B
                expr: x
        """)

    groups, _ = load_file(path, retention_ms=3_600_000)

    assert len(groups[0].warnings) == 1 and "2h5m back" in groups[0].warnings[0]
    assert groups[1].warnings == []


# -- several files -------------------------------------------------------------------

def test_load_files_reports_every_error_of_every_file(tmp_path):
    a = write(tmp_path / "a.yml", BAD)
    b = write(tmp_path / "b.yml", "groups:\n  - name: g\n    rules:\n      - alert: X\n")
    c = write(tmp_path / "c.yml", GOOD)

    with pytest.raises(RuleLoadError) as info:
        load_files([a, b, c])

    errors = info.value.errors
    assert len(errors) == 3
    assert errors[0].startswith(f"{a}: ") and errors[1].startswith(f"{a}: ")
    assert errors[2] == f"{b}: 4:9: group \"g\", rule 1, \"X\": field 'expr' must be set in rule"
    assert str(info.value) == "\n".join(errors)


def test_folders_expand_to_yml_and_yaml_files_not_recursively(tmp_path):
    rules = tmp_path / "rules"
    (rules / "tests").mkdir(parents=True)
    write(rules / "b.yaml", "groups:\n  - name: b\n    rules: []\n")
    write(rules / "a.yml", "groups:\n  - name: a\n    rules: []\n")
    write(rules / "notes.txt", "not rules")
    write(rules / "c.yml.bak", "garbage: [")
    write(rules / "tests" / "t.yml", "garbage: [")  # promtool test files live here

    assert expand_paths([rules]) == [rules / "a.yml", rules / "b.yaml"]
    assert [g.name for g in load_files([rules])] == ["a", "b"]
    # a file is taken as given, whatever its name
    assert expand_paths([rules / "notes.txt"]) == [rules / "notes.txt"]


def test_a_missing_path_is_an_error_unless_missing_ok(tmp_path):
    missing = tmp_path / "nope"

    with pytest.raises(RuleLoadError) as info:
        load_files([missing])
    assert info.value.errors == [f"{missing}: no such file or folder"]
    with pytest.raises(RuleLoadError):
        expand_paths([missing])

    assert load_files([missing], missing_ok=True) == []
    assert expand_paths([missing], missing_ok=True) == []


def test_an_empty_folder_gives_no_groups(tmp_path):
    assert load_files([tmp_path]) == []


def test_load_files_returns_groups_in_order(tmp_path):
    a = write(tmp_path / "z.yml", GOOD)
    b = write(tmp_path / "y.yml", "groups:\n  - name: y\n    rules: []\n")

    groups = load_files([a, b], default_interval_ms=10_000)

    assert [(g.name, g.interval_ms) for g in groups] == [("quality", 30_000), ("other", 10_000),
                                                         ("y", 10_000)]
    assert all(isinstance(g, Group) for g in groups)


def test_a_file_that_cannot_be_read(tmp_path):
    path = tmp_path / "bin.yml"
    path.write_bytes(b"\xff\xfe\x00garbage")

    errors = errors_of(path)

    assert len(errors) == 1 and errors[0].startswith(f"{path}: ")


# -- durations ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, ms", [("0", 0), ("0s", 0), ("250ms", 250), ("90s", 90_000),
                                      ("1m30s", 90_000), ("1h", 3_600_000), ("1d", 86_400_000),
                                      ("1w", 604_800_000), ("1y", 31_536_000_000),
                                      ("1h30m15s10ms", 5_415_010)])
def test_parse_duration(text, ms):
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "1", "1x", "m", "1.5h", "1m1h", "-1s", " 1m"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("ms, text", [(0, "0s"), (90_000, "1m30s"), (3_600_000, "1h"),
                                      (1500, "1s500ms"), (86_400_000 + 1000, "1d1s"),
                                      (7_200_000 + 300_000, "2h5m")])
def test_format_duration(ms, text):
    assert format_duration(ms) == text
    assert parse_duration(text) == ms
