"""Unit tests of monitor.registry: reading and checking adapters/registry.yaml (DESIGN.md §7)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.registry import (Domain, Registry, RegistryError, Version, check_cron,
                              describe_domain, format_table, load_registry, resolve_inside)

# Line numbers in the tests below count from base_models (line 1) to v2 (line 11).
VALID = textwrap.dedent("""
    base_models:
      tiny-llama: {path: ../.cache/models/tiny-llama}
    domains:
      legal:
        base_model: tiny-llama
        kind: lora              # lora | full
        active: v2
        golden_set: legal/golden.jsonl
        versions:
          v1: {path: legal/v1, status: good}
          v2: {path: legal/v2}
""").lstrip("\n")


@pytest.fixture
def root(tmp_path) -> Path:
    """A registry folder holding legal/v2 (the active version) and the golden set."""
    folder = tmp_path / "adapters"
    (folder / "legal" / "v2").mkdir(parents=True)
    (folder / "legal" / "golden.jsonl").write_text('{"id": "1"}\n{"id": "2"}\n\n{"id": "3"}\n')
    return folder


def write(root: Path, text: str, name: str = "registry.yaml") -> Path:
    path = root / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(path) -> list[str]:
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    return info.value.problems


def only_problem(path) -> str:
    problems = problems_of(path)
    assert len(problems) == 1, problems
    return problems[0]


# -- a valid registry ------------------------------------------------------------------

def test_valid_registry_loads_with_resolved_absolute_paths(root):
    path = write(root, VALID)

    registry = load_registry(path)

    root = root.resolve()
    assert registry.path == root / "registry.yaml"
    assert registry.root == root
    assert registry.base_models["tiny-llama"].path == root.parent / ".cache/models/tiny-llama"
    legal = registry.domains["legal"]
    assert (legal.name, legal.base_model, legal.kind, legal.active) == ("legal", "tiny-llama",
                                                                        "lora", "v2")
    assert legal.golden_set == root / "legal/golden.jsonl"
    assert legal.schedule is None
    assert legal.versions == {"v1": Version("v1", root / "legal/v1", "good"),
                              "v2": Version("v2", root / "legal/v2", None)}
    assert legal.active_version() == legal.versions["v2"]


def test_relative_registry_path_is_read_against_the_working_directory(root, monkeypatch):
    write(root, VALID)
    monkeypatch.chdir(root.parent)

    registry = load_registry("adapters/registry.yaml")

    assert registry.root == root.resolve()
    assert registry.path.is_absolute()


def test_domain_without_active_version_serves_nothing_and_future_versions_need_no_folder(root):
    path = write(root, VALID.replace("active: v2", "active: null")
                 .replace("legal/v2}", "legal/v9, status: candidate}"))

    legal = load_registry(path).domains["legal"]

    assert legal.active is None
    assert legal.active_version() is None
    assert not legal.versions["v2"].path.exists()


def test_absent_active_and_empty_versions_load(root):
    path = write(root, """
        base_models: {m: {path: /models/m}}
        domains:
          legal: {base_model: m, kind: full, golden_set: legal/golden.jsonl, versions: {}}
    """)

    legal = load_registry(path).domains["legal"]

    assert (legal.active, legal.kind, legal.versions) == (None, "full", {})


def test_every_status_and_null_is_accepted(root):
    statuses = ("good", "bad", "candidate", "retired", "null")
    path = write(root, VALID.replace("active: v2", "active: null").replace(
        "      v2: {path: legal/v2}",
        "\n".join(f"      {s}: {{path: legal/{s}, status: {s}}}" for s in statuses)))

    versions = load_registry(path).domains["legal"].versions

    assert {v.status for v in versions.values()} == {"good", "bad", "candidate", "retired", None}


def test_schedule_is_a_five_field_cron_expression(root):
    path = write(root, VALID.replace("active: v2",
                                     "active: v2\n    schedule: '*/30 3 * * mon-fri'"))

    assert load_registry(path).domains["legal"].schedule == "*/30 3 * * mon-fri"


def test_registry_error_is_a_config_error_naming_the_file(root):
    path = write(root, VALID.replace("kind: lora", "kind: qlora"))

    with pytest.raises(ConfigError) as info:
        load_registry(path)

    assert isinstance(info.value, RegistryError)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: 1 error(s)\n  {path}: 6:11: ")


# -- refusals: each with file, line:col and the dotted field -------------------------

def test_unknown_keys_are_refused_with_a_suggestion(root):
    path = write(root, VALID.replace("kind: lora", "knd: lora")
                 .replace("status: good", "stauts: good")
                 .replace("tiny-llama: {path", "tiny-llama: {pth"))

    assert problems_of(path) == [
        f"{path}: 2:15: base_models.tiny-llama.path: required key is missing",
        f"{path}: 2:16: base_models.tiny-llama.pth: unknown key (did you mean 'path'?)",
        f"{path}: 5:5: domains.legal.kind: required key is missing",
        f"{path}: 6:5: domains.legal.knd: unknown key (did you mean 'kind'?)",
        f"{path}: 10:28: domains.legal.versions.v1.stauts: unknown key (did you mean 'status'?)",
    ]


def test_unknown_top_level_key_lists_the_expected_keys(root):
    path = write(root, VALID + "\nextras: 1\n")

    assert only_problem(path) == (f"{path}: 13:1: extras: unknown key "
                                  "(expected base_models, domains)")


def test_required_keys_must_be_present(root):
    path = write(root, """
        domains:
          legal:
            kind: lora
            versions:
              v1: {status: good}
    """)

    assert problems_of(path) == [
        f"{path}: 1:1: base_models: required key is missing",
        f"{path}: 3:5: domains.legal.base_model: required key is missing",
        f"{path}: 3:5: domains.legal.golden_set: required key is missing",
        f"{path}: 5:11: domains.legal.versions.v1.path: required key is missing",
    ]


def test_required_values_must_not_be_empty(root):
    path = write(root, VALID.replace("golden_set: legal/golden.jsonl", "golden_set:")
                 .replace("base_model: tiny-llama", "base_model: ''"))

    assert problems_of(path) == [
        f"{path}: 5:17: domains.legal.base_model: must not be empty",
        f"{path}: 8:16: domains.legal.golden_set: must not be empty",
    ]


def test_kind_must_be_lora_or_full(root):
    path = write(root, VALID.replace("kind: lora ", "kind: qlora"))

    assert only_problem(path) == (f"{path}: 6:11: domains.legal.kind: 'qlora' is not one of "
                                  "lora, full")


def test_base_model_must_name_a_defined_base_model(root):
    path = write(root, VALID.replace("base_model: tiny-llama", "base_model: tiny-lama"))

    assert only_problem(path) == (f"{path}: 5:17: domains.legal.base_model: no base model "
                                  "'tiny-lama' in base_models (defined: tiny-llama)")


def test_active_must_name_a_defined_version(root):
    path = write(root, VALID.replace("active: v2", "active: v3"))

    assert only_problem(path) == (f"{path}: 7:13: domains.legal.active: no version 'v3' in "
                                  "domains.legal.versions (defined: v1, v2)")


def test_active_version_cannot_be_retired(root):
    path = write(root, VALID.replace("legal/v2}", "legal/v2, status: retired}"))

    assert only_problem(path) == (f"{path}: 7:13: domains.legal.active: version 'v2' is "
                                  "retired; an active version cannot be")


def test_status_must_be_a_known_one(root):
    path = write(root, VALID.replace("status: good", "status: fine"))

    assert only_problem(path) == (f"{path}: 10:36: domains.legal.versions.v1.status: 'fine' is "
                                  "not one of good, bad, candidate, retired (or null)")


@pytest.mark.parametrize("bad", ["-legal", "le gal", "légal", "a" * 129, "_x"])
def test_domain_names_must_match_the_name_pattern(root, bad):
    path = write(root, VALID.replace("  legal:", f"  '{bad}':"))

    assert only_problem(path).startswith(f"{path}: 4:3: domains.{bad}: invalid name: must match "
                                         "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def test_version_names_must_match_the_name_pattern(root):
    path = write(root, VALID.replace("v1: {", "'v1/x': {"))

    assert only_problem(path).startswith(f"{path}: 10:7: domains.legal.versions.v1/x: invalid "
                                         "name")


def test_longest_name_and_dots_are_fine(root):
    name = "A" + "b.-_9" * 25 + "xy"
    assert len(name) == 128
    path = write(root, VALID.replace("v1: {", f"{name}: {{"))

    assert name in load_registry(path).domains["legal"].versions


def test_duplicate_keys_are_refused(root):
    path = write(root, VALID.replace("      v2: {path: legal/v2}",
                                     "      v2: {path: legal/v2}\n      v1: {path: legal/v1b}"))

    assert only_problem(path) == f"{path}: 12:7: domains.legal.versions.v1: duplicate key"


def test_wrong_shapes_are_refused(root):
    path = write(root, """
        base_models:
          m: /models/m
        domains:
          legal:
            base_model: [m]
            kind: lora
            golden_set: legal/golden.jsonl
            versions: [v1]
    """)

    assert problems_of(path) == [
        f"{path}: 2:6: base_models.m: must be a mapping",
        f"{path}: 5:17: domains.legal.base_model: must be a string",
        f"{path}: 8:15: domains.legal.versions: must be a mapping",
    ]


@pytest.mark.parametrize("schedule, message", [
    ("0 3 * *", "must have 5 fields (minute hour day-of-month month day-of-week), got 4"),
    ("60 * * * *", "minute: 60 is out of range 0-59"),
    ("0 3 * * funday", "day-of-week: 'funday' is not *, a number or a range"),
    ("*/0 * * * *", "minute: '*/0': the step must be a whole number > 0"),
    ("0 5-3 * * *", "hour: '5-3': the range runs backwards"),
])
def test_schedule_must_be_a_valid_cron_expression(root, schedule, message):
    path = write(root, VALID.replace("active: v2", f"active: v2\n    schedule: '{schedule}'"))

    assert only_problem(path) == f"{path}: 8:15: domains.legal.schedule: {message}"


@pytest.mark.parametrize("expression", ["* * * * *", "0 0 1 1 0", "59 23 31 12 7",
                                        "0,15,30,45 */2 1-15/3 jan-jun SUN", "5 4 * DEC sat"])
def test_check_cron_accepts_standard_expressions(expression):
    assert check_cron(expression) is None


def test_all_problems_are_reported_at_once_in_file_order(root):
    path = write(root, VALID.replace("kind: lora ", "kind: qlora")
                 .replace("active: v2", "active: v7")
                 .replace("legal/golden.jsonl", "../golden.jsonl")
                 .replace("status: good", "status: great"))

    problems = problems_of(path)

    assert len(problems) == 4
    assert [p.split(": ")[1:3] for p in problems] == [
        ["6:11", "domains.legal.kind"],
        ["7:13", "domains.legal.active"],
        ["8:17", "domains.legal.golden_set"],
        ["10:36", "domains.legal.versions.v1.status"],
    ]


# -- paths -----------------------------------------------------------------------------

def test_dotdot_escape_is_refused_for_versions_and_golden_sets(root):
    path = write(root, VALID.replace("path: legal/v1", "path: legal/../../v1")
                 .replace("golden_set: legal/golden.jsonl", "golden_set: ../golden.jsonl"))

    assert problems_of(path) == [
        (f"{path}: 8:17: domains.legal.golden_set: '../golden.jsonl' contains '..'; paths must "
         f"stay inside {root.resolve()}"),
        (f"{path}: 10:18: domains.legal.versions.v1.path: 'legal/../../v1' contains '..'; paths "
         f"must stay inside {root.resolve()}"),
    ]


def test_absolute_path_outside_the_root_is_refused(root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    path = write(root, VALID.replace("path: legal/v1", f"path: {outside}"))

    assert only_problem(path) == (f"{path}: 10:18: domains.legal.versions.v1.path: {outside} is "
                                  f"outside the registry root {root.resolve()}")


def test_absolute_path_inside_the_root_is_allowed(root):
    golden = root / "legal" / "golden.jsonl"
    path = write(root, VALID.replace("golden_set: legal/golden.jsonl", f"golden_set: {golden}"))

    assert load_registry(path).domains["legal"].golden_set == golden.resolve()


def test_symlinked_version_folder_leading_outside_is_refused(root, tmp_path):
    (tmp_path / "outside-v2").mkdir()
    (root / "legal" / "v2").rmdir()
    (root / "legal" / "v2").symlink_to(tmp_path / "outside-v2")
    path = write(root, VALID)

    assert only_problem(path) == (
        f"{path}: 11:18: domains.legal.versions.v2.path: 'legal/v2': {root.resolve()}/legal/v2 "
        f"is a symlink to {(tmp_path / 'outside-v2').resolve()}, outside the registry root "
        f"{root.resolve()}")


def test_symlinked_golden_set_leading_outside_is_refused(root, tmp_path):
    (tmp_path / "golden.jsonl").write_text("{}\n")
    (root / "legal" / "golden.jsonl").unlink()
    (root / "legal" / "golden.jsonl").symlink_to(tmp_path / "golden.jsonl")
    path = write(root, VALID)

    problem = only_problem(path)

    assert problem.startswith(f"{path}: 8:17: domains.legal.golden_set: 'legal/golden.jsonl': ")
    assert "is a symlink to" in problem and "outside the registry root" in problem


def test_symlinked_parent_folder_leading_outside_is_refused_even_when_linking_back(root,
                                                                                   tmp_path):
    # outside/v2 links back into the root: resolve() alone would end inside.
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "v2").symlink_to(root / "legal" / "v2")
    (root / "linked").symlink_to(tmp_path / "outside")
    path = write(root, VALID.replace("path: legal/v2", "path: linked/v2"))

    assert "domains.legal.versions.v2.path: 'linked/v2': " in only_problem(path)


def test_symlink_pointing_inside_the_root_is_allowed(root):
    (root / "current").symlink_to(root / "legal" / "v2")
    (root / "golden-link.jsonl").symlink_to("legal/golden.jsonl")
    path = write(root, VALID.replace("path: legal/v2", "path: current")
                 .replace("golden_set: legal/golden.jsonl", "golden_set: golden-link.jsonl"))

    legal = load_registry(path).domains["legal"]

    assert legal.versions["v2"].path == (root / "legal" / "v2").resolve()
    assert legal.golden_set == (root / "legal" / "golden.jsonl").resolve()


def test_base_model_path_may_point_anywhere(root, tmp_path):
    (tmp_path / "cache").mkdir()
    (root / "model-link").symlink_to(tmp_path / "cache")
    path = write(root, VALID.replace("tiny-llama: {path: ../.cache/models/tiny-llama}",
                                     "tiny-llama: {path: /opt/models/tiny}\n"
                                     "  linked: {path: model-link}"))

    models = load_registry(path).base_models

    assert models["tiny-llama"].path == Path("/opt/models/tiny")
    assert models["linked"].path == (tmp_path / "cache").resolve()


def test_active_version_folder_must_exist(root):
    path = write(root, VALID.replace("path: legal/v2", "path: legal/v3"))

    assert only_problem(path) == (f"{path}: 11:18: domains.legal.versions.v2.path: the active "
                                  f"version's folder {root.resolve()}/legal/v3 does not exist")


def test_active_version_must_be_a_folder(root):
    (root / "legal" / "v3").write_text("")
    path = write(root, VALID.replace("path: legal/v2", "path: legal/v3"))

    assert only_problem(path).endswith(f"{root.resolve()}/legal/v3 is not a folder")


def test_golden_set_must_exist_and_be_a_file(root):
    path = write(root, VALID.replace("legal/golden.jsonl", "legal/missing.jsonl"))
    assert only_problem(path) == (f"{path}: 8:17: domains.legal.golden_set: "
                                  f"{root.resolve()}/legal/missing.jsonl does not exist")

    path = write(root, VALID.replace("legal/golden.jsonl", "legal"))
    assert only_problem(path).endswith(f"{root.resolve()}/legal is not a file")


def test_resolve_inside_keeps_paths_in_the_root(tmp_path):
    assert resolve_inside(tmp_path, "a/b") == tmp_path.resolve() / "a/b"
    assert resolve_inside(tmp_path, str(tmp_path / "a")) == tmp_path.resolve() / "a"
    assert resolve_inside(tmp_path, "./a/./b") == tmp_path.resolve() / "a/b"
    with pytest.raises(ValueError, match=r"contains '\.\.'"):
        resolve_inside(tmp_path, "a/../b")  # even one that would stay inside
    with pytest.raises(ValueError, match="outside the registry root"):
        resolve_inside(tmp_path / "a", str(tmp_path / "b"))


def test_resolve_inside_accepts_an_absolute_path_through_a_symlinked_root(tmp_path):
    (tmp_path / "real" / "v1").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "real")

    assert resolve_inside(tmp_path / "real", str(tmp_path / "alias" / "v1")) == \
        (tmp_path / "real" / "v1").resolve()
    assert resolve_inside(tmp_path / "alias", str(tmp_path / "real" / "v1")) == \
        (tmp_path / "real" / "v1").resolve()


def test_resolve_inside_refuses_a_symlink_loop(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")

    with pytest.raises(ValueError, match="cannot be resolved"):
        resolve_inside(tmp_path, "loop/x")


# -- the file itself -------------------------------------------------------------------

def test_missing_registry_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    problem = only_problem("adapters/registry.yaml")

    assert problem == (f"adapters/registry.yaml: no registry file (looked for "
                       f"{tmp_path}/adapters/registry.yaml)")


def test_invalid_yaml_is_reported_with_line_and_column(root):
    path = write(root, VALID.replace("kind: lora ", "kind: [lora"))

    # PyYAML notices the unclosed list where the next token starts.
    assert only_problem(path) == (f"{path}: 7:5: not valid YAML: expected ',' or ']', but got "
                                  "'<scalar>'")


def test_unquoted_cron_star_is_a_yaml_error(root):
    path = write(root, VALID.replace("active: v2", "active: v2\n    schedule: */5 * * * *"))

    # `*` starts a YAML alias: a schedule starting with it must be quoted.
    assert only_problem(path) == (f"{path}: 8:16: not valid YAML: expected alphabetic or numeric "
                                  "character, but found '/'")


def test_empty_file_and_non_mapping_are_refused(root):
    assert only_problem(write(root, "")) == (f"{root}/registry.yaml: 1:1: (top level): the file "
                                             "is empty; a registry is a mapping with base_models "
                                             "and domains")
    assert only_problem(write(root, "- a\n")) == (f"{root}/registry.yaml: 1:1: (top level): "
                                                  "must be a mapping")


def test_a_folder_is_not_a_registry_file(root):
    assert "is a folder, not a registry file" in only_problem(root)


# -- printing --------------------------------------------------------------------------

def test_format_table_has_a_row_per_version_with_active_marker_and_verdicts(root):
    path = write(root, VALID + textwrap.indent(textwrap.dedent("""
        medical:
          base_model: tiny-llama
          kind: full
          golden_set: legal/golden.jsonl
          versions: {}
    """), "  "))
    registry = load_registry(path)

    table = format_table(registry, {("legal", "v2"): "regressed", ("legal", "v9"): "pass"})

    assert table.splitlines() == [
        "DOMAIN   VERSION  KIND  BASE MODEL  STATUS  ACTIVE  VERDICT",
        "legal    v1       lora  tiny-llama  good            -",
        "legal    v2       lora  tiny-llama  -       *       regressed",
        "medical  -        full  tiny-llama  -               -",
    ]


def test_format_table_of_an_empty_registry_is_the_header(tmp_path):
    registry = Registry(tmp_path / "registry.yaml", tmp_path, {}, {})

    assert format_table(registry) == "DOMAIN  VERSION  KIND  BASE MODEL  STATUS  ACTIVE  VERDICT"


def test_describe_domain_shows_fields_golden_set_count_and_versions(root):
    path = write(root, VALID.replace("active: v2", "active: v2\n    schedule: '0 3 * * *'"))
    registry = load_registry(path)
    r = root.resolve()

    text = describe_domain(registry, "legal", {("legal", "v1"): "pass"})

    assert text.splitlines() == [
        "domain:      legal",
        "kind:        lora",
        f"base model:  tiny-llama ({r.parent}/.cache/models/tiny-llama)",
        "active:      v2",
        f"golden set:  {r}/legal/golden.jsonl (3 items)",
        "schedule:    0 3 * * *",
        f"registry:    {r}/registry.yaml",
        "versions:",
        "  VERSION  STATUS  ACTIVE  VERDICT  PATH",
        f"  v1       good            pass     {r}/legal/v1",
        f"  v2       -       *       -        {r}/legal/v2",
    ]


def test_describe_domain_without_versions_or_golden_file(tmp_path):
    domain = Domain("legal", "m", "full", None, tmp_path / "gone.jsonl", {}, None)
    registry = Registry(tmp_path / "registry.yaml", tmp_path, {}, {"legal": domain})

    text = describe_domain(registry, "legal")

    assert "active:      - (serves no adapter)" in text
    assert f"golden set:  {tmp_path}/gone.jsonl (missing)" in text
    assert text.endswith("versions:    none")
    with pytest.raises(KeyError, match="no domain 'medical'"):
        describe_domain(registry, "medical")


def test_loading_the_registry_does_not_import_torch(root):
    path = write(root, VALID)
    code = ("import sys; from monitor.registry import load_registry, format_table; "
            f"format_table(load_registry({str(path)!r})); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, cwd=Path(__file__).parents[2],
                            env={**os.environ, "PYTHONPATH": "."})

    assert result.returncode == 0, result.stderr
