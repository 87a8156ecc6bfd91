"""Check the corpus against the real promtool only (no `monitor` involved).

    python tests/conformance/verify_promtool.py            # every verdict matches its name
    python tests/conformance/verify_promtool.py --repeat 10  # ... ten times (determinism)
    python tests/conformance/verify_promtool.py --write    # regenerate check/*.promtool.txt

Exit 0 when every file's promtool verdict is the one its name promises:
unit/pass_* pass and unit/fail_* fail `promtool test rules`; check/ok_* pass and
check/bad_* fail `promtool check rules` (bad_*'s stderr equals its
.promtool.txt); unsupported/* pass `promtool check rules`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(promtool: str, verb: str, folder: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, verb, "rules", name], cwd=folder, capture_output=True,
                          text=True, timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="rewrite check/*.promtool.txt from promtool's stderr")
    parser.add_argument("--repeat", type=int, default=1, metavar="N")
    args = parser.parse_args()
    promtool = shutil.which("promtool")
    if not promtool:
        print("promtool not found (Debian package `prometheus`)", file=sys.stderr)
        return 2
    problems = []
    unit, check, unsupported = HERE / "unit", HERE / "check", HERE / "unsupported"
    for _ in range(args.repeat):
        for test in sorted(unit.glob("*.test.yml")):
            want = 0 if test.name.startswith("pass_") else 1
            got = run(promtool, "test", unit, test.name)
            if got.returncode != want:
                problems.append(f"unit/{test.name}: promtool exits {got.returncode}\n"
                                f"{got.stdout}{got.stderr}")
        for rules in sorted(check.glob("*.yml")):
            want = 0 if rules.name.startswith("ok_") else 1
            got = run(promtool, "check", check, rules.name)
            if got.returncode != want:
                problems.append(f"check/{rules.name}: promtool exits {got.returncode}\n"
                                f"{got.stderr}")
            stored = rules.with_name(rules.name[:-len(".yml")] + ".promtool.txt")
            if args.write and got.stderr:
                stored.write_text(got.stderr)
            elif rules.name.startswith("bad_") and (
                    not stored.exists() or stored.read_text() != got.stderr):
                problems.append(f"check/{stored.name} differs from promtool's stderr:\n"
                                f"{got.stderr}")
        for rules in sorted(unsupported.glob("*.yml")):
            got = run(promtool, "check", unsupported, rules.name)
            if got.returncode != 0:
                problems.append(f"unsupported/{rules.name}: promtool exits "
                                f"{got.returncode}\n{got.stderr}")
    for problem in problems:
        print(problem, file=sys.stderr)
    counts = {d.name: len(list(d.glob("*.test.yml" if d is unit else "*.yml")))
              for d in (unit, check, unsupported)}
    print(f"{counts} x{args.repeat}: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
