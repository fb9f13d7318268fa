"""
``bind: unix:///path`` and ``bind: unix://@abstract`` (issue #9): the gateway
listens on that Unix socket and routes its connections like a TCP server's
(the seed's go-echo backend: banner first, then echo), with real clients.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import textwrap
import time
import uuid

import pytest

from tests.e2e.conftest import Backends
from tests.e2e.test_seed_walkthrough import BANNER_FIRST_LINE, recv_until
from tests.support.gateway import twistd

CONFIG = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: uds}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 0, name: uds, protocol: TCP}}
    bind: {bind}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: uds}}
spec:
  hosts: ["*"]
  gateways: [uds]
  tcp:
  - route:
    - destination: {{host: tcp-echo-service, port: {{number: 2701}}}}
"""


def unix_connect(address: str, timeout: float = 15.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(address)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_unix_socket_listener_routes_to_the_backend(backends: Backends, tmp_path, kind) -> None:
    if kind == "path":
        path = str(tmp_path / "gw.sock")
        bind, address = f"unix://{path}", path
    else:
        name = f"tsgate-test-{uuid.uuid4().hex[:12]}"
        bind, address = f"unix://@{name}", "\0" + name
    config = tmp_path / "uds.yaml"
    config.write_text(textwrap.dedent(CONFIG.format(bind=bind)))
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        gateway = subprocess.Popen(
            [twistd(), "--nodaemon", "--pidfile=", "tsgate", "--config", str(config),
             "--config", str(backends.service_entries), "--admin", "none",
             "--readiness", "none"], stdout=out, stderr=subprocess.STDOUT)
    try:
        with unix_connect(address) as s:
            assert recv_until(s, b"\n").startswith(BANNER_FIRST_LINE)
            s.sendall(b"hello over a unix socket\n")
            assert recv_until(s, b"socket\n").endswith(b"hello over a unix socket\n")
        assert "tsgate listening: " + bind in log.read_text()
        if kind == "path" and shutil.which("nc"):
            done = subprocess.run(["nc", "-U", "-q", "1", address], input=b"ping\n",
                                  capture_output=True, timeout=20)
            assert done.stdout.startswith(BANNER_FIRST_LINE), done
            assert done.stdout.endswith(b"ping\n")
    finally:
        gateway.terminate()
        gateway.wait(15)
