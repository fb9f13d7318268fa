"""
Run the real gateway (``twistd -n tsgate``) as a subprocess for end-to-end tests.

Ports come from the YAML (31400 in the seed); tests remap each to a free
loopback port with ``--endpoint PORT=tcp:0:interface=127.0.0.1`` and read
the bound address from the gateway's "tsgate listening" log line, exactly as
a user would remap a privileged port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import yaml

from tests.support.net import free_port as free_port  # re-exported: tests import it from here

LISTENING = re.compile(r"tsgate listening: (\S+)_(\d+) on ([\d.:\[\]a-f]+):(\d+)")


def twistd() -> str:
    """The twistd script of the Python running the tests."""
    beside = Path(sys.executable).parent / "twistd"
    return str(beside) if beside.exists() else "twistd"


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def write_service_entries(path: Path, backends: dict[str, tuple[int, int]],
                          namespace: str = "default") -> Path:
    """
    ServiceEntries pointing destination hosts at local backends:
    ``{"tcp-echo-service": (2701, 40123)}`` maps service port 2701 of that
    host to 127.0.0.1:40123.
    """
    docs = []
    for host, (service_port, local_port) in backends.items():
        docs.append({
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": f"local-{host}", "namespace": namespace},
            "spec": {
                "hosts": [host],
                "location": "MESH_INTERNAL",
                "resolution": "STATIC",
                "ports": [{"number": service_port, "name": "tcp", "protocol": "TCP",
                           "targetPort": local_port}],
                "endpoints": [{"address": "127.0.0.1"}],
            },
        })
    path.write_text(yaml.safe_dump_all(docs))
    return path


class GatewayProcess:
    """A running ``twistd -n tsgate``; ``ports`` maps config port -> bound local port."""

    def __init__(self, configs: Sequence[str], ports: Sequence[int],
                 extra: Sequence[str] = (), cwd: Optional[str] = None,
                 access_log: Optional[Path] = None, timeout: float = 20.0,
                 env: Optional[dict[str, str]] = None) -> None:
        args = [twistd(), "--nodaemon", "--pidfile=", "tsgate"]
        for config in configs:
            args += ["--config", str(config)]
        for port in ports:
            args += ["--endpoint", f"{port}=tcp:0:interface=127.0.0.1:backlog=1024"]
        # no fixed ports: tests run side by side (an explicit option in extra wins)
        args += ["--admin", "none", "--readiness", "none", "--metrics", "none"]
        if access_log is not None:
            args += ["--access-log", str(access_log)]
        args += list(extra)
        self.args = args
        self.access_log = access_log
        self.output: list[str] = []
        self.ports: dict[int, int] = {}
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self._ready = threading.Event()
        self._expected = set(ports)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("gateway did not start:\n" + "".join(self.output))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            match = LISTENING.search(line)
            if match:
                self.ports[int(match.group(2))] = int(match.group(4))
                if self._expected <= set(self.ports):
                    self._ready.set()
        self._ready.set()

    def port(self, config_port: int) -> int:
        return self.ports[config_port]

    def text(self) -> str:
        return "".join(self.output)

    def access_lines(self) -> list[str]:
        if self.access_log is not None and self.access_log.exists():
            return self.access_log.read_text().splitlines()
        return [line for line in self.output if line.startswith("[") and '"- - -"' in line]

    def wait_access_lines(self, count: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.access_lines()
            if len(lines) >= count:
                return lines
            time.sleep(0.05)
        raise TimeoutError(f"wanted {count} access log lines, have: {self.access_lines()}")

    def wait_access_line_from(self, client: tuple[str, int], timeout: float = 10.0) -> str:
        """The access-log line of the connection whose client address is ``client``.

        Lines of earlier connections may still be arriving, so "the last line" is not enough.
        """
        needle = f" {client[0]}:{client[1]} "
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.access_lines():
                if needle in line:
                    return line
            time.sleep(0.05)
        raise TimeoutError(f"no access log line from {client}: {self.access_lines()}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        return self.process.returncode

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
