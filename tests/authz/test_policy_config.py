"""AuthorizationPolicy: parsing, Istio's validation rules, selection, compilation per listener."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Optional

import pytest

from tsgate.authz.engine import UNKNOWN, Facts, Verdict
from tsgate.config import ConfigResult, GatewayOptions, load_config

GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: apps}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: echo.local, port: {number: 2701}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls-vs, namespace: apps}
spec:
  hosts: ["*.example.com"]
  gateways: [gw]
  tls:
  - match: [{port: 8443, sniHosts: ["*.example.com"]}]
    route: [{destination: {host: tls.local, port: {number: 443}}}]
"""


def load(tmp_path: Path, policies: str, **kwargs: Any) -> ConfigResult:
    (tmp_path / "gw.yaml").write_text(textwrap.dedent(GATEWAY))
    (tmp_path / "policies.yaml").write_text(textwrap.dedent(policies))
    return load_config([str(tmp_path / "gw.yaml"), str(tmp_path / "policies.yaml")],
                       GatewayOptions(**kwargs))


def decide(result: ConfigResult, port: int, source: str, sni: Any = None,
           remote: Optional[str] = None, principal: Optional[str] = None) -> Optional[Verdict]:
    listener = next(li for li in result.table.listeners if li.port == port)
    if listener.authz is None:
        return Verdict(True, "", "no authz")
    return listener.authz.decide(Facts(source, remote, "127.0.0.1", sni, principal))


def messages(result: ConfigResult, severity: str) -> list[str]:
    return [f"{d.path}: {d.message}" for d in result.diagnostics if d.severity == severity]


def policy(name: str, spec: str, ns: str = "apps", api: str = "security.istio.io/v1",
           annotations: str = "") -> str:
    extra = f", annotations: {annotations}" if annotations else ""
    meta = f"{{name: {name}, namespace: {ns}{extra}}}"
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return f"---\napiVersion: {api}\nkind: AuthorizationPolicy\nmetadata: {meta}\nspec:\n{body}\n"


def test_both_api_versions_parse_and_apply(tmp_path: Path) -> None:
    text = policy("a", """
        action: DENY
        rules: [{from: [{source: {ipBlocks: ["127.0.0.5"]}}]}]
    """, api="security.istio.io/v1beta1") + policy("b", """
        action: DENY
        rules: [{from: [{source: {ipBlocks: ["127.0.0.6/32"]}}]}]
    """)
    result = load(tmp_path, text)
    assert result.ok, result.diagnostics
    assert decide(result, 31400, "127.0.0.5") == Verdict(
        False, "ns[apps]-policy[a]-rule[0]", "DENY policy matched")
    assert not decide(result, 31400, "127.0.0.6").allowed
    assert decide(result, 31400, "127.0.0.7").allowed


def test_unsupported_version_is_an_error(tmp_path: Path) -> None:
    result = load(tmp_path, policy("a", "action: DENY", api="security.istio.io/v1alpha1"))
    assert not result.ok
    assert "security.istio.io/v1beta1" in str(result.errors[0])


@pytest.mark.parametrize("spec,expected", [
    ("""
     rules: [{from: []}]""", "`from` must not be empty"),
    ("""
     rules: [{from: [{source: {}}]}]""", "`from.source` must not be empty"),
    ("""
     rules: [{to: [{operation: {}}]}]""", "`to.operation` must not be empty"),
    ("""
     rules: [{from: [{source: {ipBlocks: ["300.1.1.1"]}}]}]""", "invalid IP address '300.1.1.1'"),
    ("""
     rules: [{from: [{source: {remoteIpBlocks: ["10.0.0.0/33"]}}]}]""", "invalid CIDR range"),
    ("""
     rules: [{to: [{operation: {ports: ["70000"]}}]}]""", "invalid port '70000'"),
    ("""
     rules: [{when: [{key: source.ip}]}]""", "at least one of values or notValues"),
    ("""
     rules: [{when: [{key: source.ipp, values: ["1.2.3.4"]}]}]""", "unknown attribute: source.ipp"),
    ("""
     rules: [{when: [{key: destination.port, values: ["x"]}]}]""", "invalid port 'x'"),
    ("""
     action: CUSTOM""", "a CUSTOM action needs provider.name"),
    ("""
     action: DENY
     provider: {name: ext}""", "provider is only allowed with the CUSTOM action"),
    ("""
     action: REJECT""", "unknown action 'REJECT'"),
    ("""
     selector: {matchLabels: {istio: ingressgateway}}
     targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]""",
     "only one of targetRefs or selector"),
    ("""
     rules: [{from: [{source: {ipBlock: ["1.2.3.4"]}}]}]""", 'did you mean "ipBlocks"'),
])
def test_istio_validation_errors(tmp_path: Path, spec: str, expected: str) -> None:
    result = load(tmp_path, policy("bad", spec))
    assert not result.ok
    assert any(expected in m for m in messages(result, "error")), messages(result, "error")
    # the error names file, line, kind ns/name
    assert any("policies.yaml:" in str(d) and "AuthorizationPolicy apps/bad" in str(d)
               for d in result.errors)


def test_bad_dry_run_annotation(tmp_path: Path) -> None:
    result = load(tmp_path, policy("a", "action: DENY", annotations='{istio.io/dry-run: "maybe"}'))
    assert any("invalid istio.io/dry-run" in m for m in messages(result, "error"))


def test_no_allow_policy_allows_and_allow_with_no_match_denies(tmp_path: Path) -> None:
    result = load(tmp_path, policy("allow-lan", """
        rules: [{from: [{source: {ipBlocks: ["127.0.0.0/29"]}}]}]
    """))
    assert decide(result, 31400, "127.0.0.2") == Verdict(
        True, "ns[apps]-policy[allow-lan]-rule[0]", "ALLOW policy matched")
    denied = decide(result, 31400, "127.0.0.9")
    assert denied == Verdict(False, "", "no ALLOW policy matched")
    assert denied.termination_details == "rbac_access_denied_matched_policy[none]"


def test_deny_wins_over_allow_and_ids_carry_rule_index(tmp_path: Path) -> None:
    result = load(tmp_path, policy("allow-all", "rules: [{}]") + policy("deny", """
        action: DENY
        rules:
        - from: [{source: {ipBlocks: ["10.0.0.0/8"]}}]
        - from: [{source: {ipBlocks: ["127.0.0.3"]}}]
    """))
    v = decide(result, 31400, "127.0.0.3")
    assert v is not None and not v.allowed
    assert v.termination_details == \
        "rbac_access_denied_matched_policy[ns[apps]-policy[deny]-rule[1]]"
    assert decide(result, 31400, "127.0.0.4").allowed


def test_allow_policy_without_rules_denies_everything(tmp_path: Path) -> None:
    result = load(tmp_path, policy("nothing", "action: ALLOW"))
    assert result.ok
    assert any("denies every connection" in m for m in messages(result, "warning"))
    assert decide(result, 31400, "127.0.0.1") == Verdict(False, "", "no ALLOW policy matched")


def test_deny_without_rules_matches_nothing(tmp_path: Path) -> None:
    result = load(tmp_path, policy("d", "action: DENY"))
    assert decide(result, 31400, "127.0.0.1").allowed


def test_fields_are_anded_values_ored_and_not_fields(tmp_path: Path) -> None:
    result = load(tmp_path, policy("a", """
        rules:
        - from:
          - source: {ipBlocks: ["127.0.0.0/24", "10.1.0.0/16"], notIpBlocks: ["127.0.0.9"]}
          to: [{operation: {ports: ["31400"]}}]
          when: [{key: source.ip, notValues: ["127.0.0.8"]}]
    """))
    assert decide(result, 31400, "127.0.0.1").allowed
    assert decide(result, 31400, "10.1.2.3").allowed
    assert not decide(result, 31400, "127.0.0.9").allowed
    assert not decide(result, 31400, "127.0.0.8").allowed
    assert not decide(result, 31400, "192.168.1.1").allowed
    # the rule is for port 31400 only: on 8443 the ALLOW policy matches nothing
    assert not decide(result, 8443, "127.0.0.1", sni="a.example.com").allowed


def test_ports_are_settled_at_compile_time(tmp_path: Path) -> None:
    result = load(tmp_path, policy("d", """
        action: DENY
        rules:
        - to: [{operation: {notPorts: ["31400"]}}]
        - when: [{key: destination.port, values: ["31400"]}]
          from: [{source: {ipBlocks: ["127.0.0.2"]}}]
    """))
    on_tcp = next(li for li in result.table.listeners if li.port == 31400).authz
    on_tls = next(li for li in result.table.listeners if li.port == 8443).authz
    assert [r.policy_id for r in on_tcp.enforced.deny] == ["ns[apps]-policy[d]-rule[1]"]
    assert [r.policy_id for r in on_tls.enforced.deny] == ["ns[apps]-policy[d]-rule[0]"]
    assert not decide(result, 8443, "127.0.0.1", sni="a.example.com").allowed
    assert not decide(result, 31400, "127.0.0.2").allowed
    assert decide(result, 31400, "127.0.0.3").allowed


def test_remote_ip_uses_the_proxy_protocol_address(tmp_path: Path) -> None:
    result = load(tmp_path, policy("a", """
        rules:
        - from: [{source: {remoteIpBlocks: ["203.0.113.0/24"]}}]
        - when: [{key: remote.ip, values: ["198.51.100.7"]}]
    """) + policy("d", """
        action: DENY
        rules: [{from: [{source: {notRemoteIpBlocks: ["0.0.0.0/0"]}}]}]
    """))
    # peer is the load balancer, remote is the client from the PROXY header
    assert decide(result, 31400, "127.0.0.1", remote="203.0.113.9").allowed
    assert decide(result, 31400, "127.0.0.1", remote="198.51.100.7").allowed
    assert not decide(result, 31400, "127.0.0.1", remote="198.51.100.8").allowed
    # no PROXY header: remote is the peer
    assert decide(result, 31400, "203.0.113.9").allowed
    # an IPv6 remote is outside 0.0.0.0/0: notRemoteIpBlocks denies it
    v = decide(result, 31400, "127.0.0.1", remote="2001:db8::1")
    assert v is not None and v.policy == "ns[apps]-policy[d]-rule[0]"


def test_sni_conditions_wait_for_the_client_hello(tmp_path: Path) -> None:
    result = load(tmp_path, policy("a", """
        rules:
        - when: [{key: connection.sni, values: ["good.example.com", "*.ok.example.com"]}]
    """) + policy("d", """
        action: DENY
        rules:
        - from: [{source: {ipBlocks: ["127.0.0.66"]}}]
        - when: [{key: connection.sni, values: ["bad.example.com"]}]
    """))
    assert decide(result, 8443, "127.0.0.1", sni=UNKNOWN) is None  # undecided before inspection
    # an IP DENY rule decides at accept, whatever the SNI would be
    assert decide(result, 8443, "127.0.0.66", sni=UNKNOWN) == Verdict(
        False, "ns[apps]-policy[d]-rule[0]", "DENY policy matched")
    assert decide(result, 8443, "127.0.0.1", sni="good.example.com").allowed
    assert decide(result, 8443, "127.0.0.1", sni="x.ok.example.com").allowed
    assert decide(result, 8443, "127.0.0.1", sni="bad.example.com").policy == \
        "ns[apps]-policy[d]-rule[1]"
    assert not decide(result, 8443, "127.0.0.1", sni=None).allowed


def test_http_only_fields_allow_drops_rule_deny_drops_condition(tmp_path: Path) -> None:
    result = load(tmp_path, policy("allow", """
        rules:
        - to: [{operation: {methods: ["GET"]}}]
        - from: [{source: {ipBlocks: ["127.0.0.2"], requestPrincipals: ["*"]}}]
        - from: [{source: {ipBlocks: ["127.0.0.3"]}}]
    """) + policy("deny", """
        action: DENY
        rules:
        - to: [{operation: {methods: ["POST"], ports: ["8443"]}}]
        - from: [{source: {ipBlocks: ["127.0.0.4"]}}]
          when: [{key: "request.headers[x-user]", values: ["bob"]}]
    """))
    warnings = messages(result, "warning")
    assert sum("whole ALLOW rule is ignored" in m for m in warnings) == 2
    assert sum("this condition is ignored" in m for m in warnings) == 2
    # ALLOW rules 0 and 1 are dropped: 127.0.0.2 is no longer allowed
    assert not decide(result, 31400, "127.0.0.2").allowed
    assert decide(result, 31400, "127.0.0.3").allowed
    # DENY rule 0 keeps ports: every TCP connection to 8443 is denied
    v = decide(result, 8443, "127.0.0.3", sni="a.example.com")
    assert v is not None and v.policy == "ns[apps]-policy[deny]-rule[0]"
    # DENY rule 1 without its header condition denies 127.0.0.4 everywhere
    assert decide(result, 31400, "127.0.0.4").policy == \
        "ns[apps]-policy[deny]-rule[1]"


def test_principals_need_a_client_certificate(tmp_path: Path) -> None:
    result = load(tmp_path, policy("a", """
        rules:
        - from: [{source: {principals: ["cluster.local/ns/shop/sa/*"]}}]
        - from: [{source: {namespaces: ["billing"]}}]
        - when: [{key: source.principal, values: ["*/sa/admin"]}]
    """))
    assert any("verified client certificate" in m for m in messages(result, "warning"))
    assert not decide(result, 31400, "127.0.0.1").allowed
    assert decide(result, 31400, "127.0.0.1",
                  principal="spiffe://cluster.local/ns/shop/sa/web").allowed
    assert decide(result, 31400, "127.0.0.1",
                  principal="cluster.local/ns/billing/sa/x").allowed
    assert decide(result, 31400, "127.0.0.1",
                  principal="cluster.local/ns/other/sa/admin").allowed
    assert not decide(result, 31400, "127.0.0.1",
                      principal="cluster.local/ns/other/sa/x").allowed


def test_selection_root_namespace_selector_and_target_refs(tmp_path: Path) -> None:
    text = (
        policy("root", "action: DENY\nrules: [{from: [{source: {ipBlocks: ['127.0.0.10']}}]}]",
               ns="istio-system")
        + policy("other-ns",
                 "action: DENY\nrules: [{from: [{source: {ipBlocks: ['127.0.0.11']}}]}]",
                 ns="elsewhere")
        + policy("other-sel", """
            selector: {matchLabels: {app: something-else}}
            action: DENY
            rules: [{from: [{source: {ipBlocks: ["127.0.0.12"]}}]}]""")
        + policy("by-ref", """
            targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]
            action: DENY
            rules: [{from: [{source: {ipBlocks: ["127.0.0.13"]}}]}]""")
        + policy("by-other-ref", """
            targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: nope}
            action: DENY
            rules: [{from: [{source: {ipBlocks: ["127.0.0.14"]}}]}]""")
    )
    result = load(tmp_path, text)
    assert result.ok, result.errors
    assert not decide(result, 31400, "127.0.0.10").allowed
    assert decide(result, 31400, "127.0.0.11").allowed
    assert decide(result, 31400, "127.0.0.12").allowed
    assert not decide(result, 31400, "127.0.0.13").allowed
    assert decide(result, 31400, "127.0.0.14").allowed
    notices = messages(result, "info")
    assert sum("applies to no listener" in m for m in notices) == 3
    # another root namespace: the istio-system policy no longer applies
    moved = load(tmp_path, text, root_namespace="mesh-root")
    assert decide(moved, 31400, "127.0.0.10").allowed
    # the gateway runs in "elsewhere": that namespace's policy applies, apps' do not
    there = load(tmp_path, text, gateway_namespace="elsewhere")
    assert not decide(there, 31400, "127.0.0.11").allowed


def test_dry_run_goes_to_the_shadow_set(tmp_path: Path) -> None:
    result = load(tmp_path, policy("would-deny", """
        action: DENY
        rules: [{from: [{source: {ipBlocks: ["127.0.0.5"]}}]}]
    """, annotations='{istio.io/dry-run: "true"}'))
    authz = next(li for li in result.table.listeners if li.port == 31400).authz
    facts = Facts("127.0.0.5", sni=None)
    assert authz.enforced.empty
    assert authz.decide(facts) == Verdict(True, "", "no ALLOW policy applies")
    assert authz.decide_shadow(facts) == Verdict(
        False, "ns[apps]-policy[would-deny]-rule[0]", "DENY policy matched")


def test_custom_and_audit_do_not_decide(tmp_path: Path) -> None:
    result = load(tmp_path, policy("ext", """
        action: CUSTOM
        provider: {name: opa}
        rules: [{}]
    """) + policy("audit", """
        action: AUDIT
        rules: [{}]
    """))
    assert result.ok
    assert any("CUSTOM" in m and "not enforced" in m for m in messages(result, "warning"))
    assert decide(result, 31400, "127.0.0.1").allowed


def test_resource_dump_includes_policies(tmp_path: Path) -> None:
    result = load(tmp_path, policy("a", "rules: [{}]"))
    dumped = [d for d in result.resources_to_dicts() if d["meta"]["kind"] == "AuthorizationPolicy"]
    assert dumped and dumped[0]["action"] == "ALLOW"


def test_other_security_kinds_are_skipped_with_a_notice(tmp_path: Path) -> None:
    result = load(tmp_path, """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: strict, namespace: apps}
        spec: {mtls: {mode: STRICT}}
        ---
        apiVersion: networking.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: wrong-group, namespace: apps}
        spec: {}
    """)
    assert result.ok
    notices = messages(result, "info")
    assert any("skipped PeerAuthentication strict" in m and "does not use this kind" in m
               for m in notices)
    assert any("networking.istio.io/v1 is not security.istio.io" in m for m in notices)


def test_destination_ip_condition(tmp_path: Path) -> None:
    result = load(tmp_path, policy("d", """
        action: DENY
        rules: [{when: [{key: destination.ip, notValues: ["127.0.0.1"]}]}]
    """))
    authz = next(li for li in result.table.listeners if li.port == 31400).authz
    assert authz.needs_local
    assert authz.decide(Facts("127.0.0.5", None, "127.0.0.1", None)).allowed
    assert not authz.decide(Facts("127.0.0.5", None, "127.0.0.2", None)).allowed
    other = load(tmp_path, policy("d", """
        action: DENY
        rules: [{from: [{source: {ipBlocks: ["127.0.0.9"]}}]}]
    """))
    assert not next(li for li in other.table.listeners if li.port == 31400).authz.needs_local
