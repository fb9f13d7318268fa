"""
Fixtures for end-to-end tests: the book's backends as real processes, fresh
certificates, and the seed's YAML (verbatim, from examples/istioinaction/).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import free_port, wait_for_port, write_service_entries

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "istioinaction"
sys.path.insert(0, str(EXAMPLE))

import certs  # noqa: E402

HOSTS = ("simple-sni-1.istioinaction.io", "simple-sni-2.istioinaction.io")


def seed(name: str) -> str:
    """A seed YAML file, as the book has it."""
    path = EXAMPLE / name
    assert path.exists(), path
    return str(path)


TCP_FILES = [seed("echo.yaml"), seed("gateway-tcp.yaml"), seed("echo-vs.yaml")]
SNI_BOTH_FILES = [seed("sni/passthrough-sni-gateway-both.yaml"),
                  seed("sni/passthrough-sni-vs-1.yaml"), seed("sni/passthrough-sni-vs-2.yaml")]


class Backends:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.echo_port = free_port()
        self.service_ports = (free_port(), free_port())
        self.certs = [certs.generate(workdir, host) for host in HOSTS]
        env = {**os.environ, "TCP_PORT": str(self.echo_port), "NODE_NAME": "minikube",
               "POD_NAME": "tcp-echo-deployment-1", "POD_NAMESPACE": "istioinaction",
               "POD_IP": "127.0.0.1", "SERVICE_ACCOUNT": "default"}
        self._start([sys.executable, str(EXAMPLE / "backends" / "echo_server.py")], env)
        for index, (paths, port) in enumerate(zip(self.certs, self.service_ports), 1):
            env = {**os.environ, "LISTEN_ADDR": f"127.0.0.1:{port}",
                   "TLS_CERT_LOCATION": str(paths.leaf_cert),
                   "TLS_KEY_LOCATION": str(paths.leaf_key),
                   "NAME": f"simple-tls-service-{index}",
                   "MESSAGE": f"Hello from simple-tls-service-{index}!!!"}
            self._start([sys.executable, str(EXAMPLE / "backends" / "fake_service.py")], env)
        for port in (self.echo_port, *self.service_ports):
            wait_for_port(port)
        self.service_entries = write_service_entries(workdir / "local-backends.yaml", {
            "tcp-echo-service": (2701, self.echo_port),
            "simple-tls-service-1": (80, self.service_ports[0]),
            "simple-tls-service-2": (80, self.service_ports[1]),
        })

    def _start(self, args: list[str], env: dict[str, str]) -> None:
        log = open(self.workdir / f"backend-{len(self.processes)}.log", "wb")  # noqa: SIM115
        self.processes.append(subprocess.Popen(args, env=env, stdout=log, stderr=log))

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="session")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    started = Backends(tmp_path_factory.mktemp("backends"))
    yield started
    started.stop()
