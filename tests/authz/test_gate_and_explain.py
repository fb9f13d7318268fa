"""The data path's decision points (counters, deferral to the ClientHello) and `tsgate explain`."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

from tsgate.authz import gate
from tsgate.authz.limits import Guards
from tsgate.cli import main
from tsgate.config import load_config
from tsgate.explain_cli import register  # noqa: F401  (the subcommand exists)
from tsgate.stats import Stats

YAML = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: default
  annotations: {tsgate.io/max-connections-per-ip: "1"}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: ["*.example.com"]
  gateways: [gw]
  tls:
  - match: [{port: 8443, sniHosts: ["*.example.com"]}]
    route: [{destination: {host: tls.local, port: {number: 443}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sni, namespace: istio-system}
spec:
  action: DENY
  rules:
  - when: [{key: connection.sni, values: ["bad.example.com"]}]
  - from: [{source: {ipBlocks: ["10.0.0.0/8"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-only, namespace: default, annotations: {istio.io/dry-run: "true"}}
spec:
  rules: [{from: [{source: {ipBlocks: ["127.0.0.1"]}}]}]
"""


def write(tmp_path: Path) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(YAML))
    return str(path)


def test_accept_then_client_hello(tmp_path: Path) -> None:
    listener = load_config([write(tmp_path)]).table.listeners[0]
    guards, stats = Guards(), Stats()
    # IP rule: refused at accept, whatever SNI would come
    adm, refusal = gate.admit(guards, stats, listener, peer="10.1.1.1", remote=None,
                              local="127.0.0.1", now=1.0)
    assert refusal == "rbac_access_denied_matched_policy[ns[istio-system]-policy[sni]-rule[1]]"
    gate.closed(adm)
    # undecided at accept; the SNI decides after inspection
    adm, refusal = gate.admit(guards, stats, listener, peer="127.0.0.2", remote=None,
                              local="127.0.0.1", now=1.0)
    assert refusal is None and adm is not None and not adm.decided
    assert guards.tracker(listener.name).inspecting == 1
    assert gate.inspected(adm, guards, stats, "bad.example.com", 2.0) == \
        "rbac_access_denied_matched_policy[ns[istio-system]-policy[sni]-rule[0]]"
    assert guards.tracker(listener.name).inspecting == 0
    gate.closed(adm)
    assert guards.tracker(listener.name).active == 0
    adm, refusal = gate.admit(guards, stats, listener, peer="127.0.0.1", remote=None,
                              local="127.0.0.1", now=3.0)
    assert refusal is None
    # the same address again: the per-IP limit of 1
    _, second = gate.admit(guards, stats, listener, peer="127.0.0.1", remote=None,
                           local="127.0.0.1", now=3.0)
    assert second == "tsgate_limit_exceeded[max-connections-per-ip]"
    assert gate.inspected(adm, guards, stats, "good.example.com", 4.0) is None
    gate.closed(adm)
    assert stats.total("tcp.rbac.denied") == 2 and stats.total("tcp.rbac.allowed") == 1
    # the dry-run ALLOW policy: 127.0.0.1 (twice) matches, the others would be denied
    assert stats.total("tcp.rbac.shadow_allowed") == 2  # evaluated before the limit
    assert stats.total("tcp.rbac.shadow_denied") == 2
    assert stats.get("tcp.limit_refused", reason="max-connections-per-ip") == 1
    denied = {d["source"] for d in guards.snapshot()["denied"]}
    assert denied == {"10.1.1.1", "127.0.0.2", "10.1.1.1 (dry-run)", "127.0.0.2 (dry-run)"}


def test_explain_prints_the_decision_policy_and_rule(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path)
    assert main(["explain", path, "--port", "8443", "--source", "127.0.0.9",
                 "--sni", "bad.example.com"]) == 1
    out = capsys.readouterr().out
    assert ("authorization: denied by AuthorizationPolicy istio-system/sni spec.rules[0] "
            "(ns[istio-system]-policy[sni]-rule[0])") in out
    assert "after the ClientHello" in out
    assert "rbac_access_denied_matched_policy[ns[istio-system]-policy[sni]-rule[0]]" in out
    assert main(["explain", path, "--port", "8443", "--source", "10.2.3.4", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["authorization"]["when"] == "at accept, before any upstream connect"
    assert main(["explain", path, "--port", "8443", "--source", "127.0.0.1",
                 "--sni", "good.example.com"]) == 0
    out = capsys.readouterr().out
    assert "authorization: allowed" in out
    assert "limit: at most 1 concurrent connections per client address" in out


def test_validate_reports_policy_errors_with_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(YAML).replace('"10.0.0.0/8"', '"10.0.0.0/80"'))
    err = io.StringIO()
    from tsgate.cli import build_parser, run_validate

    args = build_parser().parse_args(["validate", str(path)])
    assert run_validate(args, out=io.StringIO(), err=err) == 1
    assert (f"{path}:32: error: AuthorizationPolicy istio-system/sni: "
            "spec.rules[1].from[0].source.ipBlocks[0]: invalid CIDR range '10.0.0.0/80'") \
        in err.getvalue()
