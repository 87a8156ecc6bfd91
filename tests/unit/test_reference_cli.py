"""Unit tests of `monitor reference build` and `monitor reference show` through monitor.cli.main."""

from __future__ import annotations

import re
import sys

import orjson
import pytest

from monitor.cli import main
from monitor.state import StateStore
from monitor.synthetic import traffic

START = 1_764_359_649.0  # 2025-11-28T19:54:09Z


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """An empty working directory (main() reads ./monitor.yaml) and a state store in tmp_path."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MONITOR_STATE_URL", f"sqlite:///{tmp_path / 'state.db'}")


@pytest.fixture
def config_file(tmp_path):
    """Semantic drift off: these tests never load torch."""
    path = tmp_path / "monitor.yaml"
    path.write_text("drift:\n  embeddings:\n    enabled: false\n", encoding="utf-8")
    return str(path)


@pytest.fixture
def log_file(tmp_path):
    """600 synthetic messages (200 per domain: legal, medical, support) and one malformed line."""
    messages = list(traffic(600, start=START))
    lines = [m.value for m in messages]
    lines.insert(17, b"{not json")
    path = tmp_path / "logs.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return str(path)


def build(config_file, log_file, *extra) -> int:
    return main(["reference", "build", "--config", config_file, "--domain", "legal", log_file,
                 *extra])


def show(config_file, domain, *extra) -> int:
    return main(["reference", "show", "--config", config_file, domain, *extra])


def stored_references(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        return store.references(), store.active_reference_ids()
    finally:
        store.close()


# -- build ---------------------------------------------------------------------------

def test_build_stores_the_reference_and_makes_it_active(config_file, log_file, tmp_path, capsys):
    torch_before = "torch" in sys.modules

    code = build(config_file, log_file, "--version", "v2")

    out = capsys.readouterr().out
    assert code == 0
    match = re.search(r"reference ([0-9a-f]{16}) for domain legal \(version v2\) built from "
                      r"200 records of (\S+); now active", out)
    assert match, out
    assert match.group(2) == log_file
    references, active = stored_references(tmp_path)
    assert set(references) == {("legal", "v2")}
    assert active == {"legal": match.group(1)}
    assert references[("legal", "v2")].count == 200
    assert references[("legal", "v2")].texts == []  # embeddings disabled
    if not torch_before:
        assert "torch" not in sys.modules


def test_build_counts_the_rejected_line(config_file, log_file, capsys):
    assert build(config_file, log_file) == 0

    out = capsys.readouterr().out
    assert "skipped 1 rejected line(s): invalid_json 1" in out
    assert "(version -)" in out


def test_build_prints_the_reference_profile(config_file, log_file, capsys):
    assert build(config_file, log_file) == 0

    out = capsys.readouterr().out
    for feature in ("prompt_tokens", "latency_seconds", "finish_reason", "status"):
        line = rf"^  {feature}\s+(numeric|categorical)"
        assert re.search(line, out, re.MULTILINE), (feature, out)


def test_build_respects_limit(config_file, log_file, tmp_path, capsys):
    assert build(config_file, log_file, "--limit", "50") == 0

    out = capsys.readouterr().out
    assert "built from 50 records" in out
    assert "ignored 150 record(s) past --limit 50" in out
    references, _ = stored_references(tmp_path)
    assert references[("legal", "")].count == 50


def test_a_second_version_becomes_the_only_active_one(config_file, log_file, tmp_path, capsys):
    assert build(config_file, log_file, "--version", "v1") == 0
    assert build(config_file, log_file, "--version", "v2") == 0

    references, active = stored_references(tmp_path)
    assert set(references) == {("legal", "v1"), ("legal", "v2")}
    assert active == {"legal": references[("legal", "v2")].id}


def test_build_of_a_missing_file_exits_2(config_file, tmp_path, capsys):
    code = build(config_file, str(tmp_path / "nope.jsonl"))

    assert code == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err


def test_build_of_a_file_without_the_domain_exits_1_naming_the_domains_seen(config_file, log_file,
                                                                           tmp_path, capsys):
    code = main(["reference", "build", "--config", config_file, "--domain", "finance", log_file])

    err = capsys.readouterr().err
    assert code == 1
    assert "'finance'" in err
    for domain in ("legal (200)", "medical (200)", "support (200)"):
        assert domain in err
    assert "1 rejected" in err
    assert stored_references(tmp_path) == ({}, {})


def test_build_with_a_bad_config_exits_2(tmp_path, log_file, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("drift:\n  embeddings:\n    enabled: false\n  bins: 1\n", encoding="utf-8")

    code = build(str(bad), log_file)

    assert code == 2
    assert "drift.bins" in capsys.readouterr().err


# -- show ----------------------------------------------------------------------------

def test_show_prints_the_features_of_the_reference(config_file, log_file, capsys):
    assert build(config_file, log_file, "--version", "v2") == 0
    reference_id = re.search(r"reference ([0-9a-f]{16})", capsys.readouterr().out).group(1)

    code = show(config_file, "legal")

    out = capsys.readouterr().out
    assert code == 0
    assert f"domain legal  version v2  reference {reference_id} (active)" in out
    assert "200 records from 2025-11-28T19:54:09.000Z" in out
    for feature in ("prompt_tokens", "prompt_chars", "output_tokens", "latency_seconds",
                    "mean_logprob", "feedback_score", "finish_reason", "status"):
        assert re.search(rf"^  {feature}\s", out, re.MULTILINE), (feature, out)
    assert "embedding        0 sampled prompt texts" in out


def test_show_json_is_valid_and_marks_the_active_reference(config_file, log_file, capsys):
    assert build(config_file, log_file, "--version", "v2") == 0
    capsys.readouterr()

    code = show(config_file, "legal", "--json")

    doc = orjson.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["active"] is True
    assert (doc["domain"], doc["version"], doc["records"]) == ("legal", "v2", 200)
    assert set(doc["numeric"]) >= {"prompt_tokens", "latency_seconds"}
    assert set(doc["categorical"]) == {"finish_reason", "status"}
    assert doc["time_range"][0] == "2025-11-28T19:54:09.000Z"


def test_show_json_lists_every_version_with_one_active(config_file, log_file, capsys):
    assert build(config_file, log_file, "--version", "v1") == 0
    assert build(config_file, log_file, "--version", "v2", "--limit", "100") == 0
    capsys.readouterr()

    assert show(config_file, "legal", "--json") == 0

    docs = orjson.loads(capsys.readouterr().out)
    assert [(d["version"], d["active"]) for d in docs] == [("v1", False), ("v2", True)]


def test_show_of_an_unknown_domain_exits_1_and_says_how_to_build_one(config_file, log_file, capsys):
    assert build(config_file, log_file) == 0
    capsys.readouterr()

    code = show(config_file, "nope")

    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert "'nope'" in captured.err
    assert "monitor reference build --domain nope" in captured.err


def test_show_on_an_empty_store_exits_1(config_file, capsys):
    assert show(config_file, "legal") == 1
    assert "no reference for domain 'legal'" in capsys.readouterr().err
