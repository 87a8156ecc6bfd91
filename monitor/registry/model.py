"""The adapter registry, `adapters/registry.yaml` (DESIGN.md §7; docs/registry.md).

Read once, at the edge, into frozen objects. Every problem of the file is
reported at once, each with the file, line:col and the dotted field path:

    adapters/registry.yaml: 6:11: domains.legal.kind: 'qlora' is not one of lora, full

A file with any problem gives no registry at all (`RegistryError`), never a
partial one. Version and golden-set paths stay inside the registry root (the
folder holding registry.yaml); base model paths may point anywhere.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from monitor.errors import ConfigError, yaml_error_where

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # base models, domains, versions
KINDS = ("lora", "full")
# None: not evaluated yet. good: evaluated and fit to serve (a rollback target).
# bad: regressed or rolled back from. candidate: waiting for evaluation or promotion.
# retired: kept for the record; its folder may be gone.
STATUSES = ("good", "bad", "candidate", "retired")

_TOP_KEYS = ("base_models", "domains")
_BASE_MODEL_KEYS = ("path",)
_DOMAIN_KEYS = ("base_model", "kind", "active", "golden_set", "versions", "schedule")
_DOMAIN_REQUIRED = ("base_model", "kind", "golden_set", "versions")
_VERSION_KEYS = ("path", "status")
_NULL = "tag:yaml.org,2002:null"


class RegistryError(ConfigError):
    """The registry cannot be used; `problems` lists every problem found, each
    "FILE: LINE:COL: dotted.field: message"."""


@dataclass(frozen=True)
class BaseModel:
    name: str
    path: Path  # absolute, resolved; may lie outside the registry root (a model cache)


@dataclass(frozen=True)
class Version:
    name: str
    path: Path  # absolute, resolved, inside the registry root
    status: str | None  # None or one of STATUSES


@dataclass(frozen=True)
class Domain:
    name: str
    base_model: str  # a key of Registry.base_models
    kind: str  # one of KINDS
    active: str | None  # a key of `versions`, or None: the domain serves no adapter
    golden_set: Path  # absolute, resolved, inside the registry root; exists
    versions: dict[str, Version]
    schedule: str | None  # 5-field cron expression for scheduled evaluation

    def active_version(self) -> Version | None:
        return self.versions[self.active] if self.active is not None else None


@dataclass(frozen=True)
class Registry:
    path: Path  # the registry file, absolute
    root: Path  # the folder holding it, resolved: relative paths start here
    base_models: dict[str, BaseModel]
    domains: dict[str, Domain]


def load_registry(path: str | os.PathLike) -> Registry:
    """Read and check a registry file; `RegistryError` lists every problem."""
    file = str(path)
    absolute = Path(path).absolute()
    try:
        text = absolute.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryError([f"{file}: no registry file (looked for {absolute})"], file) from None
    except IsADirectoryError:
        raise RegistryError([f"{file}: is a folder, not a registry file ({absolute})"],
                            file) from None
    except OSError as exc:
        raise RegistryError([f"{file}: cannot read {absolute}: {exc.strerror}"], file) from None
    except UnicodeDecodeError as exc:
        raise RegistryError([f"{file}: not UTF-8 text (byte {exc.start})"], file) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        where, problem = yaml_error_where(exc)
        raise RegistryError([f"{file}:{where} not valid YAML: {problem}"], file) from None
    root = absolute.parent.resolve()
    reader = _Reader(file, root)
    registry = reader.registry(node, root / absolute.name)
    if reader.problems:
        raise RegistryError(reader.problems, file)
    return registry


def resolve_inside(root: Path, relative: str) -> Path:
    """`relative` (or an absolute path) resolved, provided it stays inside `root`.

    Refused with `ValueError`: any `..` component, an absolute path outside the
    root, and a symlink at any component that leads out of the root (even one
    whose target later links back in). Missing components are fine.

    >>> resolve_inside(Path("/srv/adapters"), "legal/v1").as_posix()
    '/srv/adapters/legal/v1'
    >>> resolve_inside(Path("/srv/adapters"), "../etc")
    Traceback (most recent call last):
    ...
    ValueError: '../etc' contains '..'; paths must stay inside /srv/adapters
    """
    base = _resolve(Path(root), str(root))
    given = Path(relative)
    if ".." in given.parts:
        raise ValueError(f"{relative!r} contains '..'; paths must stay inside {base}")
    parts = given.parts
    if given.is_absolute():
        anchor = next((a for a in (Path(root).absolute(), base) if given.is_relative_to(a)), None)
        if anchor is not None:
            parts = given.relative_to(anchor).parts
        else:
            target = _resolve(given, relative)
            if not target.is_relative_to(base):
                raise ValueError(f"{relative} is outside the registry root {base}")
            parts = target.relative_to(base).parts
    current = base
    for part in parts:
        link = current / part
        current = _resolve(link, relative)
        if not current.is_relative_to(base):
            raise ValueError(f"{relative!r}: {link} is a symlink to {current}, outside the "
                             f"registry root {base}")
    return current


def _resolve(path: Path, given: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise ValueError(f"{given!r} cannot be resolved: {exc}") from None


def check_cron(expression: str) -> str | None:
    """None when `expression` is a valid 5-field cron expression, else why not.

    Fields: minute hour day-of-month month day-of-week; each a list of `*`, `N`
    or `N-M`, optionally `/STEP`; months and days may be named (jan, mon).

    >>> check_cron("0 3 * * mon-fri") is None, check_cron("*/15 * * * *") is None
    (True, True)
    >>> check_cron("0 24 * * *")
    'hour: 24 is out of range 0-23'
    >>> check_cron("@daily")
    'must have 5 fields (minute hour day-of-month month day-of-week), got 1'
    """
    fields = expression.split()
    if len(fields) != 5:
        return ("must have 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(fields)}")
    for text, (field, low, high, names) in zip(fields, _CRON_FIELDS):
        for item in text.split(","):
            problem = _cron_item(item, low, high, names)
            if problem:
                return f"{field}: {problem}"
    return None


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day-of-month", 1, 31, ()),
                ("month", 1, 12, _MONTHS), ("day-of-week", 0, 7, _DAYS))


def _cron_item(item: str, low: int, high: int, names: tuple[str, ...]) -> str | None:
    span, slash, step = item.partition("/")
    if slash and not (step.isdigit() and int(step) > 0):
        return f"{item!r}: the step must be a whole number > 0"
    if span == "*":
        return None
    first, dash, last = span.partition("-")
    values = []
    for value in (first, last) if dash else (first,):
        if value.lower() in names:
            values.append(names.index(value.lower()) + low)
        elif value.isdigit():
            values.append(int(value))
        else:
            return f"{item!r} is not *, a number or a range"
        if not low <= values[-1] <= high:
            return f"{value} is out of range {low}-{high}"
    if dash and values[0] > values[1]:
        return f"{item!r}: the range runs backwards"
    return None


def _pos(node) -> str:
    return f"{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _is_null(node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


class _Reader:
    """Walks the YAML node tree, collecting problems and building the objects."""

    def __init__(self, file: str, root: Path):
        self.file = file
        self.root = root
        self.found: list[tuple[int, int, str]] = []  # (line, column, problem)
        self.path_nodes: dict[str, yaml.Node] = {}  # dotted field -> where a path was written

    @property
    def problems(self) -> list[str]:
        """In the order of the file."""
        return [text for _, _, text in sorted(self.found, key=lambda f: f[:2])]

    def problem(self, node, where: str, message: str) -> None:
        mark = node.start_mark
        text = f"{self.file}: {_pos(node)}: {where}: {message}"
        self.found.append((mark.line, mark.column, text))

    def registry(self, node, path: Path) -> Registry | None:
        if node is None:
            self.found.append((0, 0, (f"{self.file}: 1:1: (top level): the file is empty; a "
                                      "registry is a mapping with base_models and domains")))
            return None
        top = self.mapping(node, "(top level)", _TOP_KEYS, _TOP_KEYS)
        if top is None:
            return None
        base_models = {}
        for name, (_, vnode) in self.entries(top, "base_models").items():
            base_models[name] = self.base_model(name, vnode)
        domains = {}
        for name, (_, vnode) in self.entries(top, "domains").items():
            domains[name] = self.domain(name, vnode, base_models)
        return Registry(path, self.root, base_models, domains)

    def mapping(self, node, where: str, allowed, required=()) -> dict[str, tuple] | None:
        """Key -> (key node, value node); unknown, duplicate and missing keys are problems."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, where, "must be a mapping")
            return None
        fields: dict[str, tuple] = {}
        prefix = "" if where == "(top level)" else f"{where}."
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                self.problem(knode, where, "keys must be strings")
                continue
            key = knode.value
            if key in fields:
                self.problem(knode, prefix + key, "duplicate key")
            elif allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"expected {', '.join(allowed)}"
                self.problem(knode, prefix + key, f"unknown key ({hint})")
            else:
                fields[key] = (knode, vnode)
        for key in required:
            if key not in fields:
                self.problem(node, prefix + key, "required key is missing")
        return fields

    def entries(self, fields: dict, key: str, where: str = "") -> dict[str, tuple]:
        """The named entries of the mapping under `key` (null: none), names checked."""
        if key not in fields or _is_null(fields[key][1]):
            return {}
        where = f"{where}.{key}" if where else key
        entries = self.mapping(fields[key][1], where, None) or {}
        for name, (knode, _) in entries.items():
            if not NAME.fullmatch(name):
                self.problem(knode, f"{where}.{name}", f"invalid name: must match {NAME.pattern} "
                             "(a letter or digit, then letters, digits, '_', '.', '-')")
        return entries

    def string(self, fields: dict, key: str, where: str) -> str | None:
        if key not in fields or _is_null(fields[key][1]):
            return None
        node = fields[key][1]
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, f"{where}.{key}", "must be a string")
            return None
        return node.value

    def required_string(self, fields: dict, key: str, where: str) -> str | None:
        value = self.string(fields, key, where)
        if value in (None, "") and key in fields and isinstance(fields[key][1], yaml.ScalarNode):
            self.problem(fields[key][1], f"{where}.{key}", "must not be empty")
            return None
        return value

    def base_model(self, name: str, vnode) -> BaseModel | None:
        where = f"base_models.{name}"
        fields = self.mapping(vnode, where, _BASE_MODEL_KEYS, _BASE_MODEL_KEYS)
        text = self.required_string(fields, "path", where) if fields is not None else None
        if text is None:
            return None
        try:
            return BaseModel(name, _resolve(self.root / text, text))
        except ValueError as exc:
            self.problem(fields["path"][1], f"{where}.path", str(exc))
            return None

    def domain(self, name: str, vnode, base_models: dict) -> Domain | None:
        where = f"domains.{name}"
        fields = self.mapping(vnode, where, _DOMAIN_KEYS, _DOMAIN_REQUIRED)
        if fields is None:
            return None
        base_model = self.required_string(fields, "base_model", where)
        if base_model is not None and base_model not in base_models:
            self.problem(fields["base_model"][1], f"{where}.base_model",
                         f"no base model {base_model!r} in base_models "
                         f"(defined: {', '.join(base_models) or 'none'})")
        kind = self.required_string(fields, "kind", where)
        if kind is not None and kind not in KINDS:
            self.problem(fields["kind"][1], f"{where}.kind",
                         f"{kind!r} is not one of {', '.join(KINDS)}")
        versions = {}
        for vname, (_, vvnode) in self.entries(fields, "versions", where).items():
            versions[vname] = self.version(f"{where}.versions.{vname}", vname, vvnode)
        active = self.string(fields, "active", where)
        if active is not None:
            self.check_active(fields, where, active, versions)
        golden_set = self.path_inside(fields, "golden_set", where, must_be="file")
        schedule = self.string(fields, "schedule", where)
        if schedule is not None and (problem := check_cron(schedule)):
            self.problem(fields["schedule"][1], f"{where}.schedule", problem)
        return Domain(name, base_model, kind, active, golden_set, versions, schedule)

    def version(self, where: str, name: str, node) -> Version | None:
        fields = self.mapping(node, where, _VERSION_KEYS, ("path",))
        if fields is None:
            return None
        status = self.string(fields, "status", where)
        if status is not None and status not in STATUSES:
            self.problem(fields["status"][1], f"{where}.status",
                         f"{status!r} is not one of {', '.join(STATUSES)} (or null)")
        path = self.path_inside(fields, "path", where)
        return Version(name, path, status) if path is not None else None

    def check_active(self, fields: dict, where: str, active: str, versions: dict) -> None:
        node = fields["active"][1]
        if active not in versions:
            self.problem(node, f"{where}.active", f"no version {active!r} in {where}.versions "
                         f"(defined: {', '.join(versions) or 'none'})")
            return
        version = versions[active]
        if version is None:
            return  # its own problems are already reported
        if version.status == "retired":
            self.problem(node, f"{where}.active", f"version {active!r} is retired; an active "
                         "version cannot be")
        elif not version.path.is_dir():
            what = "is not a folder" if version.path.exists() else "does not exist"
            field = f"{where}.versions.{active}.path"
            self.problem(self.path_nodes[field], field,
                         f"the active version's folder {version.path} {what}")

    def path_inside(self, fields: dict, key: str, where: str, must_be: str | None = None):
        text = self.required_string(fields, key, where)
        if text is None:
            return None
        node = fields[key][1]
        try:
            path = resolve_inside(self.root, text)
        except ValueError as exc:
            self.problem(node, f"{where}.{key}", str(exc))
            return None
        self.path_nodes[f"{where}.{key}"] = node
        if must_be == "file" and not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            self.problem(node, f"{where}.{key}", f"{path} {what}")
        return path

def format_table(registry: Registry, verdicts: dict[tuple[str, str], str] | None = None) -> str:
    """`monitor adapters list`: one row per domain and version, `*` marking the
    active one; the verdict is the latest evaluation's, keyed (domain, version).

    >>> legal = Domain("legal", "tiny-llama", "lora", "v2", Path("/r/legal/golden.jsonl"),
    ...                {"v1": Version("v1", Path("/r/legal/v1"), "good"),
    ...                 "v2": Version("v2", Path("/r/legal/v2"), None)}, None)
    >>> registry = Registry(Path("/r/registry.yaml"), Path("/r"), {}, {"legal": legal})
    >>> print(format_table(registry, {("legal", "v1"): "pass"}))
    DOMAIN  VERSION  KIND  BASE MODEL  STATUS  ACTIVE  VERDICT
    legal   v1       lora  tiny-llama  good            pass
    legal   v2       lora  tiny-llama  -       *       -
    """
    verdicts = verdicts or {}
    rows = [("DOMAIN", "VERSION", "KIND", "BASE MODEL", "STATUS", "ACTIVE", "VERDICT")]
    for name, domain in registry.domains.items():
        for version in domain.versions.values() or [None]:
            vname = version.name if version else "-"
            rows.append((name, vname, domain.kind, domain.base_model,
                         (version.status if version else None) or "-",
                         "*" if version and vname == domain.active else "",
                         verdicts.get((name, vname), "-") if version else "-"))
    return _columns(rows)


def describe_domain(registry: Registry, domain: str,
                    verdicts: dict[tuple[str, str], str] | None = None) -> str:
    """`monitor adapters show D`: the domain's fields, its golden set (with the
    number of items when the file is there) and each version; `KeyError` for a
    domain the registry does not have."""
    if domain not in registry.domains:
        raise KeyError(f"no domain {domain!r} in {registry.path}")
    d = registry.domains[domain]
    verdicts = verdicts or {}
    base = registry.base_models.get(d.base_model)
    lines = [
        f"domain:      {d.name}",
        f"kind:        {d.kind}",
        f"base model:  {d.base_model}" + (f" ({base.path})" if base else ""),
        f"active:      {d.active or '- (serves no adapter)'}",
        f"golden set:  {d.golden_set} ({_count_items(d.golden_set)})",
        f"schedule:    {d.schedule or '-'}",
        f"registry:    {registry.path}",
        "versions:" if d.versions else "versions:    none",
    ]
    rows = [("VERSION", "STATUS", "ACTIVE", "VERDICT", "PATH")]
    rows += [(v.name, v.status or "-", "*" if v.name == d.active else "",
              verdicts.get((domain, v.name), "-"), str(v.path)) for v in d.versions.values()]
    if d.versions:
        lines += ["  " + line for line in _columns(rows).splitlines()]
    return "\n".join(lines)


def _count_items(path: Path) -> str:
    """'N items', counting the non-blank lines of the JSONL file, or why there is none."""
    try:
        with path.open("rb") as f:
            n = sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    return f"{n} item{'s' if n != 1 else ''}"


def _columns(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)
