"""Our rule verdicts agree with the real promtool 2.42, file by file.

The corpus lives in tests/conformance/ (see its README.md):

- unit/NAME.test.yml + NAME.rules.yml: promtool unit-test files. `pass_*` pass
  under `promtool test rules`, `fail_*` fail; `monitor rules test` must give the
  same exit status.
- check/ok_*.yml, check/bad_*.yml: `promtool check rules` accepts / rejects them;
  `monitor rules check` must give the same exit status and, for bad_*, name the
  file, the line:col and the group/rule the way promtool does
  (check/bad_*.promtool.txt hold promtool's exact stderr).
- unsupported/*.yml: promtool accepts them, but they use PromQL outside our
  subset (`# construct: NAME` says which): `monitor rules check` must refuse
  them, naming the construct, the file and the line:col.

Both tools run with the file's folder as the working directory, one process
per file. The promtool half of every assertion is checked first, so a corpus
file whose name disagrees with promtool's real verdict shows up as such.

Speed: `python -m monitor` takes ~1.3 s to start (monitor.config imports
scipy through monitor.drift), ~100 files would take ~2.5 CPU-minutes. So by
default each of our runs is a fork of a helper process that has imported
monitor.cli once, running `monitor.cli.main(["rules", VERB, FILE])` exactly
as `python -m monitor rules VERB FILE` does (own process, own cwd, stdout,
stderr and exit status). CONFORMANCE_SUBPROCESS=1 runs the real
`python -m monitor ...` command per file instead. All the commands of the
selected tests start at once on a thread pool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "conformance"
UNIT_DIR = CORPUS / "unit"
CHECK_DIR = CORPUS / "check"
UNSUPPORTED_DIR = CORPUS / "unsupported"

UNIT_CASES = sorted(p.name for p in UNIT_DIR.glob("*.test.yml"))
CHECK_FILES = sorted(p.name for p in CHECK_DIR.glob("*.yml"))
BAD_CHECK_FILES = [name for name in CHECK_FILES if name.startswith("bad_")]
UNSUPPORTED_FILES = sorted(p.name for p in UNSUPPORTED_DIR.glob("*.yml"))

PROMTOOL_TIMEOUT_S = 30
MONITOR_TIMEOUT_S = 60
WORKERS = max(2, os.cpu_count() or 2)

# `F: 12:7:` (promtool also writes `F: 0:0:` when the node is missing)
_LINE_COL = r":\s*\d+:\d+:"
_GROUP_RULE = re.compile(r'group "[^"]*", rule \d+, "[^"]*"')
_REPEATED_GROUP = re.compile(r'groupname: "([^"]*)" is repeated')
_CONSTRUCT = re.compile(r"^#\s*construct:\s*(.+?)\s*$", re.MULTILINE)


def _find_promtool() -> str | None:
    found = shutil.which("promtool")
    if found:
        return found
    if os.access("/usr/bin/promtool", os.X_OK):
        return "/usr/bin/promtool"
    return None


def _require_promtool() -> str:
    path = _find_promtool()
    if path is None:
        pytest.fail("promtool is not installed: the conformance corpus is checked against the "
                    "real promtool 2.42. `make test` installs it (Debian package `prometheus`, "
                    "which provides /usr/bin/promtool); or run `apt-get install prometheus`.",
                    pytrace=False)
    return path


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    cwd: Path
    rc: int | None  # None: killed after the timeout
    stdout: str
    stderr: str

    def describe(self) -> str:
        status = "TIMED OUT" if self.rc is None else f"exit {self.rc}"
        return (f"$ (cd {self.cwd.relative_to(REPO)} && {' '.join(self.argv)})  -> {status}\n"
                f"--- stdout ---\n{self.stdout.rstrip()}\n"
                f"--- stderr ---\n{self.stderr.rstrip()}\n")


def _execute(argv: tuple[str, ...], cwd: Path, timeout: float, env: dict) -> Result:
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out, err = (x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                    for x in (exc.stdout, exc.stderr))
        return Result(argv, cwd, None, out, err + f"\n[killed after {timeout}s]")
    return Result(argv, cwd, done.returncode, done.stdout, done.stderr)


def _monitor_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# The fork helper: imports monitor.cli once, then for each job line
# {"args", "cwd", "out", "err", "timeout"} forks a child that runs main(args)
# with fds 1/2 on the given files and replies {"rc": N} (None: timed out).
_HELPER = r"""
import json, os, signal, sys, traceback
from monitor.cli import main
proto = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    job = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        rc = 1
        try:
            signal.alarm(job["timeout"])
            os.chdir(job["cwd"])
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            for fd, path in ((1, job["out"]), (2, job["err"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
            sys.argv = ["monitor"] + job["args"]
            try:
                rc = main(job["args"])
            except SystemExit as exc:
                rc = exc.code
            if rc is None:
                rc = 0
            elif not isinstance(rc, int):
                print(rc, file=sys.stderr)
                rc = 1
        except BaseException:
            traceback.print_exc()
            rc = 1
        finally:
            try:
                sys.stdout.flush(); sys.stderr.flush()
            finally:
                os._exit(rc & 0xFF)
    _, status = os.waitpid(pid, 0)
    timed_out = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM
    rc = None if timed_out else os.waitstatus_to_exitcode(status)
    proto.write(json.dumps({"rc": rc}) + "\n")
    proto.flush()
"""


class _ForkHelper:
    """One helper process (per worker thread) that forks a child per job."""

    def __init__(self, env: dict, scratch: Path):
        helper_env = dict(env, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.scratch = scratch
        self.count = 0
        self.log = scratch / f"helper-{threading.get_ident()}-{id(self)}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", _HELPER], cwd=REPO,
                                         env=helper_env, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, text=True)

    def run(self, args: list[str], cwd: Path, timeout: int) -> Result:
        self.count += 1
        out = self.scratch / f"{self.proc.pid}-{self.count}.out"
        err = self.scratch / f"{self.proc.pid}-{self.count}.err"
        job = {"args": args, "cwd": str(cwd), "out": str(out), "err": str(err), "timeout": timeout}
        argv = ("python", "-m", "monitor", *args)
        try:
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
        except OSError:
            reply = ""
        if not reply:
            self.proc.kill()
            self.proc.wait()
            problem = self.log.read_text(errors="replace")
            return Result(argv, cwd, 1, "", "Traceback (most recent call last):\n"
                          f"[the fork helper died; its stderr:]\n{problem}")
        rc = json.loads(reply)["rc"]
        stdout = out.read_text(errors="replace") if out.exists() else ""
        stderr = err.read_text(errors="replace") if err.exists() else ""
        if rc is None:
            stderr += f"\n[killed after {timeout}s]"
        return Result(argv, cwd, rc, stdout, stderr)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# A job: (tool, kind, file name). kind "unit" runs `... test`, "check" and
# "unsupported" run `... check`, in the matching corpus folder.
_FOLDERS = {"unit": UNIT_DIR, "check": CHECK_DIR, "unsupported": UNSUPPORTED_DIR}
_VERBS = {"unit": "test", "check": "check", "unsupported": "check"}


class Runs:
    """Runs each job once, in the background; `runs(job)` waits for its result."""

    def __init__(self, promtool: str, scratch: Path):
        self.promtool = promtool
        self.env = _monitor_env()
        self.scratch = scratch
        self.real_processes = os.environ.get("CONFORMANCE_SUBPROCESS", "") not in ("", "0")
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="conformance")
        self.futures: dict[tuple[str, str, str], Future] = {}
        self.local = threading.local()
        self.helpers: list[_ForkHelper] = []
        self.helpers_lock = threading.Lock()

    def _ours(self, args: list[str], cwd: Path) -> Result:
        if self.real_processes:
            return _execute((sys.executable, "-m", "monitor", *args), cwd, MONITOR_TIMEOUT_S,
                            self.env)
        helper = getattr(self.local, "helper", None)
        if helper is None or helper.proc.poll() is not None:
            helper = self.local.helper = _ForkHelper(self.env, self.scratch)
            with self.helpers_lock:
                self.helpers.append(helper)
        return helper.run(args, cwd, MONITOR_TIMEOUT_S)

    def submit(self, job: tuple[str, str, str]) -> None:
        if job in self.futures:
            return
        tool, kind, name = job
        folder, verb = _FOLDERS[kind], _VERBS[kind]
        if tool == "promtool":  # `promtool test rules F` / `promtool check rules F`
            argv = (self.promtool, verb, "rules", name)
            future = self.pool.submit(_execute, argv, folder, PROMTOOL_TIMEOUT_S,
                                      os.environ.copy())
        else:  # `python -m monitor rules test|check F`
            future = self.pool.submit(self._ours, ["rules", verb, name], folder)
        self.futures[job] = future

    def __call__(self, tool: str, kind: str, name: str) -> Result:
        job = (tool, kind, name)
        self.submit(job)
        return self.futures[job].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for helper in self.helpers:
            helper.close()


def _jobs_for(item) -> list[tuple[str, str, str]]:
    params = getattr(getattr(item, "callspec", None), "params", {})
    test = getattr(item, "originalname", item.name)
    if test == "test_unit_case_agrees_with_promtool":
        return [("promtool", "unit", params["case"]), ("monitor", "unit", params["case"])]
    if test == "test_check_agrees_with_promtool":
        return [("promtool", "check", params["name"]), ("monitor", "check", params["name"])]
    if test == "test_stored_promtool_message_is_current":
        return [("promtool", "check", params["name"])]
    if test == "test_unsupported_construct_refused":
        return [("promtool", "unsupported", params["name"]),
                ("monitor", "unsupported", params["name"])]
    return []


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    promtool = _find_promtool()
    if promtool is None:
        yield None  # every test that needs it fails through _require_promtool()
        return
    pool = Runs(promtool, tmp_path_factory.mktemp("conformance"))
    # Start every command of the selected tests of this module now, in test order.
    this_module = request.node.path if hasattr(request.node, "path") else None
    for item in request.session.items:
        if this_module is not None and getattr(item, "path", None) != this_module:
            continue
        for job in _jobs_for(item):
            pool.submit(job)
    yield pool
    pool.close()


def _both(*results: Result) -> str:
    return "\n" + "\n".join(r.describe() for r in results)


def _assert_no_crash(ours: Result, prom: Result) -> None:
    assert ours.rc is not None, f"`monitor rules` timed out{_both(prom, ours)}"
    assert "Traceback (most recent call last)" not in ours.stderr, \
        f"`monitor rules` crashed (a crash exits 1 too, but is no verdict){_both(prom, ours)}"


# --- (a) unit-test files ------------------------------------------------------

@pytest.mark.parametrize("case", UNIT_CASES)
def test_unit_case_agrees_with_promtool(case, runs):
    _require_promtool()
    expected = 0 if case.startswith("pass_") else 1
    prom = runs("promtool", "unit", case)
    assert prom.rc == expected, (
        f"corpus error: {case} is named {case.split('_')[0]}_ but promtool test rules "
        f"exits {prom.rc}{_both(prom)}")
    ours = runs("monitor", "unit", case)
    _assert_no_crash(ours, prom)
    assert ours.rc == prom.rc, (
        f"verdicts differ on unit/{case}: promtool exits {prom.rc}, monitor exits {ours.rc}"
        f"{_both(prom, ours)}")


# --- (b) check rules ----------------------------------------------------------

@pytest.mark.parametrize("name", CHECK_FILES)
def test_check_agrees_with_promtool(name, runs):
    _require_promtool()
    expected = 0 if name.startswith("ok_") else 1
    prom = runs("promtool", "check", name)
    assert prom.rc == expected, (
        f"corpus error: promtool check rules exits {prom.rc} on check/{name}{_both(prom)}")
    ours = runs("monitor", "check", name)
    _assert_no_crash(ours, prom)
    assert ours.rc == prom.rc, (
        f"verdicts differ on check/{name}: promtool exits {prom.rc}, monitor exits {ours.rc}"
        f"{_both(prom, ours)}")
    if not name.startswith("bad_"):
        return
    assert f"{name}:" in ours.stderr, f"our error does not name the file{_both(prom, ours)}"
    where = re.escape(name) + _LINE_COL
    if re.search(where, prom.stderr):
        assert re.search(where, ours.stderr), (
            f"promtool gives a line:col after the file name, we do not{_both(prom, ours)}")
    for fragment in _GROUP_RULE.findall(prom.stderr):
        assert fragment in ours.stderr, (
            f"promtool names `{fragment}`, our stderr does not{_both(prom, ours)}")
    for group in _REPEATED_GROUP.findall(prom.stderr):
        assert f'"{group}"' in ours.stderr, (
            f'promtool names the repeated group "{group}", we do not{_both(prom, ours)}')


@pytest.mark.parametrize("name", BAD_CHECK_FILES)
def test_stored_promtool_message_is_current(name, runs):
    """check/bad_*.promtool.txt is what this promtool writes today (version drift)."""
    _require_promtool()
    prom = runs("promtool", "check", name)
    stored = (CHECK_DIR / (name[:-len(".yml")] + ".promtool.txt")).read_text()
    assert prom.stderr == stored, (
        f"promtool's stderr for check/{name} no longer matches the stored copy "
        f"(another promtool version?){_both(prom)}--- stored ---\n{stored}")


# --- (c) constructs outside the subset -----------------------------------------

def _construct(name: str) -> str:
    found = _CONSTRUCT.search((UNSUPPORTED_DIR / name).read_text())
    assert found, f"unsupported/{name} lacks its `# construct: NAME` line"
    return found.group(1)


@pytest.mark.parametrize("name", UNSUPPORTED_FILES)
def test_unsupported_construct_refused(name, runs):
    _require_promtool()
    construct = _construct(name)
    prom = runs("promtool", "unsupported", name)
    assert prom.rc == 0, (
        f"corpus error: promtool check rules rejects unsupported/{name}; it must be valid "
        f"Prometheus{_both(prom)}")
    ours = runs("monitor", "unsupported", name)
    _assert_no_crash(ours, prom)
    assert ours.rc == 1, (
        f"`monitor rules check` accepts unsupported/{name} ({construct}){_both(prom, ours)}")
    assert construct.lower() in ours.stderr.lower(), (
        f"our error does not name the construct {construct!r}{_both(ours)}")
    assert re.search(re.escape(name) + _LINE_COL, ours.stderr), (
        f"our error does not give `{name}: line:col:`{_both(ours)}")


# --- (d) the corpus itself ------------------------------------------------------

def test_corpus_is_complete():
    failing = [c for c in UNIT_CASES if c.startswith("fail_")]
    passing = [c for c in UNIT_CASES if c.startswith("pass_")]
    assert len(UNIT_CASES) >= 45, f"{len(UNIT_CASES)} unit cases"
    assert len(failing) >= 15, f"{len(failing)} failing unit cases"
    assert len(passing) + len(failing) == len(UNIT_CASES), "unit cases are named pass_* or fail_*"
    assert len(CHECK_FILES) >= 15, f"{len(CHECK_FILES)} check files"
    assert all(n.startswith(("ok_", "bad_")) for n in CHECK_FILES), CHECK_FILES
    assert len(UNSUPPORTED_FILES) >= 8, f"{len(UNSUPPORTED_FILES)} unsupported files"
    for case in UNIT_CASES:
        rules = case[:-len(".test.yml")] + ".rules.yml"
        assert (UNIT_DIR / rules).is_file(), f"unit/{case} without unit/{rules}"
        assert rules in (UNIT_DIR / case).read_text(), f"unit/{case} does not load {rules}"
    for name in BAD_CHECK_FILES:
        stored = CHECK_DIR / (name[:-len(".yml")] + ".promtool.txt")
        assert stored.is_file(), f"check/{name} without {stored.name}"
    for name in UNSUPPORTED_FILES:
        _construct(name)
