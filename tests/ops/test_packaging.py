"""
The package as released: license and metadata, the version everywhere, the
Dockerfile (linted, and its ENTRYPOINT + CMD run: CI machines have no image
builder), the systemd units (their command run under systemd-socket-activate),
the logrotate sample, the two set-up scripts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.gateway import free_port, twistd, wait_for_port
from tsgate import __version__
from tsgate.tap import Options

ROOT = Path(__file__).resolve().parents[2]
SEED = [str(ROOT / "examples/istioinaction"), str(ROOT / "examples/istioinaction/local")]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_license_and_pep621_metadata():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "tsgate" and project["license"] == {"text": "MIT"}
    assert "License :: OSI Approved :: MIT License" in project["classifiers"]
    assert {"Homepage", "Documentation", "Changelog"} <= set(project["urls"])
    assert project["scripts"] == {"tsgate": "tsgate.cli:main"}
    assert project["dynamic"] == ["version"]
    assert "prometheus_client" in project["optional-dependencies"]["test"]
    # setup.py repeats none of it (one source of truth)
    setup = (ROOT / "setup.py").read_text()
    assert "version=" not in setup and "install_requires" not in setup


def test_version_everywhere():
    out = subprocess.run([sys.executable, "-m", "tsgate", "--version"], capture_output=True,
                         text=True, env=env(), timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"tsgate {__version__}"
    out = subprocess.run([twistd(), "tsgate", "--version"], capture_output=True, text=True,
                         env=env(), timeout=60)
    assert out.returncode == 0 and out.stdout.startswith(f"tsgate {__version__} (Twisted ")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{__version__}]" in changelog and "## [Unreleased]" in changelog


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "examples/kubernetes/Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_lint():
    """What hadolint would catch and what matters here: sources exist, non-root, exec form."""
    steps = dockerfile()
    kinds = [k for k, _ in steps]
    assert kinds[0] == "FROM" and ":" in steps[0][1] and not steps[0][1].endswith(":latest")
    for kind, rest in steps:
        assert kind in {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "EXPOSE",
                        "ENTRYPOINT", "CMD"}, kind
        if kind == "COPY":
            *sources, _dest = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        if kind == "RUN":
            assert "pip install" not in rest or "--no-cache-dir" in rest
    user = [rest for kind, rest in steps if kind == "USER"]
    assert user and user[-1] not in ("root", "0")
    entry = json.loads(dict(steps)["ENTRYPOINT"])
    cmd = json.loads(dict(steps)["CMD"])
    assert entry == ["twistd", "-n", "--pidfile=", "tsgate"]
    options = Options()
    options.parseOptions(cmd)
    exposed = {int(p) for p in dict(steps)["EXPOSE"].split()}
    assert exposed == {31400, 15021, 15090}
    assert options["metrics"] == "tcp:15090" and options["readiness"] == "tcp:15021"
    assert options["admin"].endswith("interface=127.0.0.1")  # not exposed


@pytest.mark.e2e
def test_dockerfile_entrypoint_runs(tmp_path):
    """ENTRYPOINT + CMD, with the image's paths and ports mapped to this machine, starts."""
    steps = dict(dockerfile())
    entry = json.loads(steps["ENTRYPOINT"])
    cmd = json.loads(steps["CMD"])
    ports = {"15000": free_port(), "15021": free_port(), "15090": free_port()}
    args = []
    for arg in cmd:
        if arg == "/etc/tsgate":
            arg = SEED[0]
        for old, new in ports.items():
            arg = arg.replace(f"tcp:{old}", f"tcp:{new}")
        args.append(arg if not arg.startswith("tcp:") or "interface" in arg
                    else arg + ":interface=127.0.0.1")
    args += ["--config", SEED[1], "--endpoint", "31400=tcp:0:interface=127.0.0.1"]
    argv = [twistd(), *entry[1:], *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env(), cwd=str(tmp_path))
    try:
        wait_for_port(ports["15090"], timeout=30)
        wait_for_port(ports["15021"], timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"tsgate {__version__} started: 4 file(s), 1 listener(s) (127.0.0.1:" in out, out


def unit(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (ROOT / "examples/systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.e2e
@pytest.mark.skipif(not shutil.which("systemd-socket-activate"),
                    reason="systemd-socket-activate is not installed")
def test_systemd_units_socket_activation(tmp_path):
    """The service's ExecStart, under systemd-socket-activate, serves the socket it is handed."""
    socket_unit, service = unit("tsgate.socket"), unit("tsgate.service")
    listen = [int(p) for p in socket_unit["ListenStream"]]
    exec_start = shlex.split(service["ExecStart"][0])
    assert exec_start[0].endswith("/twistd") and "tsgate" in exec_start
    args = exec_start[exec_start.index("tsgate") + 1:]
    assert "/var/log/tsgate/access.log" in args  # LogsDirectory=tsgate creates the directory
    local = {"/etc/tsgate": SEED[0], "/var/log/tsgate/access.log": str(tmp_path / "a.log"),
             "tcp:15000:interface=127.0.0.1": "none", "tcp:15021": "none",
             "tcp:15090": "none"}
    args = [local.get(a, a) for a in args] + ["--config", SEED[1], "--log-format", "text"]
    options = Options()
    options.parseOptions(args)
    assert {p: f"systemd:domain=INET:index={i}" for i, p in enumerate(listen)} == \
        options["endpoints"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["Requires"] == ["tsgate.socket"]

    port = free_port()
    # it passes only the variables named with -E
    argv = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=tsgate",
            "-E", f"PYTHONPATH={env()['PYTHONPATH']}", "-E", "PATH", "-E", "HOME",
            "-E", "PYTHONUNBUFFERED=1",
            twistd(), "--nodaemon", "--pidfile=", "tsgate", *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env(), cwd=str(tmp_path))
    try:
        deadline = time.monotonic() + 30
        while True:  # it listens first, and starts tsgate on the first connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "systemd-socket-activate did not listen"
                time.sleep(0.1)
        # read until the startup summary (a watchdog ends a gateway that never says it)
        watchdog = threading.Timer(30, proc.kill)
        watchdog.start()
        seen = []
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if " started: " in line:
                break
        watchdog.cancel()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    out = "".join(seen) + out
    assert f"listener(s) (127.0.0.1:{port})" in out, out
    assert proc.returncode == 0, out


def test_logrotate_sample_signals_sigusr1():
    text = (ROOT / "examples/logrotate/tsgate").read_text()
    assert "/var/log/tsgate/access.log" in text and "SIGUSR1" in text
    assert "copytruncate" not in text.replace("(no copytruncate", "")
    assert unit("tsgate.service")["LogsDirectory"] == ["tsgate"]


def test_setup_scripts_are_idempotent_and_strict():
    """Both scripts set themselves up the same way; pytest's "no tests" (5) is a failure."""
    for name in ("run-tests", "run-walkthrough"):
        script = ROOT / name
        assert os.access(script, os.X_OK)
        text = script.read_text()
        assert "scripts/bootstrap.sh" in text and "bootstrap_venv" in text
    assert '"$status" = 5' in (ROOT / "run-tests").read_text()
    ci = (ROOT / ".ci/run").read_text()
    assert "./run-tests" in ci and "ruff" in ci and "mypy" in ci
    out = subprocess.run(["bash", "-n", str(ROOT / "scripts/bootstrap.sh")], capture_output=True)
    assert out.returncode == 0
