"""Unit tests of `monitor replay` through monitor.cli.main (DESIGN.md §8)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from monitor.cli import main
from monitor.replay import replay
from monitor.config import Config
from monitor.synthetic import traffic

START = 1_764_359_649.0  # 2025-11-28T19:54:09Z
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_stray_config(tmp_path, monkeypatch):
    """main() reads ./monitor.yaml when present: run every test in an empty directory."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


@pytest.fixture
def log_file(tmp_path):
    """A JSONL file with 600 messages, every 10th malformed; returns (path, messages)."""
    messages = list(traffic(600, start=START, malformed_every=10))
    path = tmp_path / "logs.jsonl"
    path.write_bytes(b"".join(m.value + b"\n" for m in messages))
    return path, messages


def run_replay(path, out) -> tuple[int, dict]:
    code = main(["replay", str(path), "--json-out", str(out)])
    return code, orjson.loads(out.read_bytes())


def test_replay_counts_accepted_and_rejected_exactly(log_file, tmp_path):
    path, messages = log_file
    out = tmp_path / "result.json"

    code, doc = run_replay(path, out)

    expected_accepted = sum(1 for m in messages if m.expected_reason is None)
    expected_rejected = sum(1 for m in messages if m.expected_reason is not None)
    assert code == 0
    assert doc["records"]["accepted"] == expected_accepted == 540
    assert doc["records"]["rejected"] == expected_rejected == 60
    assert isinstance(doc["alerts"], list)
    assert isinstance(doc["actions"], list)


def test_replay_counts_rejections_by_the_expected_reason(log_file, tmp_path):
    path, messages = log_file
    out = tmp_path / "result.json"

    _, doc = run_replay(path, out)

    expected: dict[str, int] = {}
    for m in messages:
        if m.expected_reason is not None:
            expected[m.expected_reason] = expected.get(m.expected_reason, 0) + 1
    assert doc["records"]["rejected_by_reason"] == expected


def test_replay_reports_every_domain_with_quality_and_latency(log_file, tmp_path):
    path, messages = log_file
    out = tmp_path / "result.json"

    _, doc = run_replay(path, out)

    per_domain: dict[str, int] = {}
    for m in messages:
        if m.expected_reason is None:
            per_domain[m.domain] = per_domain.get(m.domain, 0) + 1
    assert {d: v["records"] for d, v in doc["domains"].items()} == per_domain
    for domain in doc["domains"].values():
        assert 0 < domain["window_samples"] <= domain["records"]
        assert {"error_ratio", "refusal_ratio", "empty_output_ratio", "mean_logprob"} <= set(
            domain["quality"])
        assert set(domain["latency_seconds"]) == {"0.5", "0.9", "0.95", "0.99"}


def test_replay_is_deterministic(log_file, tmp_path):
    path, _ = log_file
    first, second = tmp_path / "a.json", tmp_path / "b.json"

    assert main(["replay", str(path), "--json-out", str(first)]) == 0
    assert main(["replay", str(path), "--json-out", str(second)]) == 0

    assert first.read_bytes() == second.read_bytes()


def test_replay_prints_a_summary(log_file, tmp_path, capsys):
    path, _ = log_file

    assert main(["replay", str(path), "--json-out", str(tmp_path / "r.json")]) == 0

    out = capsys.readouterr().out
    assert "540 accepted, 60 rejected" in out


def test_replay_json_to_stdout(log_file, capsys):
    path, _ = log_file

    assert main(["replay", str(path), "--json-out", "-"]) == 0

    doc = orjson.loads(capsys.readouterr().out)
    assert doc["records"] == {"accepted": 540, "rejected": 60,
                              "rejected_by_reason": doc["records"]["rejected_by_reason"]}


def test_replay_skips_blank_lines(tmp_path):
    path = tmp_path / "blank.jsonl"
    record = b'{"schema_version": 1, "timestamp": 0, "domain": "legal", "input": {"tokens": 1}}'
    path.write_bytes(b"\n" + record + b"\n\n   \n" + record + b"\r\n")

    _, doc = run_replay(path, tmp_path / "r.json")

    assert doc["records"]["accepted"] == 2 and doc["records"]["rejected"] == 0


def test_replay_of_an_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")

    code, doc = run_replay(path, tmp_path / "r.json")

    assert code == 0
    assert doc["records"] == {"accepted": 0, "rejected": 0, "rejected_by_reason": {}}
    assert doc["alerts"] == [] and doc["actions"] == []


def test_replay_examples_point_at_line_numbers(tmp_path):
    path = tmp_path / "two.jsonl"
    path.write_bytes(b'{"schema_version": 1, "timestamp": 0, "domain": "d", "input": {"tokens": 1}}\n'
                     b"{broken\n")

    result = replay(str(path), Config())

    assert result.rejected_examples == [
        {"line": 2, "reason": "invalid_json", "message": result.rejected_examples[0]["message"]}]


def test_replay_of_a_missing_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"

    code = main(["replay", str(missing), "--json-out", str(tmp_path / "r.json")])

    assert code == 2
    assert "nope.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_replay_with_a_bad_config_file_exits_2_and_prints_the_problem(log_file, tmp_path, capsys):
    path, _ = log_file
    config = tmp_path / "bad.yaml"
    config.write_text("windows:\n  bucket_seconds: 0\nkafka:\n  topik: x\n")

    code = main(["replay", str(path), "--config", str(config), "--json-out", str(tmp_path / "r.json")])

    err = capsys.readouterr().err
    assert code == 2
    assert "windows.bucket_seconds (line 2)" in err
    assert "kafka.topik (line 4): unknown field" in err
    assert not (tmp_path / "r.json").exists()


def test_replay_with_a_missing_config_file_exits_2(log_file, tmp_path, capsys):
    path, _ = log_file

    code = main(["replay", str(path), "--config", str(tmp_path / "none.yaml")])

    assert code == 2
    assert "none.yaml" in capsys.readouterr().err


def test_replay_uses_the_config_file(log_file, tmp_path):
    path, _ = log_file
    config = tmp_path / "small.yaml"
    config.write_text("windows:\n  max_domains: 1\n")

    code = main(["replay", str(path), "--config", str(config), "--json-out", str(tmp_path / "r.json")])
    doc = orjson.loads((tmp_path / "r.json").read_bytes())

    assert code == 0
    assert len(doc["domains"]) == 1
    assert doc["records"]["rejected_by_reason"]["domain_limit"] == 360


def test_unknown_command_is_bad_usage(capsys):
    assert main(["frobnicate"]) == 2


def test_missing_replay_file_argument_is_bad_usage(capsys):
    assert main(["replay"]) == 2


def test_version_exits_0(capsys):
    assert main(["--version"]) == 0


def test_ingest_path_does_not_import_torch():
    code = ("import monitor.cli, monitor.daemon, monitor.replay, monitor.pipeline; import sys; "
            "assert 'torch' not in sys.modules, 'torch was imported'")

    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=120)

    assert result.returncode == 0, result.stderr


def test_replay_accepts_event_times_far_apart_because_its_clock_is_the_records(tmp_path):
    from monitor.config import Config
    from monitor.replay import replay

    lines = [orjson.dumps({"schema_version": 1, "timestamp": int(t * 1000), "domain": "legal",
                           "input": {"tokens": 3}}) for t in (1.0e9, 1.0e9 + 10, 1.5e9, 1.5e9 + 5)]
    path = tmp_path / "gap.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    result = replay(str(path), Config())

    assert result.to_json()["records"]["accepted"] == 4
