"""
Gateway API ``protocol: TLS`` listeners with ``tls.mode: Terminate`` (issues
#16 + #10): translated to an Istio server with ``tls.mode: SIMPLE`` and
``credentialName`` the Secret's name; attached TCPRoutes get the plaintext;
status conditions as the API defines them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.tlscerts import CA, write_credential
from tsgate.config import GatewayOptions, load_config

GW = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - name: tls-term
    protocol: TLS
    port: 8443
    hostname: echo.example.test
    tls:
      mode: Terminate
      certificateRefs: [CERTREF]
"""
ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: tls-term}]
  rules:
  - backendRefs: [{name: echo, port: 7}]
"""
GRANT = """\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: certs, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: "", kind: Secret}]
"""


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    d = tmp_path / "creds"
    d.mkdir()
    write_credential(d, "echo-cert", CA.create().issue("echo.example.test",
                                                       dns=["echo.example.test"]))
    return d


@pytest.fixture
def load(tmp_path: Path, creds: Path) -> Callable[..., Any]:
    def _load(*texts: str, ref: str = "{name: echo-cert}", **kwargs: Any) -> Any:
        paths = []
        for i, text in enumerate(texts):
            p = tmp_path / f"{i:02d}.yaml"
            p.write_text(textwrap.dedent(text).replace("CERTREF", ref))
            paths.append(str(p))
        kwargs.setdefault("credentials_dir", str(creds))
        return load_config(paths, GatewayOptions(**kwargs))

    return _load


def conditions(result: Any, name: str = "tls-term") -> dict[str, tuple[str, str]]:
    li = result.gateway_api.listener("Gateway infra/gw", name)
    return {c.type: (c.status, c.reason) for c in li.conditions}


def test_terminate_listener_is_a_simple_server_with_the_secret_as_credential(
        load: Callable[..., Any]) -> None:
    from tsgate.config.gatewayapi.translate import translate

    r = load(GW, ROUTE)
    assert r.ok, r.diagnostics
    (li,) = r.table.listeners
    assert li.port == 8443 and li.protocols == ("TLS",)
    (chain,) = li.tls_chains
    assert chain.server_names == ("echo.example.test",)
    assert chain.termination is not None and chain.termination.mode == "SIMPLE"
    assert chain.termination.cert_names == ("echo.example.test",)
    # the TCPRoute is the plaintext route behind the terminated TLS
    assert chain.route.name == "infra/r#tcproute[0]"
    assert chain.route.source.resource == "TCPRoute infra/r"
    (wc,) = chain.route.destinations
    assert wc.cluster.name == "outbound|7||echo.infra.svc.cluster.local"
    # the synthetic Istio server
    t = translate(list(r.resources))
    (gw,) = [s for s in t.synthetic if s.meta.kind == "Gateway"]
    (server,) = gw.servers
    assert server.tls.mode == "SIMPLE" and server.tls.credential_name == "echo-cert"
    # status: accepted, resolved, programmed; TCPRoute is the kind it takes
    assert conditions(r) == {"Accepted": ("True", "Accepted"),
                             "ResolvedRefs": ("True", "ResolvedRefs"),
                             "Programmed": ("True", "Programmed"),
                             "Conflicted": ("False", "NoConflicts")}
    status = r.gateway_api.listener("Gateway infra/gw", "tls-term")
    assert status.supported_kinds == ("TCPRoute",) and status.attached_routes == 1
    assert r.gateway_api.condition("Gateway infra/gw", "Programmed").status == "True"
    assert r.gateway_api.condition("TCPRoute infra/r", "Accepted").status == "True"


def test_credential_that_cannot_be_read_is_invalid_certificate_ref(
        load: Callable[..., Any]) -> None:
    r = load(GW, ROUTE, ref="{name: missing-cert}")
    assert r.ok, r.errors  # the listener's status, not a refused configuration
    assert not r.table.listeners
    got = conditions(r)
    assert got["ResolvedRefs"] == ("False", "InvalidCertificateRef")
    assert got["Programmed"] == ("False", "Invalid")
    warning = next(d for d in r.warnings if "InvalidCertificateRef" in d.message)
    assert warning.resource == "Gateway infra/gw"
    assert warning.path.startswith("spec.listeners[0].tls.certificateRefs[0]")
    assert "missing-cert" in warning.message and warning.line > 1


def test_other_listeners_are_served_beside_a_bad_certificate(load: Callable[..., Any]) -> None:
    gw = GW + """\
  - name: tcp
    protocol: TCP
    port: 9000
"""
    route = ROUTE + """\
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: plain, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules:
  - backendRefs: [{name: echo, port: 7}]
"""
    r = load(gw, route, ref="{name: missing-cert}")
    assert r.ok
    assert [li.port for li in r.table.listeners] == [9000]
    assert conditions(r, "tcp")["Programmed"] == ("True", "Programmed")


def test_not_a_secret_is_invalid_certificate_ref(load: Callable[..., Any]) -> None:
    r = load(GW, ROUTE, ref="{group: example.com, kind: Vault, name: echo-cert}")
    got = conditions(r)
    assert got["ResolvedRefs"] == ("False", "InvalidCertificateRef")
    assert got["Programmed"] == ("False", "Invalid")
    assert not r.table.listeners


def test_cross_namespace_secret_needs_a_reference_grant(load: Callable[..., Any],
                                                         creds: Path) -> None:
    ref = "{name: echo-cert, namespace: certs}"
    r = load(GW, ROUTE, ref=ref)
    got = conditions(r)
    assert got["ResolvedRefs"] == ("False", "RefNotPermitted")
    assert got["Programmed"] == ("False", "Invalid")
    assert any("RefNotPermitted" in d.message and
               d.path == "spec.listeners[0].tls.certificateRefs[0]" for d in r.warnings)
    assert not r.table.listeners
    r = load(GW, ROUTE, GRANT, ref=ref)
    assert r.ok, r.diagnostics
    assert conditions(r)["ResolvedRefs"] == ("True", "ResolvedRefs")
    (li,) = r.table.listeners
    assert li.tls_chains[0].termination is not None
    # a grant for another Secret name does not do
    r = load(GW, ROUTE, GRANT.replace("kind: Secret}", "kind: Secret, name: other}"), ref=ref)
    assert conditions(r)["ResolvedRefs"] == ("False", "RefNotPermitted")


def test_tlsroute_on_a_terminate_listener_is_not_served(load: Callable[..., Any]) -> None:
    gw = GW.replace("    tls:\n", "    allowedRoutes: {kinds: [{kind: TLSRoute}]}\n    tls:\n")
    r = load(gw)
    got = conditions(r)
    assert got["Accepted"] == ("False", "UnsupportedValue")
    assert r.gateway_api.listener("Gateway infra/gw", "tls-term").supported_kinds == \
        ("TLSRoute",)


def test_terminate_and_passthrough_share_a_port_by_hostname(load: Callable[..., Any]) -> None:
    gw = GW + """\
  - name: tls-pass
    protocol: TLS
    port: 8443
    hostname: pass.example.test
    tls: {mode: Passthrough}
"""
    tls_route = """\
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: p, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: tls-pass}]
  hostnames: [pass.example.test]
  rules:
  - backendRefs: [{name: passthrough, port: 443}]
"""
    r = load(gw, ROUTE + tls_route)
    assert r.ok, r.diagnostics
    (li,) = r.table.listeners
    chains = {c.server_names: c for c in li.tls_chains}
    assert chains[("echo.example.test",)].termination is not None
    assert chains[("pass.example.test",)].termination is None
    assert chains[("pass.example.test",)].route.name == "infra/p#tlsroute[0]"
    assert conditions(r, "tls-pass")["Programmed"] == ("True", "Programmed")
    assert conditions(r, "tls-term")["Programmed"] == ("True", "Programmed")
