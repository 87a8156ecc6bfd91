"""The default rule pack (rules/): valid for promtool and for us, and its unit tests
(rules/tests/) pass under both `promtool test rules` and `monitor rules test`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.rules.files import load_files

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "rules").glob("*.yml"))
TESTS = sorted((ROOT / "rules" / "tests").glob("*.yml"))
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def run(*command: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def promtool() -> str:
    if not os.access(PROMTOOL, os.X_OK):
        pytest.fail("promtool is missing: `make test` installs the Debian package prometheus")
    return PROMTOOL


def test_the_pack_has_rule_files_and_a_test_file_for_each():
    assert {p.stem for p in RULES} == {"drift", "quality", "golden", "health"}
    assert {p.stem for p in TESTS} == {f"{p.stem}_test" for p in RULES}


def test_every_alert_has_severity_action_and_a_runbook_in_docs():
    runbooks = (ROOT / "docs" / "rules.md").read_text()
    alerts = [r for g in load_files(RULES) for r in g.rules if r.kind == "alert"]
    assert len(alerts) >= 10
    for rule in alerts:
        assert rule.labels.get("severity") in {"warning", "critical"}, rule.name
        assert rule.labels.get("action") in {"alert", "rollback", "retrain", "reevaluate"}, rule.name
        assert rule.annotations["runbook"].endswith(f"docs/rules.md#{rule.name.lower()}")
        assert f"\n### {rule.name}\n" in runbooks, f"docs/rules.md has no runbook for {rule.name}"


@pytest.mark.parametrize("tool", ["promtool", "monitor"])
def test_the_rule_files_check(tool, promtool):
    command = ([promtool, "check", "rules"] if tool == "promtool"
               else [sys.executable, "-m", "monitor", "rules", "check"])
    result = run(*command, *map(str, RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("tool", ["promtool", "monitor"])
def test_the_unit_tests_pass(tool, promtool):
    command = ([promtool, "test", "rules"] if tool == "promtool"
               else [sys.executable, "-m", "monitor", "rules", "test"])
    result = run(*command, *map(str, TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TESTS)
