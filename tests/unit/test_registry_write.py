"""Unit tests of monitor.registry.write: changing adapters/registry.yaml atomically,
keeping its comments and layout, under a lock (docs/registry.md, "Writing the registry")."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from monitor.registry import (RegistryError, load_registry, registry_lock, set_active,
                              set_status, update_registry)

REGISTRY = textwrap.dedent("""
    # Adapter registry: this comment is kept
    base_models:
      tiny-llama: {path: ../models/tiny-llama}   # a model cache

    domains:
      legal:
        base_model: tiny-llama
        kind: lora
        active: v1          # trailing comments kept
        # between keys
        golden_set: legal/golden.jsonl
        schedule: "0 * * * *"
        versions:
          v1: {path: legal/v1, status: good}
          v2: {path: legal/v2}   # corrupted
          v3: {path: legal/v3, status: retired}
          v4: {path: legal/v4, status: candidate}   # no folder yet
      medical:
        base_model: tiny-llama
        kind: full   # no active key
        golden_set: medical/golden.jsonl
        versions:
          m1:
            path: medical/m1
            status: bad   # it regressed

          # the next one
          m2: {path: medical/m2}
""").lstrip("\n")


@pytest.fixture
def path(tmp_path) -> Path:
    """A valid registry; legal/v4 and legal/v3 have no folder."""
    root = tmp_path / "adapters"
    for folder in ("legal/v1", "legal/v2", "medical/m1", "medical/m2"):
        (root / folder).mkdir(parents=True)
    for domain in ("legal", "medical"):
        (root / domain / "golden.jsonl").write_text('{"id": "1"}\n')
    file = root / "registry.yaml"
    file.write_text(REGISTRY, encoding="utf-8")
    load_registry(file)  # the starting point is valid
    return file


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """(old, new) of each changed line; both texts must have the same lines otherwise."""
    old, new = before.splitlines(), after.splitlines()
    assert len(old) == len(new), (before, after)
    return [(a, b) for a, b in zip(old, new) if a != b]


def leftovers(path: Path) -> list[str]:
    """Files of the registry folder other than the registry, its lock and the adapters."""
    return sorted(p.name for p in path.parent.iterdir()
                  if p.name not in {"registry.yaml", ".registry.yaml.lock", "legal", "medical"})


def fingerprint(path: Path) -> tuple:
    st = path.stat()
    return path.read_bytes(), st.st_ino, st.st_mtime_ns


# -- set_active ------------------------------------------------------------------------

def test_set_active_changes_exactly_one_line_and_keeps_comments_and_flow_style(path):
    previous, new = set_active(path, "legal", "v2")

    assert (previous, new) == ("v1", "v2")
    assert changed_lines(REGISTRY, path.read_text()) == [
        ("    active: v1          # trailing comments kept",
         "    active: v2          # trailing comments kept")]
    assert load_registry(path).domains["legal"].active == "v2"
    assert leftovers(path) == []


def test_set_active_adds_a_missing_active_key_after_kind(path):
    assert set_active(path, "medical", "m2") == (None, "m2")

    old, new = REGISTRY.splitlines(), path.read_text().splitlines()
    at = old.index("    kind: full   # no active key") + 1
    assert new == old[:at] + ["    active: m2"] + old[at:]
    assert load_registry(path).domains["medical"].active == "m2"


def test_a_bad_version_may_be_made_active(path):
    assert set_active(path, "medical", "m1") == (None, "m1")
    assert load_registry(path).domains["medical"].active_version().status == "bad"


def test_setting_the_active_version_again_writes_nothing(path):
    before = fingerprint(path)

    assert set_active(path, "legal", "v1") == ("v1", "v1")

    assert fingerprint(path) == before


@pytest.mark.parametrize("domain, version, message", [
    ("tax", "v1", "domains.tax: no domain 'tax' in domains (defined: legal, medical)"),
    ("legal", "v9", "no version 'v9' in domains.legal.versions (defined: v1, v2, v3, v4)"),
    ("legal", "v3", "legal/v3 is retired; a retired version cannot be made active"),
])
def test_unknown_domain_or_version_and_retired_versions_are_refused(path, domain, version,
                                                                    message):
    before = fingerprint(path)

    with pytest.raises(RegistryError) as info:
        set_active(path, domain, version)

    [problem] = info.value.problems
    assert problem.startswith(f"{path}:") and message in problem
    assert fingerprint(path) == before


def test_expect_guards_against_a_change_in_between(path):
    before = fingerprint(path)

    with pytest.raises(RegistryError, match=r"expected legal/v2 but legal/v1 is active now"):
        set_active(path, "legal", "v1", expect="v2")
    with pytest.raises(RegistryError, match=r"expected no active version but legal/v1"):
        set_active(path, "legal", "v2", expect=None)
    with pytest.raises(RegistryError, match=r"expected medical/m1 but medical has no active"):
        set_active(path, "medical", "m2", expect="m1")

    assert fingerprint(path) == before
    assert set_active(path, "legal", "v2", expect="v1") == ("v1", "v2")
    assert set_active(path, "medical", "m2", expect=None) == (None, "m2")


def test_a_change_that_makes_the_registry_invalid_is_refused_and_leaves_no_trace(path):
    before = fingerprint(path)

    with pytest.raises(RegistryError) as info:
        set_active(path, "legal", "v4")  # its folder does not exist

    [problem] = info.value.problems
    assert problem.startswith(f"{path}: ")
    assert "domains.legal.versions.v4.path: the active version's folder" in problem
    assert "does not exist" in problem
    assert fingerprint(path) == before
    assert leftovers(path) == []


def test_quotes_indentation_and_a_document_start_are_kept(path):
    text = ("# before the document start\n---\n" + REGISTRY.replace("  ", "    ")
            .replace("active: v1 ", 'active: "v1"'))
    path.write_text(text)

    set_active(path, "legal", "v2")

    [old] = [line for line in text.splitlines() if "active:" in line]
    assert old.startswith('        active: "v1"   ') and old.endswith("# trailing comments kept")
    assert changed_lines(text, path.read_text()) == [(old, old.replace('"v1"', '"v2"'))]


def test_windows_line_ends_are_kept(path):
    text = REGISTRY.replace("\n", "\r\n")
    path.write_bytes(text.encode())

    set_active(path, "legal", "v2")

    assert path.read_bytes() == text.replace("active: v1 ", "active: v2 ").encode()


def test_a_symlinked_registry_stays_a_symlink(path):
    link = path.parent / "current.yaml"
    link.symlink_to(path.name)

    set_active(link, "legal", "v2")

    assert link.is_symlink()
    assert load_registry(path).domains["legal"].active == "v2"
    assert not list(path.parent.glob("*.tmp")) and not list(path.parent.glob(".*.tmp"))


# -- set_status ------------------------------------------------------------------------

def test_set_status_adds_a_key_to_a_flow_mapping(path):
    set_status(path, "legal", "v2", "bad")

    [(old, new)] = changed_lines(REGISTRY, path.read_text())
    assert old == "      v2: {path: legal/v2}   # corrupted"
    assert new.startswith("      v2: {path: legal/v2, status: bad}") and new.endswith("# corrupted")
    assert load_registry(path).domains["legal"].versions["v2"].status == "bad"


def test_removing_a_status_keeps_the_comments_and_blank_lines_after_it(path):
    set_status(path, "medical", "m1", None)

    old = REGISTRY.splitlines()
    old.remove("        status: bad   # it regressed")
    assert path.read_text().splitlines() == old
    assert load_registry(path).domains["medical"].versions["m1"].status is None


def test_set_status_refuses_unknown_statuses_and_invalid_results(path):
    before = fingerprint(path)

    with pytest.raises(RegistryError, match="'great' is not one of good, bad, candidate, retired"):
        set_status(path, "legal", "v1", "great")
    with pytest.raises(RegistryError, match="version 'v1' is retired; an active version cannot"):
        set_status(path, "legal", "v1", "retired")
    with pytest.raises(RegistryError, match="no version 'v7'"):
        set_status(path, "legal", "v7", "good")

    assert fingerprint(path) == before
    set_status(path, "legal", "v1", "good")  # the same again: nothing written
    assert fingerprint(path) == before


# -- update_registry -------------------------------------------------------------------

def test_update_registry_returns_the_new_registry_and_keeps_the_file_mode(path):
    path.chmod(0o640)

    def edit(doc):
        doc["domains"]["legal"]["schedule"] = "5 * * * *"

    with registry_lock(path):
        registry = update_registry(path, edit)

    assert registry.domains["legal"].schedule == "5 * * * *"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert leftovers(path) == []


def test_an_invalid_edit_leaves_the_file_byte_identical(path):
    before = fingerprint(path)

    def edit(doc):
        doc["domains"]["legal"]["kind"] = "qlora"

    with pytest.raises(RegistryError, match=r"registry.yaml: \d+:\d+: domains.legal.kind: "
                                            "'qlora' is not one of lora, full"):
        update_registry(path, edit)

    assert fingerprint(path) == before
    assert leftovers(path) == []


def test_a_failed_replace_leaves_the_original_and_no_temp_file(path, monkeypatch):
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(RegistryError, match="cannot write .*No space left on device"):
        set_active(path, "legal", "v2")

    class Crash(BaseException):
        pass

    def crashing_replace(src, dst):
        raise Crash

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(Crash):
        set_active(path, "legal", "v2")

    assert path.read_bytes() == before
    assert leftovers(path) == []


def test_an_unreadable_registry_is_reported_with_its_file(path):
    path.write_text("domains: [\n")

    with pytest.raises(RegistryError, match=r"registry.yaml: 2:1: not valid YAML"):
        set_active(path, "legal", "v2")
    with pytest.raises(RegistryError, match="no registry file"):
        set_active(path.with_name("missing.yaml"), "legal", "v2")


# -- the lock --------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from monitor.registry import registry_lock
with registry_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_the_lock_excludes_another_process(path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == "locked\n"
        assert (path.parent / ".registry.yaml.lock").is_file()

        with (pytest.raises(RegistryError, match="not locked within 0.2 s: another process"),
              registry_lock(path, timeout=0.2)):
            pass
    finally:
        holder.stdin.close()  # the holder lets go
        holder.wait(timeout=10)

    with registry_lock(path, timeout=5):
        pass


def test_the_lock_excludes_other_threads_and_is_reentrant(path):
    with registry_lock(path):
        with registry_lock(path, timeout=0):  # the same thread again
            assert set_active(path, "legal", "v2") == ("v1", "v2")
        failures = []

        def other():
            try:
                with registry_lock(path, timeout=0.1):
                    pass
            except RegistryError as exc:
                failures.append(str(exc))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(failures) == 1 and "another thread of this process" in failures[0]


def test_no_update_is_lost_between_threads(path):
    def minute(registry) -> int:
        return int(registry.domains["legal"].schedule.split()[0])

    def increment():
        for _ in range(20):
            with registry_lock(path):
                schedule = f"{minute(load_registry(path)) + 1} * * * *"

                def edit(doc, schedule=schedule):
                    doc["domains"]["legal"]["schedule"] = schedule

                update_registry(path, edit)

    threads = [threading.Thread(target=increment) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert minute(load_registry(path)) == 40
    assert leftovers(path) == []
