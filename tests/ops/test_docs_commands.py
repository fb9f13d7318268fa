"""
The README's and docs/operations.md's command blocks are true: every
``tsgate`` command runs and exits 0 (a ``$ command`` followed by output must
print that output), every ``twistd ... tsgate`` command line parses with
tsgate's options, the fuzz long-run command runs (with fewer inputs), and
every repository path they name exists.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tsgate.tap import Options

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs/operations.md"]


def blocks(path: Path) -> list[list[str]]:
    """Fenced sh/console/plain code blocks (dedented to their fence), continuations joined."""
    out: list[list[str]] = []
    current: list[str] | None = None
    skipping = False
    fence_indent = 0
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("```"):
            if current is None and not skipping:
                fence_indent = len(raw) - len(raw.lstrip())
                if stripped in ("```", "```sh", "```console"):
                    current = []
                else:
                    skipping = True
            elif skipping:
                skipping = False
            else:
                assert current is not None
                out.append(current)
                current = None
            continue
        if current is None:
            continue
        line = raw[fence_indent:] if raw[:fence_indent].strip() == "" else raw
        if current and current[-1].endswith("\\"):
            current[-1] = current[-1][:-1] + " " + line.strip()
        else:
            current.append(line)
    return out


def strip_comment(line: str) -> str:
    return re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


def commands() -> list[tuple[str, str, list[str]]]:
    """(doc, command, expected output lines or [])."""
    found = []
    for path in DOCS:
        for block in blocks(path):
            dollar = any(line.startswith("$ ") for line in block)
            i = 0
            while i < len(block):
                line = block[i]
                i += 1
                if dollar and not line.startswith("$ "):
                    continue
                command = strip_comment(line[2:] if dollar else line)
                expected: list[str] = []
                while dollar and i < len(block) and not block[i].startswith("$ "):
                    expected.append(block[i])
                    i += 1
                if command:
                    found.append((path.name, command, expected))
    return found


ALL = commands()


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


TSGATE = [(d, c, e) for d, c, e in ALL if c.startswith("tsgate ")]
TWISTD = [(d, c) for d, c, _ in ALL
          if c.startswith("twistd ") and " tsgate " in c + " " and "[" not in c]
FUZZ = [(d, c) for d, c, _ in ALL if "tests.fuzz.long_run" in c]


def test_the_docs_have_the_commands_this_test_runs() -> None:
    assert len(TSGATE) >= 5 and FUZZ
    assert any("explain" in c and "sni/" in c for _, c, _ in TSGATE), \
        "the README's explain example includes sni/ (the TLS route)"


@pytest.mark.parametrize("doc,command,expected", TSGATE, ids=[c[:70] for _, c, _ in TSGATE])
def test_tsgate_commands_run(doc: str, command: str, expected: list[str]) -> None:
    args = shlex.split(command)[1:]
    out = subprocess.run([sys.executable, "-m", "tsgate", *args], capture_output=True, text=True,
                         cwd=str(ROOT), env=env(), timeout=120)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 0, (doc, command, out.stdout, out.stderr)
    if expected:
        assert out.stdout.rstrip("\n").splitlines() == [e.rstrip() for e in expected]


@pytest.mark.parametrize("doc,command", TWISTD, ids=[c[:70] for _, c in TWISTD])
def test_twistd_command_lines_parse(doc: str, command: str) -> None:
    argv = shlex.split(command)
    args = argv[argv.index("tsgate") + 1:]
    options = Options()
    options.parseOptions(args)  # type: ignore[no-untyped-call]
    for path in options["config"]:
        assert (ROOT / path).exists(), path


@pytest.mark.parametrize("doc,command", FUZZ, ids=[c[:70] for _, c in FUZZ])
def test_fuzz_long_run_command_runs(doc: str, command: str) -> None:
    args = shlex.split(command)
    module_at = args.index("-m")
    rest = args[module_at + 2:]
    if "--inputs" in rest:
        rest[rest.index("--inputs") + 1] = "30"
    else:
        rest += ["--inputs", "30"]
    if not [a for a in rest if not a.startswith("-") and not a.isdigit()]:
        rest += ["hint:tls", "proxy-header"]  # all targets: two of them here
    out = subprocess.run([sys.executable, "-m", "tests.fuzz.long_run", *rest],
                         capture_output=True, text=True, cwd=str(ROOT), env=env(), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "30 inputs" in out.stdout


PATH_RE = re.compile(r"(?<![\w/.])((?:examples|docs|tac|tests|tsgate|bench|scripts|\.ci)"
                     r"/[\w./-]*[\w/])")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_paths_named_in_the_docs_exist(doc: Path) -> None:
    text = doc.read_text()
    missing = sorted({p for p in PATH_RE.findall(text)
                      if not (ROOT / p).exists() and not p.startswith("tsgate/plugins/tsgate_")})
    assert not missing, missing
    for name in ("LICENSE", "CHANGELOG.md", "run-tests", "run-walkthrough"):
        assert (ROOT / name).exists()


def test_twistd_help_reads_as_sentences() -> None:
    """`twistd tsgate --help`: no docstring indentation inside a description, our --version."""
    from tests.support.gateway import twistd

    out = subprocess.run([twistd(), "tsgate", "--help"], capture_output=True, text=True,
                         env=env(), timeout=60)
    assert out.returncode == 0
    for line in out.stdout.splitlines():
        description = line[28:] if line.startswith("  ") else line
        assert "   " not in description.strip(), line
    assert "--metrics=" in out.stdout and "Print tsgate's version" in out.stdout
