"""
tsgate.authz as pipeline stages, on a MemoryReactor: decided before any
upstream connect; behind a PROXY-like listener stage the client's address
(remoteIpBlocks, per-address limits) is the header's, not the peer's.
(The real PROXY protocol reader is issue 11's; tests/proxy/test_stages.py's
HeaderStage stands in for it here.)
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from tests.proxy.test_stages import HeaderStage, provide
from tests.support.proxy import Harness
from tests.support.samples import client_hello
from tsgate.authz import stages as authz_stages
from tsgate.config import load_config
from tsgate.routing import Listener

GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: default
  annotations: {ANNOTATIONS}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: ["*.example.test"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp: [{match: [{port: 31400}], route: [{destination: {host: echo.local, port: {number: 1}}}]}]
  tls:
  - match: [{port: 8443, sniHosts: ["*.example.test"]}]
    route: [{destination: {host: tls.local, port: {number: 1}}}]
"""


def listener(tmp_path: Path, policies: str, port: int = 31400,
             annotations: str = "{}") -> Listener:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(GATEWAY).replace("{ANNOTATIONS}", annotations)
                    + textwrap.dedent(policies))
    result = load_config([str(path)])
    assert result.ok, result.errors
    return next(li for li in result.table.listeners if li.port == port)


def policy(spec: str, name: str = "p") -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return (f"---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
            f"metadata: {{name: {name}, namespace: default}}\nspec:\n{body}\n")


def test_denied_at_accept_before_any_upstream(tmp_path: Path) -> None:
    li = listener(tmp_path, policy("""
        action: DENY
        rules: [{from: [{source: {ipBlocks: ["127.0.0.9"]}}]}]"""))
    h = Harness(li, [authz_stages.provider])
    protocol, down = h.accept()  # the harness's peer is 127.0.0.9
    assert h.reactor.tcpClients == []
    assert down.disconnecting and down.value() == b""
    h.close(protocol)
    assert h.records[0].connection_termination_details == \
        "rbac_access_denied_matched_policy[ns[default]-policy[p]-rule[0]]"
    assert h.ctx.stats.total("tcp.rbac.denied") == 1


def test_listener_without_policies_gets_no_hooks(tmp_path: Path) -> None:
    li = listener(tmp_path, "")
    assert li.authz is None
    h = Harness(li, [authz_stages.provider])
    runtime = h.ctx.runtime(li)
    assert runtime.accept_checks == () and runtime.decision_checks == ()
    h.accept()
    assert len(h.reactor.tcpClients) == 1


def test_remote_ip_blocks_use_the_header_address(tmp_path: Path) -> None:
    li = listener(tmp_path, policy("""
        rules: [{from: [{source: {remoteIpBlocks: ["198.51.100.0/24"]}}]}]"""),
        annotations='{tsgate.io/max-connections-per-ip: "1"}')
    h = Harness(li, [provide(listener=(HeaderStage(),)), authz_stages.provider])
    ok, _ = h.accept()
    assert h.reactor.tcpClients == []  # nothing decided before the header
    ok.dataReceived(b"HDR 198.51.100.7:5555\nhello")
    assert len(h.reactor.tcpClients) == 1
    # the same client through the same balancer: its per-address limit is the header's
    again, again_t = h.accept()
    again.dataReceived(b"HDR 198.51.100.7:5556\n")  # a header alone decides
    assert len(h.reactor.tcpClients) == 1 and again_t.disconnecting
    other, other_t = h.accept()
    other.dataReceived(b"HDR 203.0.113.1:5\n")
    assert len(h.reactor.tcpClients) == 1 and other_t.disconnecting
    for p in (ok, again, other):
        h.close(p)
    details = [r.connection_termination_details for r in h.records]
    assert details == ["-", "tsgate_limit_exceeded[max-connections-per-ip]",
                       "rbac_access_denied_matched_policy[none]"]
    tracker = h.ctx.guards.tracker(li.name)
    assert tracker.active == 0 and tracker.sources["198.51.100.7"].active == 0


def test_sni_rule_right_after_the_client_hello(tmp_path: Path) -> None:
    li = listener(tmp_path, policy("""
        action: DENY
        rules: [{when: [{key: connection.sni, values: ["bad.example.test"]}]}]"""),
        port=8443, annotations='{tsgate.io/max-inspecting-connections: "1"}')
    h = Harness(li, [authz_stages.provider])
    bad, bad_t = h.accept()
    # a second connection while the first is still in inspection: over the cap
    second, second_t = h.accept()
    assert second_t.disconnecting
    h.close(second)
    bad.dataReceived(client_hello("bad.example.test"))
    assert h.reactor.tcpClients == [] and bad_t.disconnecting
    h.close(bad)
    good, good_t = h.accept()
    good.dataReceived(client_hello("good.example.test"))
    assert len(h.reactor.tcpClients) == 1 and not good_t.disconnecting
    h.close(good)
    assert [r.connection_termination_details for r in h.records] == [
        "tsgate_limit_exceeded[max-inspecting-connections]",
        "rbac_access_denied_matched_policy[ns[default]-policy[p]-rule[0]]", "-"]
    stats: Any = h.ctx.stats
    assert stats.total("tcp.rbac.denied") == 1 and stats.total("tcp.rbac.allowed") == 1


def test_destination_ip_is_the_address_the_client_reached(tmp_path: Path) -> None:
    li = listener(tmp_path, policy("""
        action: DENY
        rules: [{when: [{key: destination.ip, values: ["127.0.0.1"]}]}]"""))
    h = Harness(li, [authz_stages.provider])
    protocol, down = h.accept()  # the harness's local address is 127.0.0.1:31400
    assert h.reactor.tcpClients == [] and down.disconnecting
    h.close(protocol)
