"""
Plant each bug of tests/mutation/planted.py in a copy of the repository and
check that its tests fail.

    python3 -m tests.mutation.plant              # the CI subset
    python3 -m tests.mutation.plant --datapath   # the data-path bugs (end-to-end tests)
    python3 -m tests.mutation.plant --all -k connect   # names containing "connect"

The working tree is never modified: ``tsgate/``, ``tests/`` and ``examples/``
are copied to a temporary directory, one file is changed there at a time, and
the tests run with that copy first on ``PYTHONPATH`` (the gateway processes
the end-to-end tests spawn inherit it). First the selected tests run on the
unchanged copy: a test that fails already would prove nothing. Exit status 0
when every plant was caught.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.mutation.planted import CI, DATAPATH, Plant

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("tsgate", "tests", "examples")
COPIED_FILES = ("pyproject.toml", "setup.py")


def copy_repository(target: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "mutants", ".pytest_cache")
    for name in COPIED:
        shutil.copytree(ROOT / name, target / name, ignore=ignore)
    for name in COPIED_FILES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, target / name)


def run_tests(copy: Path, tests: Sequence[str], timeout: float = 600) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    # Without hypothesis' pytest plugin: on a failing property test it writes
    # an explicit-example patch with libcst, which can crash pytest
    # (INTERNALERROR, exit 3) in this environment, so a planted bug a property
    # test caught read as an error, now and then (the property test only
    # fails when its random examples hit the bug). @given runs the same.
    args = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
            "-p", "no:hypothesispytest", *tests]
    try:
        done = subprocess.run(args, cwd=copy, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return done.returncode, done.stdout + done.stderr


def apply(copy: Path, plant: Plant) -> str:
    """Plant the bug; the original text of the file, to restore."""
    path = copy / plant.path
    text = path.read_text()
    found = text.count(plant.old)
    if found != plant.count:
        raise LookupError(f"{plant.name}: {plant.old!r} occurs {found} times in {plant.path}, "
                          f"expected {plant.count}: the code changed, update planted.py")
    path.write_text(text.replace(plant.old, plant.new))
    return text


def check(plants: Iterable[Plant], out: object = sys.stdout) -> list[tuple[Plant, str]]:
    """Run every plant; a list of (plant, outcome) with outcome caught/MISSED/error."""
    plants = list(plants)
    results: list[tuple[Plant, str]] = []
    with tempfile.TemporaryDirectory(prefix="tsgate-plant-") as tmp:
        copy = Path(tmp)
        copy_repository(copy)
        selected = sorted({t for p in plants for t in p.tests})
        code, output = run_tests(copy, selected)
        if code != 0:
            raise RuntimeError(f"the tests fail without any planted bug:\n{output[-3000:]}")
        for plant in plants:
            started = time.monotonic()
            original = apply(copy, plant)
            try:
                code, output = run_tests(copy, plant.tests)
            finally:
                (copy / plant.path).write_text(original)
            if code == 1:
                outcome = "caught"
            elif code == 0:
                outcome = "MISSED"
            else:  # collection error, usage error, timeout: not a test catching it
                outcome = f"error (exit {code})"
            results.append((plant, outcome))
            print(f"{outcome:8} {time.monotonic() - started:5.1f}s  {plant.name}  "
                  f"({plant.path})", file=out, flush=True)
            if outcome != "caught":
                print(output[-2000:], file=out)
    return results


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--datapath", action="store_true", help="the data-path plants")
    group.add_argument("--all", action="store_true", help="every plant")
    parser.add_argument("-k", default="", help="only plants whose name contains this")
    args = parser.parse_args(argv or sys.argv[1:])
    plants = DATAPATH if args.datapath else DATAPATH + CI if args.all else CI
    plants = tuple(p for p in plants if args.k in p.name)
    results = check(plants)
    caught = sum(outcome == "caught" for _, outcome in results)
    print(f"{caught}/{len(results)} planted bugs caught")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
