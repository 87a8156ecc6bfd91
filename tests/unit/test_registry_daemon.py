"""The registry in the daemon (monitor_adapter_active_info, reloads) and
`monitor adapters list|show`."""

from __future__ import annotations

import urllib.request

import pytest

from monitor.cli import main
from monitor.daemon import Daemon
from monitor.ingest.dlq import MemoryDeadLetters
from monitor.registry import RegistryError
from tests.unit.test_daemon import FakeSource, Running, make_config

REGISTRY = """\
base_models:
  tiny-llama: {path: /models/tiny-llama}
domains:
  legal:
    base_model: tiny-llama
    kind: lora
    active: ACTIVE
    golden_set: legal/golden.jsonl
    versions:
      v1: {path: legal/v1, status: good}
      v2: {path: legal/v2}
"""


def write_registry(root, active="v2", text=REGISTRY):
    for version in ("v1", "v2"):
        (root / "legal" / version).mkdir(parents=True, exist_ok=True)
    (root / "legal" / "golden.jsonl").write_text('{"id": "1", "prompt": "p", "reference": "r"}\n')
    path = root / "registry.yaml"
    path.write_text(text.replace("ACTIVE", active))
    return path


def active_info(daemon) -> list[str]:
    with urllib.request.urlopen(daemon.http.url + "/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return [line for line in text.splitlines() if line.startswith("monitor_adapter_active_info{")]


def test_the_daemon_exports_the_active_version_and_reloads_it(tmp_path):
    path = write_registry(tmp_path)
    with Running(make_config(tmp_path), FakeSource(), MemoryDeadLetters(),
                 registry_path=str(path)) as running:
        running.wait_for(lambda: running.daemon.http is not None and running.daemon.ready()[0])
        assert active_info(running.daemon) == [
            'monitor_adapter_active_info{base_model="tiny-llama",domain="legal",kind="lora",'
            'version="v2"} 1.0']
        write_registry(tmp_path, active="v1")
        assert running.daemon.reload()[0]
        assert 'version="v1"' in active_info(running.daemon)[0]
        # A broken registry is not taken: the previous one stays in use.
        path.write_text(REGISTRY.replace("ACTIVE", "v9"))
        ok, errors = running.daemon.reload()
        assert not ok and any("registry.yaml" in e for e in errors)
        assert 'version="v1"' in active_info(running.daemon)[0]
        assert running.stop() == 0


def test_a_bad_registry_stops_the_start(tmp_path):
    path = write_registry(tmp_path, active="v9")
    daemon = Daemon(make_config(tmp_path), registry_path=str(path))
    with pytest.raises(RegistryError, match="active"):
        daemon.load_rules()


def test_without_the_default_registry_there_is_no_adapter_info(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    daemon = Daemon(make_config(tmp_path))
    assert daemon.load_registry() and daemon.adapters.registry is None
    assert [f.samples for f in daemon.adapters.collect()] == [[]]


def test_adapters_list_and_show(tmp_path, capsys):
    path = write_registry(tmp_path)
    assert main(["adapters", "list", "--registry", str(path)]) == 0
    out = capsys.readouterr().out
    assert "legal" in out and "v1" in out and "v2" in out and "*" in out
    assert main(["adapters", "show", "legal", "--registry", str(path)]) == 0
    out = capsys.readouterr().out
    assert "golden.jsonl" in out and "tiny-llama" in out
    assert main(["adapters", "show", "medical", "--registry", str(path)]) == 2
    assert "no domain 'medical'" in capsys.readouterr().err


def test_adapters_commands_report_a_bad_registry_with_exit_2(tmp_path, capsys):
    path = write_registry(tmp_path, active="v9")
    assert main(["adapters", "list", "--registry", str(path)]) == 2
    err = capsys.readouterr().err
    assert "registry.yaml" in err and "active" in err


def test_references_follow_the_active_version(tmp_path):
    """After a rollback the domain's drift reference is the new version's: built
    from the next records when it has none, the stored one when it has."""
    import time

    import orjson

    from monitor.registry import set_active
    from monitor.state import StateStore
    from tests.unit.test_daemon import messages

    path = write_registry(tmp_path, active="v2")
    config = make_config(tmp_path)
    config = config.model_copy(update={"drift": config.drift.model_copy(
        update={"reference_records": 50})})
    now = time.time()

    def batch(first: int):
        return [messages(0, [orjson.dumps({"schema_version": 1, "timestamp": (now - 100 + i / 100) * 1000,
                                           "domain": "legal", "input": {"tokens": 10 + i % 7}})
                             for i in range(first, first + 60)], first_offset=first)]

    source = FakeSource([batch(0)])
    store = StateStore(config.state.url)
    with Running(config, source, MemoryDeadLetters(), registry_path=str(path)) as running:
        daemon = running.daemon

        def reference_of(version):
            return store.references("legal").get(("legal", version))

        running.wait_for(lambda: reference_of("v2") is not None, what="v2's reference")
        v2 = reference_of("v2")
        assert daemon.action_service is not None
        action, _ = daemon.action_service.request("legal", "rollback", actor="cli:test",
                                                  params={"to": "v1"})
        assert action["status"] == "executed"
        running.wait_for(lambda: daemon.pipeline.drift.versions.get("legal") == "v1",
                         what="the switch to v1")
        assert "legal" not in daemon.pipeline.drift.references  # rebuilt from new records
        source.add(batch(60))
        running.wait_for(lambda: reference_of("v1") is not None, what="v1's reference")
        assert store.active_reference_ids() == {"legal": reference_of("v1").id}

        set_active(path, "legal", "v2")  # by hand: the stored v2 reference comes back
        running.wait_for(lambda: store.active_reference_ids() == {"legal": v2.id},
                         what="v2's stored reference active again")
        assert daemon.pipeline.drift.references["legal"].id == v2.id
    store.close()
