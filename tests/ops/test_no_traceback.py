"""
Every CLI verb and every ``twistd tsgate`` option, given a bad value, ends
with a message and a non-zero exit, never a Python traceback; the twistd
options are refused before any listener starts. And a reader that goes away
(``tsgate routes --json | head -c 200``) is not a traceback either.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway import twistd

ROOT = Path(__file__).resolve().parents[2]
SEED = [str(ROOT / "examples/istioinaction"), str(ROOT / "examples/istioinaction/sni"),
        str(ROOT / "examples/istioinaction/local")]

pytestmark = pytest.mark.e2e


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env(),
                          cwd=str(ROOT), stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")
    (d / "broken.yaml").write_text("kind: Gateway\nmetadata: {name: [\n")
    (d / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01garbage\x00")
    (d / "wrongtype.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n"
        "spec: {servers: 7}\n")
    (d / "empty.bin").write_bytes(b"")
    (d / "control.yaml").write_text('kind: Gateway\nmetadata: {name: "a\x07"}\n')
    return {p.name: str(p) for p in d.iterdir()}


CLI_CASES = [
    [],
    ["bogus-verb"],
    ["--no-such-flag"],
    ["validate"],
    ["validate", "/nonexistent/dir"],
    ["validate", "{broken.yaml}"],
    ["validate", "--json", "{binary.yaml}"],
    ["validate", "{wrongtype.yaml}"],
    ["validate", "{control.yaml}"],  # found by tests/fuzz: was a ReaderError traceback
    ["validate", "--gateway-label", "novalue", *SEED],
    ["validate", "--gateway-label", "=x", *SEED],
    ["routes", "/nonexistent/dir"],
    ["routes", "--json", "{broken.yaml}"],
    ["routes", "{wrongtype.yaml}"],
    ["explain", *SEED],
    ["explain", "--port", "notaport", *SEED],
    ["explain", "--port", "31400", "/nonexistent"],
    ["explain", "--port", "31400", "--first-bytes", "/nonexistent/file", *SEED],
    ["explain", "--port", "31400", "--source", "not-an-ip", *SEED],
    ["explain", "--port", "31400", "--bind", "not-an-ip", *SEED],
    ["explain", "--port", "31400", "{broken.yaml}"],
    ["plugins", "--bogus"],
]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: " ".join(c)[:60] or "(none)")
def test_cli_bad_values(case: list[str], bad_files: dict[str, str]) -> None:
    args = [bad_files[a[1:-1]] if a.startswith("{") else a for a in case]
    out = run([sys.executable, "-m", "tsgate", *args])
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    assert out.returncode != 0, text
    assert out.stderr.strip(), "a refusal says why"


TWISTD_CASES = [
    [],  # no --config
    ["--config", "/nonexistent/dir"],
    ["--config", "{broken.yaml}"],
    ["--config", "{binary.yaml}"],
    ["--inspect-timeout", "abc"],
    ["--inspect-timeout", "-1"],
    ["--connect-timeout", "soon"],
    ["--idle-timeout", "1x"],
    ["--drain-period", "nan"],
    ["--watch-interval", "inf"],
    ["--access-log", "/nonexistent/dir/a.log"],
    ["--access-log", "/"],
    ["--access-log-format", "xml"],
    ["--log-format", "xml"],
    ["--log-level", "loud"],
    ["--admin", "tcp:notaport"],
    ["--admin", "bogus:1"],
    ["--admin", "unix:/nonexistent/dir/admin.sock"],
    ["--readiness", "tcp:port=99999"],
    ["--readiness", "ssl:15021:privateKey=/nonexistent.pem"],
    ["--metrics", "tcp:notaport"],
    ["--metrics", ""],
    ["--endpoint", "31400=bogus:1"],
    ["--endpoint", "31400=tcp:notaport"],
    ["--endpoint", "notaport=tcp:0"],
    ["--endpoint", "70000=tcp:0"],
    ["--endpoint", "31400"],
    ["--endpoint", "31400=systemd:domain=INET:index=0"],  # no socket handed over
    ["--gateway-label", "novalue"],
    ["--bind", "not-an-ip"],
    ["--bind", "192.0.2.1"],  # an address this machine does not have
    ["--namespace"],  # missing value
    ["--no-such-option", "1"],
]


@pytest.mark.parametrize("case", TWISTD_CASES, ids=lambda c: " ".join(c)[:60] or "(none)")
def test_twistd_option_bad_values(case: list[str], bad_files: dict[str, str]) -> None:
    args = [bad_files[a[1:-1]] if a.startswith("{") else a for a in case]
    if args[:1] != ["--config"] and args:
        args = ["--config", SEED[0], "--config", SEED[2], *args]
    fixed = ["--admin", "none", "--readiness", "none", "--metrics", "none",
             "--endpoint", "31400=tcp:0:interface=127.0.0.1"]
    # the option under test comes last: it wins over the fixed ones
    out = run([twistd(), "--nodaemon", "--pidfile=", "tsgate",
               *(fixed if case and case[0] not in ("--endpoint", "--bind") else fixed[:6]),
               *args])
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    assert out.returncode != 0, text
    if case and case[0] != "--bind" and "systemd" not in " ".join(case):
        assert "tsgate listening" not in text, "refused before any listener starts"


@pytest.mark.parametrize("verb", [["routes", "--json"], ["validate", "--json"], ["routes"],
                                  ["explain", "--port", "31400"]])
def test_reader_gone_is_not_a_traceback(verb: list[str]) -> None:
    """`tsgate routes --json | head -c 200`: the reader leaves; tsgate stops quietly."""
    proc = subprocess.Popen([sys.executable, "-m", "tsgate", *verb, *SEED], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT))
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(1)
    proc.stdout.close()  # as head does once it has its bytes
    err = proc.stderr.read().decode()
    proc.wait(60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in (0, 141)


def test_shell_pipe_into_head() -> None:
    """The issue's own command line, through a shell."""
    cmd = (f"{sys.executable} -m tsgate routes --json {' '.join(SEED)} | head -c 200 "
           ">/dev/null; {sys.executable} -m tsgate validate --json {' '.join(SEED)} "
           "| head -c 1 >/dev/null")
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60,
                         env=env())
    assert "Traceback" not in out.stderr, out.stderr
