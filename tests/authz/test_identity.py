"""
AuthorizationPolicy identities from client certificates (issues #12 + #10):
the SPIFFE URI SAN of a verified certificate -> Istio's principal and
namespace (tsgate.tls.identity), and the gate deciding principal rules after
the TLS handshake of a MUTUAL/OPTIONAL_MUTUAL server, before any upstream.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support.tlscerts import CA, write_credential
from tsgate.authz import gate
from tsgate.authz.engine import UNKNOWN
from tsgate.authz.limits import Guards
from tsgate.config import GatewayOptions, load_config
from tsgate.stats import Stats
from tsgate.tls.identity import namespace_of, principal_of, spiffe_ids


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA.create()


def test_spiffe_uri_san_is_the_principal(ca: CA) -> None:
    leaf = ca.issue("client", dns=["client.example.test"],
                    uris=["spiffe://cluster.local/ns/good/sa/client"], client=True)
    assert spiffe_ids(leaf.cert) == ("spiffe://cluster.local/ns/good/sa/client",)
    principal = principal_of(leaf.cert)
    assert principal == "cluster.local/ns/good/sa/client"
    assert namespace_of(principal) == "good"


def test_other_trust_domain_keeps_its_name(ca: CA) -> None:
    leaf = ca.issue("c", uris=["spiffe://example.org/ns/shop/sa/web"], client=True)
    assert principal_of(leaf.cert) == "example.org/ns/shop/sa/web"
    assert namespace_of(principal_of(leaf.cert)) == "shop"


def test_no_uri_san_no_principal(ca: CA) -> None:
    for leaf in (ca.issue("dns-only", dns=["client.example.test"], client=True),
                 ca.issue("no-san-at-all", client=True)):
        assert spiffe_ids(leaf.cert) == ()
        assert principal_of(leaf.cert) is None
        assert namespace_of(principal_of(leaf.cert)) is None
    assert principal_of(None) is None


def test_non_spiffe_uri_is_skipped_for_the_spiffe_one(ca: CA) -> None:
    leaf = ca.issue("c", uris=["https://example.test/x",
                               "spiffe://cluster.local/ns/a/sa/b"], client=True)
    assert principal_of(leaf.cert) == "cluster.local/ns/a/sa/b"
    only_https = ca.issue("c", uris=["https://example.test/ns/a/sa/b"], client=True)
    assert principal_of(only_https.cert) is None
    no_path = ca.issue("c", uris=["spiffe://cluster.local"], client=True)
    assert principal_of(no_path.cert) is None


YAML = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: tls-m, protocol: TLS}
    hosts: ["m.example.test"]
    tls: {mode: MUTUAL, credentialName: cred-m}
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: apps}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - match: [{port: 8443}]
    route: [{destination: {host: echo.local, port: {number: 1}}}]
  - match: [{port: 31400}]
    route: [{destination: {host: echo.local, port: {number: 1}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-good, namespace: apps}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/good/sa/client"]}}]
  - from: [{source: {namespaces: ["team"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-net10, namespace: apps}
spec:
  action: DENY
  rules: [{from: [{source: {ipBlocks: ["10.0.0.0/8"]}}]}]
"""


def config(tmp_path: Path) -> Any:
    creds = tmp_path / "creds"
    creds.mkdir()
    ca = CA.create()
    write_credential(creds, "cred-m", ca.issue("m.example.test", dns=["m.example.test"]),
                     ca=ca, separate_ca=True)
    (tmp_path / "c.yaml").write_text(textwrap.dedent(YAML))
    result = load_config([str(tmp_path / "c.yaml")],
                         GatewayOptions(credentials_dir=str(creds)))
    assert result.ok, result.errors
    return result


def test_principal_rules_wait_for_the_handshake(tmp_path: Path) -> None:
    result = config(tmp_path)
    mutual = next(li for li in result.table.listeners if li.port == 8443)
    assert mutual.authz.identity_pending
    guards, stats = Guards(), Stats()
    # an IP DENY rule still closes the connection at accept
    adm, refusal = gate.admit(guards, stats, mutual, peer="10.1.1.1", remote=None,
                              local=None, now=1.0)
    assert refusal == "rbac_access_denied_matched_policy[ns[apps]-policy[no-net10]-rule[0]]"
    gate.closed(adm)
    # otherwise undecided at accept: the principal is not known yet
    adm, refusal = gate.admit(guards, stats, mutual, peer="127.0.0.1", remote=None,
                              local=None, now=1.0)
    assert refusal is None and adm is not None and not adm.decided
    assert adm.facts.principal is UNKNOWN
    assert gate.inspected(adm, guards, stats, "m.example.test", 2.0,
                          "cluster.local/ns/good/sa/client") is None
    assert adm.verdict is not None and adm.verdict.allowed
    assert adm.verdict.policy == "ns[apps]-policy[only-good]-rule[0]"
    gate.closed(adm)
    for principal in ("cluster.local/ns/bad/sa/client", None):
        adm, refusal = gate.admit(guards, stats, mutual, peer="127.0.0.1", remote=None,
                                  local=None, now=3.0)
        assert refusal is None
        assert gate.inspected(adm, guards, stats, "m.example.test", 4.0, principal) == \
            "rbac_access_denied_matched_policy[none]"
        gate.closed(adm)
    # namespaces: the ns segment of the principal
    adm, _ = gate.admit(guards, stats, mutual, peer="127.0.0.1", remote=None, local=None,
                        now=5.0)
    assert gate.inspected(adm, guards, stats, "m.example.test", 5.0,
                          "cluster.local/ns/team/sa/anything") is None
    gate.closed(adm)
    assert stats.total("tcp.rbac.denied") == 3 and stats.total("tcp.rbac.allowed") == 2


def test_listener_without_mutual_tls_decides_at_accept_and_warns(tmp_path: Path) -> None:
    result = config(tmp_path)
    plain = next(li for li in result.table.listeners if li.port == 31400)
    assert not plain.authz.identity_pending
    adm, refusal = gate.admit(Guards(), Stats(), plain, peer="127.0.0.1", remote=None,
                              local=None, now=1.0)
    assert refusal == "rbac_access_denied_matched_policy[none]"  # no principal, ever
    warnings = [d for d in result.diagnostics if d.severity == "warning"]
    about = [d for d in warnings if "verified client certificate" in d.message]
    # once per identity field, naming the listener without MUTUAL TLS; none for 8443
    assert [d.path for d in about] == ["spec.rules[0].from[0].source.principals",
                                       "spec.rules[1].from[0].source.namespaces"]
    assert all("0.0.0.0_31400" in d.message and "0.0.0.0_8443" not in d.message
               for d in about)
    assert all(d.line > 0 and "AuthorizationPolicy apps/only-good" in d.resource
               for d in about)


def test_explain_says_principal_rules_wait_for_the_handshake(tmp_path: Path) -> None:
    from tsgate.authz.explain import authorization

    result = config(tmp_path)
    mutual = next(li for li in result.table.listeners if li.port == 8443)
    view = authorization(mutual, "127.0.0.1", "m.example.test")
    assert view["decision"] == "denied"  # judged without a client certificate
    assert view["when"].startswith("after the TLS handshake")
    view = authorization(mutual, "10.0.0.1", "m.example.test")
    assert view["decision"] == "denied" and view["when"].startswith("at accept")
