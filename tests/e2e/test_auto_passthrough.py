"""
``tls.mode: AUTO_PASSTHROUGH`` end to end (issue #9): the SNI
``outbound_.<port>_.<subset>_.<host>`` reaches that registry service with the
TLS bytes untouched (the client verifies the backend's own certificate);
names outside the registry are closed, never relayed.
"""

from __future__ import annotations

import socket
import ssl
import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import Backends
from tests.e2e.test_seed_walkthrough import https_get
from tests.support.gateway import GatewayProcess

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: cross-network-gateway
  namespace: istio-system
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: two, namespace: default}
spec:
  host: simple-tls-service-2
  subsets:
  - name: v1
"""

SVC1 = "simple-tls-service-1.default.svc.cluster.local"
SVC2 = "simple-tls-service-2.default.svc.cluster.local"


@pytest.fixture(scope="module")
def auto_gateway(backends: Backends, tmp_path_factory: pytest.TempPathFactory):
    config = tmp_path_factory.mktemp("auto") / "gateway.yaml"
    config.write_text(textwrap.dedent(GATEWAY))
    with GatewayProcess([str(config), str(backends.service_entries)], ports=[15443],
                        extra=["--inspect-timeout", "2"]) as gw:
        yield gw


def connect(port: int, sni: str, cafile: Path) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(cafile))
    context.check_hostname = False  # the SNI is a cluster name, not the certificate's name
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname=sni)


@pytest.mark.parametrize("index,sni", [(0, f"outbound_.80_._.{SVC1}"),
                                       (1, f"outbound_.80_._.{SVC2}"),
                                       (1, f"outbound_.80_.v1_.{SVC2}")])
def test_sni_names_the_cluster(auto_gateway: GatewayProcess, backends: Backends,
                               index: int, sni: str) -> None:
    with connect(auto_gateway.port(15443), sni, backends.certs[index].ca_chain) as s:
        leaf = ssl.PEM_cert_to_DER_cert(backends.certs[index].leaf_cert.read_text())
        assert s.getpeercert(binary_form=True) == leaf
        assert https_get(s, "x")["name"] == f"simple-tls-service-{index + 1}"


@pytest.mark.parametrize("sni", [
    "outbound_.80_._.evil.example.com",  # not in the registry: no open relay
    f"outbound_.81_._.{SVC1}",  # no such port
    f"outbound_.80_.v9_.{SVC2}",  # no such subset
    SVC1,  # a plain name is not a cluster name
])
def test_names_outside_the_registry_are_closed(auto_gateway: GatewayProcess,
                                               backends: Backends, sni: str) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with connect(auto_gateway.port(15443), sni, backends.certs[0].ca_chain) as s:
            s.recv(1)
