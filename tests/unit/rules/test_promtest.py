"""Unit tests of `monitor rules test` (monitor.rules.promtest), promtool 2.42's
rule unit-test format, and of the `monitor rules check|test` commands.

Expected values of the series notation and of the small test files were
checked against `promtool test rules` 2.42.0 (where noted).
"""

from __future__ import annotations

import math
import textwrap

import pytest

from monitor.cli import main
from monitor.rules.promtest import TestFileError as BadTestFile  # not a test class
from monitor.rules.promtest import expand_values, parse_series, run_file, run_files

# -- the series notation ------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1", [1.0]),
    ("1 2 3", [1.0, 2.0, 3.0]),
    ("1+2x3", [1.0, 3.0, 5.0, 7.0]),               # a+bxn: n+1 values
    ("5x2", [5.0, 5.0, 5.0]),                      # axn: n+1 values
    ("3x0", [3.0]),
    ("_", [None]),
    ("_x3", [None, None, None]),                   # _xn: n blanks
    ("_x0 7", [7.0]),
    ("_x2 4", [None, None, 4.0]),
    ("10-2x3", [10.0, 8.0, 6.0, 4.0]),             # negative steps
    ("-1-1x1", [-1.0, -2.0]),
    ("-5+2x2", [-5.0, -3.0, -1.0]),
    ("+5", [5.0]),
    ("1e3+1e2x2", [1000.0, 1100.0, 1200.0]),       # exponents are not steps
    ("1e+3-1x1", [1000.0, 999.0]),
    ("1e-3x1", [0.001, 0.001]),
    ("1.5e2", [150.0]),
    ("0x10", [0.0] * 11),                          # promtool reads "0 x 10" too
    ("1 stale 3", [1.0, "stale", 3.0]),
    ("1+1x2 5-1x1", [1.0, 2.0, 3.0, 5.0, 4.0]),
])
def test_expand_values(text, expected):
    assert expand_values(text) == expected


def test_steps_accumulate_by_repeated_float_addition_like_go():
    # Go: for i <= n { append(v); v += step } -> 0.1, 0.2, 0.30000000000000004, 0.4
    assert expand_values("0.1+0.1x3") == [0.1, 0.2, 0.1 + 0.1 + 0.1, 0.1 + 0.1 + 0.1 + 0.1]
    assert expand_values("0.1+0.1x3")[2] == 0.30000000000000004  # not 0.1 + 2 * 0.1 = 0.3
    values = expand_values("0+0.1x10")
    expected, v = [], 0.0
    for _ in range(11):
        expected.append(v)
        v += 0.1
    assert values == expected and values[-1] != 1.0


def test_special_floats():
    inf, minus_inf, nan = expand_values("Inf -Inf NaN")
    assert inf == math.inf and minus_inf == -math.inf and math.isnan(nan)


@pytest.mark.parametrize("text", ["abc", "1x", "1xa", "x3", "1+", "--1x2"])
def test_bad_values_are_refused(text):
    with pytest.raises(BadTestFile):
        expand_values(text)


def test_a_step_without_a_count_is_refused_like_promtool():
    with pytest.raises(BadTestFile):
        expand_values("1+2")


def test_parse_series():
    assert parse_series('up{job="a", instance="x:1"}') == (("__name__", "up"), ("instance", "x:1"),
                                                           ("job", "a"))
    assert parse_series('{__name__="up", job="a"}') == (("__name__", "up"), ("job", "a"))
    assert parse_series("up") == (("__name__", "up"),)
    assert parse_series('up{job=""}') == (("__name__", "up"),)
    assert parse_series('{job="a"}') == (("job", "a"),)
    assert parse_series("{}") == () and parse_series("") == ()
    assert parse_series('  x{a="b"}  ') == (("__name__", "x"), ("a", "b"))


@pytest.mark.parametrize("text", ['up{job=~"a"}', 'up{job!="a"}', "sum(up)", "up{", "up[5m]", "1"])
def test_parse_series_refuses_what_is_not_a_series(text):
    with pytest.raises(BadTestFile):
        parse_series(text)


# -- running test files -------------------------------------------------------------------

RULES = """
groups:
  - name: g
    rules:
      - record: job:x:sum
        expr: sum by (job) (x)
      - alert: High
        expr: job:x:sum > 10
        for: 2m
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.job }} at {{ $value }}"
"""


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def rules(tmp_path):
    return write(tmp_path, "rules.yml", RULES)


def test_file(tmp_path, body: str, name: str = "t_test.yml") -> str:
    return str(write(tmp_path, name, "rule_files: [rules.yml]\nevaluation_interval: 1m\n"
                     + textwrap.dedent(body).lstrip("\n")))


test_file.__test__ = False  # a helper, not a test


PASSING = """
tests:
  - interval: 1m
    input_series:
      - series: 'x{job="a", inst="1"}'
        values: '5 6 7 8 9'
      - series: 'x{job="a", inst="2"}'
        values: '5 6 7 8 9'
    alert_rule_test:
      - eval_time: 1m
        alertname: High
      - eval_time: 3m
        alertname: High
        exp_alerts:
          - exp_labels: {job: a, severity: page}
            exp_annotations: {summary: "a at 16"}
    promql_expr_test:
      - expr: job:x:sum
        eval_time: 4m
        exp_samples:
          - labels: 'job:x:sum{job="a"}'
            value: 18
      - expr: ALERTS
        eval_time: 4m
        exp_samples:
          - labels: 'ALERTS{alertname="High", alertstate="firing", job="a", severity="page"}'
            value: 1
"""


def test_a_passing_file(tmp_path, rules):
    # sums: 10, 12, 14, 16, 18 -> pending at 1m, firing at 3m (promtool: SUCCESS)
    result = run_file(test_file(tmp_path, PASSING))

    assert result.ok and result.errors == []


def test_a_failing_alert_test_says_what_was_expected_and_got(tmp_path, rules):
    path = test_file(tmp_path, PASSING.replace("eval_time: 3m", "eval_time: 2m"))

    result = run_file(path)

    assert not result.ok
    (error,) = result.errors
    assert error.startswith("    alertname: High, time: 2m, \n        exp:[")
    assert 'Labels:{alertname="High", job="a", severity="page"}' in error
    assert 'Annotations:{summary="a at 16"}' in error
    assert error.endswith("\n        got:[]")


def test_a_failing_alert_test_prints_like_promtool(tmp_path, rules):
    path = test_file(tmp_path, PASSING.replace("eval_time: 3m", "eval_time: 2m"))

    # promtool 2.42's text for this file, verbatim
    assert run_file(path).errors == [(
        "    alertname: High, time: 2m, \n"
        "        exp:[\n"
        "            0:\n"
        '              Labels:{alertname="High", job="a", severity="page"}\n'
        '              Annotations:{summary="a at 16"}\n'
        "            ], \n"
        "        got:[]")]


def test_a_failing_expr_test(tmp_path, rules):
    path = test_file(tmp_path, PASSING.replace("value: 18", "value: 17"))

    (error,) = run_file(path).errors

    assert error == ('    expr: "job:x:sum", time: 4m,\n'
                     '        exp: {__name__="job:x:sum", job="a"} 1.7E+01\n'
                     '        got: {__name__="job:x:sum", job="a"} 1.8E+01')


def test_alerts_between_evaluation_steps_are_those_of_the_step_before(tmp_path, rules):
    # evaluations at 0, 2m, 4m: at eval_time 3m59s the state is that of 2m (pending since 0,
    # fires at 2m), at 1m59s that of 0 (pending). promtool: SUCCESS.
    path = write(tmp_path, "t_test.yml", """
        rule_files: [rules.yml]
        evaluation_interval: 2m
        tests:
          - interval: 1m
            input_series:
              - series: 'x{job="a"}'
                values: '11x10'
            alert_rule_test:
              - eval_time: 1m59s
                alertname: High
              - eval_time: 2m
                alertname: High
                exp_alerts:
                  - exp_labels: {job: a, severity: page}
                    exp_annotations: {summary: "a at 11"}
              - eval_time: 3m59s
                alertname: High
                exp_alerts:
                  - exp_labels: {job: a, severity: page}
                    exp_annotations: {summary: "a at 11"}
        """)

    assert run_file(str(path)).errors == []


def test_the_evaluation_interval_defaults_to_1m(tmp_path, rules):
    path = write(tmp_path, "t_test.yml", """
        rule_files: [rules.yml]
        tests:
          - interval: 1m
            input_series:
              - series: 'x{job="a"}'
                values: '11x10'
            alert_rule_test:
              - eval_time: 1m59s
                alertname: High
              - eval_time: 2m
                alertname: High
                exp_alerts:
                  - exp_labels: {job: a, severity: page}
                    exp_annotations: {summary: "a at 11"}
        """)

    assert run_file(str(path)).errors == []


def test_without_an_interval_all_samples_are_at_0_and_the_first_is_kept(tmp_path, rules):
    # promtool 2.42: interval defaults to 0 -> 1, 2, 3 all at t=0, the first wins (SUCCESS)
    path = write(tmp_path, "t_test.yml", """
        rule_files: [rules.yml]
        tests:
          - input_series:
              - series: 'y'
                values: '1 2 3'
            promql_expr_test:
              - expr: y
                eval_time: 0
                exp_samples:
                  - labels: y
                    value: 1
              - expr: count_over_time(y[1h])
                eval_time: 1m
                exp_samples:
                  - labels: '{}'
                    value: 1
        """)

    assert run_file(str(path)).errors == []


def test_stale_and_blank_input_values(tmp_path, rules):
    path = write(tmp_path, "t_test.yml", """
        rule_files: [rules.yml]
        tests:
          - interval: 1m
            input_series:
              - series: 'y'
                values: '1 stale _ 4'
            promql_expr_test:
              - expr: y
                eval_time: 1m
                exp_samples: []
              - expr: y
                eval_time: 2m
                exp_samples: []
              - expr: y
                eval_time: 3m
                exp_samples:
                  - labels: y
                    value: 4
              - expr: count_over_time(y[1h])
                eval_time: 3m
                exp_samples:
                  - labels: '{}'
                    value: 2
        """)

    assert run_file(str(path)).errors == []


def test_external_labels_and_url_reach_the_templates(tmp_path):
    write(tmp_path, "rules.yml", """
        groups:
          - name: g
            rules:
              - alert: Ext
                expr: vector(1)
                annotations:
                  where: "{{ $externalLabels.env }} {{ $externalURL }}"
        """)
    path = write(tmp_path, "t_test.yml", """
        rule_files: [rules.yml]
        tests:
          - external_labels: {env: prod}
            external_url: http://monitor:9464
            alert_rule_test:
              - eval_time: 0
                alertname: Ext
                exp_alerts:
                  - exp_annotations: {where: "prod http://monitor:9464"}
        """)

    assert run_file(str(path)).errors == []


def test_an_evaluation_error_stops_the_test_group(tmp_path):
    write(tmp_path, "rules.yml", """
        groups:
          - name: g
            rules:
              - record: r
                expr: a + on(job) b
        """)
    path = write(tmp_path, "t_test.yml", """
        rule_files: [rules.yml]
        tests:
          - interval: 1m
            input_series:
              - {series: 'a{job="j"}', values: '1 1'}
              - {series: 'b{job="j", i="1"}', values: '1 1'}
              - {series: 'b{job="j", i="2"}', values: '1 1'}
            promql_expr_test:
              - expr: r
                eval_time: 1m
                exp_samples: []
        """)

    (error,) = run_file(str(path)).errors

    assert error.startswith("    rule: r, time: 0s, err: found duplicate series for the match group")


def test_rule_file_errors_are_reported(tmp_path):
    write(tmp_path, "rules.yml", "groups:\n  - name: g\n    rules:\n      - alert: X\n")
    path = test_file(tmp_path, "tests:\n  - alert_rule_test: []\n")

    assert run_file(path).errors == [
        f"{tmp_path / 'rules.yml'}: 4:9: group \"g\", rule 1, \"X\": field 'expr' must be set in rule"]


def test_rule_files_are_globbed_relative_to_the_test_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path, "sub/r1.yml", RULES)
    write(tmp_path, "sub/r2.yml", RULES.replace("name: g", "name: h"))
    path = write(tmp_path, "t_test.yml", """
        rule_files: ['sub/*.yml']
        tests:
          - interval: 1m
            input_series:
              - {series: 'x{job="a"}', values: '11x5'}
            alert_rule_test:
              - eval_time: 2m
                alertname: High
                exp_alerts:
                  - exp_labels: {job: a, severity: page}
                    exp_annotations: {summary: "a at 11"}
                  - exp_labels: {job: a, severity: page}
                    exp_annotations: {summary: "a at 11"}
        """)

    assert run_file(str(path)).errors == []   # one alert from each file's group


def test_a_missing_alertname_is_an_error(tmp_path, rules):
    path = test_file(tmp_path, """
        tests:
          - name: mine
            alert_rule_test:
              - eval_time: 5m
        """)

    assert run_file(path).errors == [("an item under alert_rule_test misses required attribute "
                                      "alertname at eval_time 5m (in TestGroup mine)")]


@pytest.mark.parametrize("body, field", [
    ("bogus: 1\ntests: []\n", "bogus"),
    ("tests:\n  - interval: 1m\n    input: []\n", "input"),
])
def test_unknown_fields_are_rejected(tmp_path, rules, body, field):
    path = test_file(tmp_path, body)

    (error,) = run_file(path).errors

    assert f"field {field} not found" in error


def test_group_eval_order_duplicates_are_rejected(tmp_path, rules):
    path = write(tmp_path, "t_test.yml", """
        rule_files: [rules.yml]
        group_eval_order: [g, h, g]
        tests: []
        """)

    assert run_file(str(path)).errors == ["group name repeated in evaluation order: g"]


def test_group_eval_order_lets_a_later_group_feed_an_earlier_one(tmp_path):
    write(tmp_path, "rules.yml", """
        groups:
          - name: alerting
            rules:
              - alert: Rec
                expr: rec > 0
          - name: recording
            rules:
              - record: rec
                expr: vector(1)
        """)
    body = """
        tests:
          - interval: 1m
            alert_rule_test:
              - eval_time: 0
                alertname: Rec
                exp_alerts:
                  - exp_labels: {}
        """
    ordered = write(tmp_path, "ordered_test.yml",
                    "rule_files: [rules.yml]\ngroup_eval_order: [recording, alerting]\n"
                    + textwrap.dedent(body))
    unordered = write(tmp_path, "unordered_test.yml",
                      "rule_files: [rules.yml]\n" + textwrap.dedent(body))

    assert run_file(str(ordered)).errors == []
    assert run_file(str(unordered)).errors != []   # file order: the alert runs first


def test_bad_series_values_and_yaml_are_errors_not_crashes(tmp_path, rules):
    bad_values = test_file(tmp_path, "tests:\n  - input_series:\n      - {series: x, values: 'a b'}\n")
    bad_yaml = write(tmp_path, "y_test.yml", "tests: [\n")

    assert len(run_file(bad_values).errors) == 1
    assert len(run_file(str(bad_yaml)).errors) == 1
    assert len(run_file(str(tmp_path / "missing_test.yml")).errors) == 1


def test_run_files(tmp_path, rules):
    good = test_file(tmp_path, PASSING, "good_test.yml")
    bad = test_file(tmp_path, PASSING.replace("value: 18", "value: 1"), "bad_test.yml")

    results = run_files([good, bad])

    assert [(r.path, r.ok) for r in results] == [(good, True), (bad, False)]


def test_label_values_are_read_as_yaml_strings_like_promtool(tmp_path):
    write(tmp_path, "rules.yml", """
        groups:
          - name: g
            rules:
              - alert: A
                expr: vector(1)
                labels: {critical: "true"}
                annotations: {"off": "no"}
        """)
    path = write(tmp_path, "t_test.yml", """
        rule_files: [rules.yml]
        tests:
          - alert_rule_test:
              - eval_time: 0
                alertname: A
                exp_alerts:
                  - exp_labels: {critical: true}
                    exp_annotations: {off: no}
        """)

    assert run_file(str(path)).errors == []


def test_input_series_keep_the_staleness_marker_bits(tmp_path, rules):
    # "stale" is written as Prometheus' marker, not a plain NaN: the series vanishes at once
    path = test_file(tmp_path, """
        tests:
          - interval: 1m
            input_series:
              - {series: 'x{job="a"}', values: '11 stale'}
            promql_expr_test:
              - expr: x
                eval_time: 1m
                exp_samples: []
        """)

    assert run_file(path).errors == []


# -- the commands -------------------------------------------------------------------------------

@pytest.fixture
def cwd(tmp_path, monkeypatch):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


def test_rules_check_exit_codes(tmp_path, rules, cwd, capsys):
    bad = write(tmp_path, "bad.yml", "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: sum(\n")

    assert main(["rules", "check", str(rules)]) == 0
    out = capsys.readouterr()
    assert out.out == f"Checking {rules}\n  SUCCESS: 2 rules found\n\n"

    assert main(["rules", "check", str(rules), str(bad)]) == 1
    out = capsys.readouterr()
    assert "SUCCESS: 2 rules found" in out.out
    assert f'{bad}: 5:15: group "g", rule 1, "X": could not parse expression' in out.err
    assert "FAILED:" in out.err

    assert main(["rules", "check", str(tmp_path / "missing.yml")]) == 1
    assert main(["rules", "check", str(tmp_path)]) == 1          # the folder holds bad.yml
    bad.unlink()
    assert main(["rules", "check", str(tmp_path)]) == 0          # rules.yml only (not t_test)


def test_rules_check_prints_retention_warnings_but_passes(tmp_path, cwd, capsys):
    path = write(tmp_path, "w.yml", "groups:\n  - name: g\n    rules:\n      - alert: L\n"
                                    "        expr: rate(x[2h]) > 0\n")

    assert main(["rules", "check", str(path)]) == 0
    assert "warning: the expression reads 2h back" in capsys.readouterr().err


def test_rules_check_needs_files(cwd, capsys):
    assert main(["rules", "check"]) == 2
    assert main(["rules"]) == 2


def test_rules_test_exit_codes(tmp_path, rules, cwd, capsys):
    good = test_file(tmp_path, PASSING, "good_test.yml")
    bad = test_file(tmp_path, PASSING.replace("value: 18", "value: 1"), "bad_test.yml")

    assert main(["rules", "test", good]) == 0
    out = capsys.readouterr()
    assert out.out == f"Unit Testing:  {good}\n  SUCCESS\n\n"

    assert main(["rules", "test", good, bad]) == 1
    out = capsys.readouterr()
    assert "FAILED:" in out.err and 'expr: "job:x:sum", time: 4m' in out.err

    assert main(["rules", "test", str(tmp_path / "missing_test.yml")]) == 1
    assert main(["rules", "test"]) == 2
