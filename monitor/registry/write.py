"""The write side of the adapter registry (docs/registry.md, "Writing the registry").

Rollback and promotion change one value of `adapters/registry.yaml` (a domain's
`active`, a version's `status`). The file belongs to people, so a write keeps
their comments, blank lines, key order, quoting and flow mappings, changing
only the value it means to change; and it is all or nothing:

- `registry_lock(path)` serialises every writer, across threads and processes
  (a `flock` on the sibling file `.registry.yaml.lock`);
- `update_registry(path, edit)` edits the YAML round-trip, checks the result
  with `load_registry` *before* it replaces the file (a change that would make
  the registry invalid is refused, the file left byte-for-byte as it was), then
  swaps it in atomically (temp file, fsync, `os.replace`, fsync of the folder);
- `set_active` and `set_status` are the two edits the monitor makes.

Readers need no lock: they see the old file or the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import io
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarstring import ScalarString
from ruamel.yaml.tokens import CommentToken

from monitor.errors import yaml_error_where
from monitor.files import fsync_folder
from monitor.registry.model import STATUSES, Registry, RegistryError, load_registry

_POLL_S = 0.05
_WIDTH = 1 << 16  # never re-wrap a long line (a long flow mapping stays on one line)


class _Unchecked:
    """The default of set_active's `expect`: do not check the current active version."""

    def __repr__(self) -> str:
        return "<unchecked>"


_UNCHECKED = _Unchecked()


# -- the lock -----------------------------------------------------------------------------

class _PathLock:
    """What the threads of this process share for one registry: a reentrant lock
    and how deep its owner is (the flock is taken at depth 0 only)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.depth = 0


_path_locks: dict[str, _PathLock] = {}
_path_locks_guard = threading.Lock()


def _target(path: str | os.PathLike) -> Path:
    """The file a write replaces: `path` with symlinks resolved, so a symlinked
    registry stays a symlink and every name of one file shares one lock."""
    return Path(os.path.realpath(path))


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of the registry at `path`: `.registry.yaml.lock` beside it."""
    target = _target(path)
    return target.with_name(f".{target.name}.lock")


@contextmanager
def registry_lock(path: str | os.PathLike, timeout: float = 30.0) -> Iterator[None]:
    """Exclusive lock serialising every writer of the registry at `path`, across
    threads and processes: `fcntl.flock` on the sibling file `.<name>.lock`
    (created if missing, mode 0o644; never deleted) plus a per-path lock for the
    threads of this process (flock belongs to an open file description, so it
    does not exclude threads that open the file themselves).

    Reentrant within a thread: a thread that holds the lock may take it again
    (calling `set_active` under it, say) without waiting for itself.

    `RegistryError` naming the file when the lock is not acquired within
    `timeout` seconds (polled every 50 ms), or when the lock file cannot be
    opened. Readers (`load_registry`) need no lock: writes replace the file
    atomically.
    """
    file = str(path)
    lock_file = lock_path(path)
    key = str(lock_file)
    with _path_locks_guard:
        shared = _path_locks.setdefault(key, _PathLock())
    deadline = time.monotonic() + timeout
    if not shared.lock.acquire(timeout=max(timeout, 0.0)):
        raise _error(file, f"{file}: not locked within {timeout:g} s: another thread of "
                           f"this process is writing the registry (lock {lock_file})")
    try:
        if shared.depth:  # this thread holds it already
            shared.depth += 1
            try:
                yield
            finally:
                shared.depth -= 1
            return
        fd = _open_lock_file(file, lock_file)
        try:
            _flock(fd, file, lock_file, timeout, deadline)
            shared.depth = 1
            try:
                yield
            finally:
                shared.depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        shared.lock.release()


def _error(file: str, message: str) -> RegistryError:
    """One problem with the registry `file`; `message` starts with the file name."""
    return RegistryError([message], file)


def _open_lock_file(file: str, lock_file: Path) -> int:
    try:
        return os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise _error(file, f"{file}: cannot open the lock file {lock_file}: "
                           f"{exc.strerror}") from None


def _flock(fd: int, file: str, lock_file: Path, timeout: float, deadline: float) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _error(file, f"{file}: not locked within {timeout:g} s: another "
                                   f"process is writing the registry (it holds "
                                   f"{lock_file})") from None
            time.sleep(min(_POLL_S, left))


# -- read, edit, write --------------------------------------------------------------------

def update_registry(path: str | os.PathLike,
                    edit: Callable[[CommentedMap], None]) -> Registry:
    """Read the registry round-trip, let `edit(doc)` change it in place, check
    the result and replace the file atomically; returns the new `Registry`.

    The caller holds `registry_lock(path)`: `update_registry` does not lock by
    itself, so that a caller can read, decide and write under one lock::

        with registry_lock(path):
            update_registry(path, lambda doc: ...)

    `doc` is the top-level `CommentedMap` (ruamel.yaml); change values in place
    to keep comments and layout. The new text is written to a temp file in the
    same folder (`.<name>.<random>.tmp`) and checked with `load_registry`
    (relative paths resolve against that folder, as for the real file); any
    problem raises `RegistryError` (its line:col refer to the edited text) and
    leaves the file untouched. Otherwise the temp file is fsynced, given the
    file's permission bits and moved over the file with `os.replace`, and the
    folder is fsynced. The temp file is removed on any error; an `OSError`
    becomes a `RegistryError`. An edit that changes nothing writes nothing.
    A symlinked registry is written through: its target is replaced.
    """
    file = str(path)
    target = _target(path)
    yaml, doc, text, head = _read(file, target)
    if not isinstance(doc, CommentedMap):
        raise _error(file, f"{file}: 1:1: (top level): must be a mapping with base_models "
                           "and domains")
    edit(doc)
    _write(file, target, yaml, doc, text, head)
    return load_registry(path)


def _read(file: str, target: Path) -> tuple[YAML, object, str, str]:
    """(the YAML instance to dump with, the document, the file's text, the text
    before the document's `---` line that is put back unchanged)."""
    try:
        with open(target, encoding="utf-8", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise _error(file, f"{file}: no registry file (looked for {target})") from None
    except IsADirectoryError:
        raise _error(file, f"{file}: is a folder, not a registry file ({target})") from None
    except OSError as exc:
        raise _error(file, f"{file}: cannot read {target}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise _error(file, f"{file}: not UTF-8 text (byte {exc.start})") from None
    head, body = _split_head(text)
    yaml = YAML()  # round-trip
    yaml.preserve_quotes = True
    yaml.width = _WIDTH
    try:
        doc = yaml.load(body)
    except YAMLError as exc:
        where, problem = yaml_error_where(exc)
        if head and where:  # lines counted from the body: count from the file instead
            line, col = where.strip(" :").split(":")
            skipped = head.count("\n")
            where = f" {int(line) + skipped}:{col}:"
        raise _error(file, f"{file}:{where} not valid YAML: {problem}") from None
    mapping, sequence, offset = _guess_indent(doc)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml, doc, text, head


def _split_head(text: str) -> tuple[str, str]:
    """The lines up to a leading `---` line (comments, directives) and the rest:
    ruamel.yaml drops comments written before `---`, so they are kept aside."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "%")):
            continue
        if stripped == "---" or stripped.startswith("--- #"):
            return "".join(lines[:i + 1]), "".join(lines[i + 1:])
        break
    return "", text


def _guess_indent(doc) -> tuple[int, int, int]:
    """(mapping, sequence, offset) for ruamel's `YAML.indent`, as the file has
    them: the first nested block mapping and block sequence tell; 2, 4, 2 when
    the file has none."""
    mapping = sequence = offset = None
    stack = [doc] if isinstance(doc, CommentedMap) else []
    while stack and (mapping is None or sequence is None):
        parent = stack.pop(0)
        for key, value in parent.items():
            if isinstance(value, (CommentedMap, CommentedSeq)) and value.fa.flow_style():
                continue
            key_col = parent.lc.key(key)[1]
            if isinstance(value, CommentedMap) and value:
                if mapping is None and value.lc.col > key_col:
                    mapping = value.lc.col - key_col
                stack.append(value)
            elif isinstance(value, CommentedSeq) and value and sequence is None:
                offset = max(value.lc.col - key_col, 0)
                sequence = max(value.lc.item(0)[1] - key_col, offset + 2)
    mapping = mapping or 2
    if sequence is None:
        sequence, offset = mapping + 2, mapping
    return mapping, sequence, offset


def _dump(yaml: YAML, doc, head: str) -> str:
    out = io.StringIO()
    yaml.dump(doc, out)
    return head + out.getvalue()


def _write(file: str, target: Path, yaml: YAML, doc, text: str, head: str) -> None:
    new_text = _dump(yaml, doc, head)
    if text.partition("\n")[0].endswith("\r"):  # keep Windows line ends
        new_text = new_text.replace("\r\n", "\n").replace("\n", "\r\n")
    if new_text == text:
        return
    folder = target.parent
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise _error(file, f"{file}: cannot write in {folder}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(new_text)
            f.flush()
            os.fsync(f.fileno())
        _check(file, temp)
        os.chmod(temp, mode)
        os.replace(temp, target)
    except OSError as exc:
        _remove(temp)
        raise _error(file, f"{file}: cannot write {target}: {exc.strerror or exc}; the "
                           "file is unchanged") from None
    except BaseException:
        _remove(temp)
        raise
    fsync_folder(folder)


def _check(file: str, temp: str) -> None:
    """load_registry on the temp file, its problems told as the real file's."""
    try:
        load_registry(temp)
    except RegistryError as exc:
        problems = [file + p[len(temp):] if p.startswith(temp) else p for p in exc.problems]
        raise RegistryError(problems, file) from None


def _remove(temp: str) -> None:
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass


# -- set_active, set_status ---------------------------------------------------------------

def set_active(path: str | os.PathLike, domain: str, version: str, *,
               expect: str | None | _Unchecked = _UNCHECKED) -> tuple[str | None, str]:
    """Make `version` the active version of `domain`; returns (previous active,
    new active). Takes `registry_lock(path)` itself.

    `RegistryError` (the file unchanged) when the domain or the version is not
    in the registry, when the version is `retired` (a `bad` version may be made
    active: the caller decides), when `expect` is given and the active version
    is not `expect` any more (None: expected no active version; checked before
    the other rules, so a stale caller learns who is active now), or when the
    registry would be invalid afterwards (the version's folder is missing, say).
    Making the active version active again is a no-op: (version, version),
    nothing written. A domain without an `active:` key gets one after `kind`.
    """
    file = str(path)
    with registry_lock(path):
        yaml, doc, text, head = _read(file, _target(path))
        where = f"domains.{domain}"
        dmap = _domain(doc, file, domain)
        vmap = _version(dmap, file, domain, version)
        active_key = _key(dmap, "active")
        current = _text(dmap[active_key]) if active_key is not None else None
        if expect is not _UNCHECKED and current != expect:
            now = f"{domain}/{current} is active now" if current is not None else \
                f"{domain} has no active version now"
            wanted = f"{domain}/{expect}" if expect is not None else "no active version"
            raise _error(file, f"{file}:{_at(dmap, active_key)} {where}.active: expected "
                               f"{wanted} but {now} (the registry changed in between); "
                               f"{domain}/{version} not made active")
        status_key = _key(vmap, "status") if isinstance(vmap, CommentedMap) else None
        if status_key is not None and _text(vmap[status_key]) == "retired":
            raise _error(file, f"{file}:{_at(vmap, status_key)} {where}.versions.{version}: "
                               f"{domain}/{version} is retired; a retired version cannot be "
                               "made active")
        if current == version:
            return version, version
        if active_key is not None:
            dmap[active_key] = _like(dmap[active_key], version)
        else:
            kind = _key(dmap, "kind")
            _insert(dmap, list(dmap).index(kind) + 1 if kind is not None else len(dmap),
                    "active", version)
        _write(file, _target(path), yaml, doc, text, head)
        return current, version


def set_status(path: str | os.PathLike, domain: str, version: str,
               status: str | None) -> None:
    """Set a version's status, or with None remove its `status:` key (a comment
    on that line goes with it). `status` is one of `STATUSES`. Takes
    `registry_lock(path)` itself. `RegistryError` (the file unchanged) for an
    unknown status, domain or version, or when the registry would be invalid
    afterwards (the active version retired, say). The same status again
    writes nothing."""
    file = str(path)
    where = f"domains.{domain}.versions.{version}.status"
    if status is not None and status not in STATUSES:
        raise _error(file, f"{file}: {where}: {status!r} is not one of "
                           f"{', '.join(STATUSES)} (or None)")

    def edit(doc: CommentedMap) -> None:
        vmap = _version(_domain(doc, file, domain), file, domain, version)
        if not isinstance(vmap, CommentedMap):
            raise _error(file, f"{file}:{_at(vmap)} domains.{domain}.versions.{version}: "
                               "must be a mapping")
        key = _key(vmap, "status")
        if status is None:
            if key is not None:
                _delete(vmap, key)
        elif key is not None:
            vmap[key] = _like(vmap[key], status)
        else:
            _insert(vmap, len(vmap), "status", status)

    with registry_lock(path):
        update_registry(path, edit)


# -- finding things in the document ------------------------------------------------------

def _text(value) -> str | None:
    """A scalar as the registry's reader sees it (YAML text), None for null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    # ints and floats (a version named 1.10): their text as written
    yaml = YAML()
    out = io.StringIO()
    yaml.dump(value, out)
    return out.getvalue().splitlines()[0]


def _key(mapping, name: str):
    """The key of `mapping` whose text is `name` (keys may load as ints), or None."""
    if not isinstance(mapping, CommentedMap):
        return None
    if name in mapping:
        return name
    return next((k for k in mapping if not isinstance(k, str) and _text(k) == name), None)


def _at(node, key=None) -> str:
    """' LINE:COL:' of `key` in `node` (of `node` itself without a key), or ''."""
    try:
        line, col = node.lc.key(key) if key is not None else (node.lc.line, node.lc.col)
    except (AttributeError, KeyError, TypeError):
        return ""
    return f" {line + 1}:{col + 1}:"


def _domain(doc, file: str, domain: str) -> CommentedMap:
    domains = doc.get("domains") if isinstance(doc, CommentedMap) else None
    key = _key(domains, domain)
    if key is None or not isinstance(domains[key], CommentedMap):
        defined = ", ".join(str(_text(k)) for k in domains) if isinstance(
            domains, CommentedMap) else ""
        problem = "is not a mapping" if key is not None else (
            f"no domain {domain!r} in domains (defined: {defined or 'none'})")
        raise _error(file, f"{file}:{_at(domains, key)} domains.{domain}: {problem}")
    return domains[key]


def _version(dmap: CommentedMap, file: str, domain: str, version: str):
    versions = dmap.get("versions")
    key = _key(versions, version)
    if key is None:
        defined = ", ".join(str(_text(k)) for k in versions) if isinstance(
            versions, CommentedMap) else ""
        raise _error(file, f"{file}:{_at(versions if versions is not None else dmap)} "
                           f"domains.{domain}.versions: no version {version!r} in "
                           f"domains.{domain}.versions (defined: {defined or 'none'})")
    return versions[key]


# -- editing without losing comments ----------------------------------------------------

def _like(old, new: str) -> str:
    """`new`, quoted the way `old` was ("v1" stays double-quoted)."""
    return type(old)(new) if isinstance(old, ScalarString) else new


def _trailing(mapping: CommentedMap, key) -> CommentToken | None:
    """The comment token after `key`'s value: its own end-of-line comment, then
    the blank and comment lines up to the next key (ruamel keeps them together)."""
    entry = mapping.ca.items.get(key)
    if entry and len(entry) > 2 and isinstance(entry[2], CommentToken):
        return entry[2]
    return None


def _last_leaf(mapping: CommentedMap, key) -> tuple[CommentedMap, object]:
    """Where the lines after `key`'s entry are kept: in the last key of its value
    when that is a block mapping, else at `key` itself."""
    value = mapping[key]
    while isinstance(value, CommentedMap) and value and not value.fa.flow_style():
        mapping, key = value, list(value)[-1]
        value = mapping[key]
    return mapping, key


def _insert(mapping: CommentedMap, pos: int, key: str, value: str) -> None:
    """Insert key: value at `pos`; the blank and comment lines that followed the
    entry before it stay below the new one (they introduce what comes next)."""
    rest = None
    if pos > 0 and not mapping.fa.flow_style():
        owner, leaf = _last_leaf(mapping, list(mapping)[pos - 1])
        token = _trailing(owner, leaf)
        if token is not None:
            first, newline, rest = token.value.partition("\n")
            if rest:
                token.value = first + newline
    mapping.insert(pos, key, value)
    if rest:
        mapping.ca.items[key] = [None, None, CommentToken("\n" + rest, CommentMark(0)), None]


def _delete(mapping: CommentedMap, key) -> None:
    """Remove `key`; its own end-of-line comment goes, the blank and comment
    lines after it stay (moved to the entry before; when there is none, the
    value becomes null instead, keeping them)."""
    token = _trailing(mapping, key)
    rest = token.value.partition("\n")[2] if token is not None else ""
    keys = list(mapping)
    index = keys.index(key)
    if rest and not mapping.fa.flow_style():
        if index == 0:
            mapping[key] = None
            return
        owner, leaf = _last_leaf(mapping, keys[index - 1])
        before = _trailing(owner, leaf)
        if before is not None:
            before.value = before.value + rest
        else:
            owner.ca.items.setdefault(leaf, [None, None, None, None])
            owner.ca.items[leaf][2] = CommentToken("\n" + rest, CommentMark(0))
    mapping.ca.items.pop(key, None)
    del mapping[key]
