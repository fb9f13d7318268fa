"""
Issue #9: never refuse what Istio accepts, catch what Istio catches (with its
message codes), say what tsgate does not serve, and never raise on any bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.config.conftest import ROOT
from tsgate.config import load_config
from tsgate.config.loader import MAX_DEPTH, parse_yaml

GW_TCP = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
"""

VS_TCP = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - route:
    - destination: {host: echo.example.com, port: {number: 2701}}
"""


def tsgate(*args: object, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tsgate", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, input=stdin)


def errors(result) -> list[str]:
    return [str(d) for d in result.errors]


# ----------------------------------------------------- never refuse valid Istio


@pytest.mark.parametrize("name,text", [
    ("se-port-without-protocol", """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [example.com]
  addresses: [10.0.0.1]
  ports: [{number: 5432, name: pg}]
  resolution: DNS
"""),
    ("se-partial-wildcard-hosts", """\
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: partial-wildcard}
spec:
  hosts: ["*x", "*washingtonpost.com"]
"""),
    ("se-endpoint-network-without-address", """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - network: remote
"""),
    ("we-fqdn-address", """\
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata: {name: fqdn}
spec:
  address: example.com
"""),
    ("vs-delegate-without-hosts", """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: delegate}
spec:
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local}
"""),
    ("vs-auto-generated-sni", GW_TCP.replace("31400, name: tcp, protocol: TCP",
                                            "15443, name: tls, protocol: TLS")
     .replace('hosts: ["*"]', 'hosts: ["*.local"]\n    tls: {mode: PASSTHROUGH}') + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: istiod}
spec:
  hosts: [outbound_.15010_._.istiod.istio-system.svc.cluster.local]
  gateways: [gw]
  tls:
  - match:
    - port: 15443
      sniHosts: [outbound_.15010_._.istiod.istio-system.svc.cluster.local]
    route:
    - destination: {host: istiod.istio-system.svc.cluster.local, port: {number: 15010}}
"""),
    ("se-ipv6-address-like-kubernetes-yaml", """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: full, namespace: default}
spec:
  hosts: ["example.com"]
  workloadSelector:
    labels:
      foo: bar
  addresses: [1.2.3.4, 001:db8::]
  exportTo: [foo, .]
  location: MESH_EXTERNAL
  ports:
    - name: foo
      protocol: HTTP
      number: 1234
      targetPort: 2345
  subjectAltNames: [sa]
  resolution: DNS
"""),
    ("gw-auto-passthrough", GW_TCP.replace("31400, name: tcp, protocol: TCP",
                                          "15443, name: tls, protocol: TLS")
     .replace('hosts: ["*"]', 'hosts: ["*.local"]\n    tls: {mode: AUTO_PASSTHROUGH}')),
    ("gw-unix-bind", GW_TCP.replace("31400, name: tcp", "0, name: tcp")
     .replace('hosts: ["*"]', 'hosts: ["*"]\n    bind: unix:///tmp/tsgate-fidelity.sock')
     + "---\n" + VS_TCP),
    ("gw-simple", GW_TCP.replace("31400, name: tcp, protocol: TCP",
                                "443, name: tls, protocol: TLS")
     .replace('hosts: ["*"]', 'hosts: ["*"]\n    tls: {mode: SIMPLE, credentialName: c}')),
    ("gw-istio-mutual", GW_TCP.replace("31400, name: tcp, protocol: TCP",
                                      "443, name: tls, protocol: TLS")
     .replace('hosts: ["*"]', 'hosts: ["*"]\n    tls: {mode: ISTIO_MUTUAL}')),
])
def test_valid_istio_is_not_refused(load, name, text):
    result = load(text, tls_files_fatal=False)  # as `tsgate validate` reads it
    assert result.ok, "\n".join(errors(result))


def test_001_db8_is_a_string_as_kubernetes_reads_it():
    [doc], diags = parse_yaml("addresses: [1.2.3.4, 001:db8::]\nt: 1:20\nd: 2024-01-01\n", "x")
    assert diags == []
    assert doc.data == {"addresses": ["1.2.3.4", "001:db8::"], "t": "1:20", "d": "2024-01-01"}


def test_partial_wildcard_service_entry_host_is_a_warning(load):
    result = load("""\
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: pw}
spec:
  hosts: ["*washingtonpost.com"]
""")
    assert result.ok
    [w] = [d for d in result.warnings if d.path == "spec.hosts[0]"]
    assert "partial wildcard" in w.message and w.code == "IST0133"


@pytest.mark.parametrize("mode", ["SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL"])
def test_terminating_modes_are_accepted_and_what_is_not_served_is_a_warning(load, mode):
    """
    Istio admits every terminating mode. tsgate serves SIMPLE, MUTUAL and
    OPTIONAL_MUTUAL (issue 10): a credential it cannot read, checked the way
    ``tsgate validate`` checks (``tls_files_fatal=False``), is a warning naming
    the field; ISTIO_MUTUAL (mesh certificates) is a warning naming tls.mode.
    """
    tls = "{mode: ISTIO_MUTUAL}" if mode == "ISTIO_MUTUAL" else \
        f"{{mode: {mode}, credentialName: c}}"
    gw = GW_TCP.replace("31400, name: tcp, protocol: TCP", "443, name: tls, protocol: TLS") \
        .replace('hosts: ["*"]', f'hosts: ["*"]\n    tls: {tls}')
    result = load(gw, tls_files_fatal=False)
    assert result.ok
    if mode == "ISTIO_MUTUAL":
        [w] = [d for d in result.warnings if d.path == "spec.servers[0].tls.mode"]
        assert "ISTIO_MUTUAL" in w.message and "skipped" in w.message
    else:
        [w] = [d for d in result.warnings if d.path == "spec.servers[0].tls.credentialName"]
        assert "credential 'c'" in w.message and "would not serve" in w.message


def test_strict_turns_warnings_into_errors(write):
    gw = write("gw.yaml", GW_TCP.replace("31400, name: tcp, protocol: TCP",
                                         "443, name: tls, protocol: TLS")
               .replace('hosts: ["*"]', 'hosts: ["*"]\n    tls: {mode: SIMPLE, credentialName: c}'))
    assert tsgate("validate", gw).returncode == 0
    p = tsgate("validate", "--strict", gw)
    assert p.returncode == 1
    assert f"{gw}:9: error: Gateway default/gw: spec.servers[0].tls.credentialName: " \
        "credential 'c'" in p.stderr


# ------------------------------------------------- catch what Istio catches


def test_conflicting_gateways_ist0145(load):
    second = GW_TCP.replace("name: gw", "name: gw2")
    result = load(GW_TCP, second, VS_TCP)
    found = [d for d in result.diagnostics if d.code == "IST0145"]
    assert {d.resource for d in found} == {"Gateway default/gw", "Gateway default/gw2"}
    assert "Conflict with gateways default/gw2 (workload selector istio=ingressgateway, " \
           "port 31400, hosts *)" in str(found[0])
    assert str(found[0]).endswith("[IST0145]")


def test_gateway_short_name_host_is_an_error(load):
    result = load(GW_TCP.replace('hosts: ["*"]', "hosts: [echo]"))
    assert any("short names (non FQDN) are not allowed" in m for m in errors(result))


def test_missing_subset_when_not_bound_ist0101(load):
    vs = VS_TCP.replace("gateways: [gw]", "gateways: [mesh]").replace(
        'hosts: ["*"]', "hosts: [echo.example.com]").replace(
        "port: {number: 2701}", "subset: v1, port: {number: 2701}")
    result = load(vs)
    [d] = [d for d in result.diagnostics if d.code == "IST0101"]
    assert d.path == "spec.tcp[0].route[0].destination.subset"
    assert 'not found: "echo.example.com+v1"' in d.message


def test_unix_endpoint_rules(load):
    result = load("""\
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata: {name: uds}
spec:
  address: unix://@foo
  ports: {http: 80}
""")
    assert any("must not include ports" in m for m in errors(result))


def test_workload_entry_port_name_is_a_dns_label(load):
    result = load("""\
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata: {name: bad-port-name}
spec:
  address: 1.1.1.1
  ports: {"@": 80}
""")
    assert any("invalid port name" in m or "port name" in m for m in errors(result))


def test_dynamic_dns_rules(load):
    result = load("""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dyn}
spec:
  hosts: [example.com]
  ports: [{number: 5432, name: pg, protocol: TCP}]
  resolution: DYNAMIC_DNS
""")
    messages = errors(result)
    assert any("host must be wildcarded for resolution mode DYNAMIC_DNS" in m for m in messages)
    assert any("only HTTP, TLS, GRPC, and HTTP2 protocols" in m for m in messages)


@pytest.mark.parametrize("warmup,why", [
    ("{duration: 300s, minimumPercent: 150.0}", "minimumPercent"),
    ("{minimumPercent: 5.0}", "duration is required"),
    ("{duration: 300s, aggression: -0.1}", "aggression"),
])
def test_destination_rule_warmup_bounds(load, warmup, why):
    result = load(f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: dr}}
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      warmup: {warmup}
""")
    assert any(why in m for m in errors(result))


def test_empty_connection_pool_is_an_error(load):
    result = load("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy:
    connectionPool: {}
""")
    assert any("connection pool must have at least one field" in m for m in errors(result))


def test_client_tls_without_ca_ist0128(load):
    result = load("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db-tls}
spec:
  host: db.example.com
  trafficPolicy:
    tls: {mode: SIMPLE}
""")
    assert [d.code for d in result.warnings if d.code.startswith("IST")] == ["IST0128"]


def test_codes_of_unreachable_and_ineffective_rules(load):
    vs = VS_TCP + """\
  - match: [{port: 31400}]
    route:
    - destination: {host: echo.example.com, port: {number: 2701}}
"""
    result = load(GW_TCP, vs)
    assert "IST0130" in {d.code for d in result.warnings}


# ------------------------------------------------ no false or missing messages


def test_tcp_match_on_another_port_is_not_called_ignored_on_tls_server(load):
    gw = GW_TCP + """\
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
"""
    vs = VS_TCP.replace("  - route:", "  - match: [{port: 31400}]\n    route:")
    result = load(gw, vs)
    assert not any("ignored on the TLS PASSTHROUGH server" in d.message
                   for d in result.diagnostics)


def test_match_port_that_no_server_serves_is_a_warning(load):
    vs = VS_TCP.replace("  - route:", "  - match: [{port: 9999}]\n    route:")
    result = load(GW_TCP, vs)
    [w] = [d for d in result.warnings if d.path == "spec.tcp[0].match[0].port"]
    assert "no server of gateway default/gw listens on port 9999" in w.message


def test_zero_listeners_is_a_warning(load):
    result = load(GW_TCP.replace("31400, name: tcp", "31401, name: tcp"),
                  VS_TCP.replace("  - route:", "  - match: [{port: 31400}]\n    route:"))
    assert result.table.listeners == ()
    assert any(d.message.startswith("no listeners:") for d in result.warnings)


def test_empty_file_is_a_warning(write):
    path = write("empty.yaml", "# nothing here\n")
    result = load_config([path])
    assert [(d.severity, d.file) for d in result.diagnostics] == [("warning", path)]
    assert "no Kubernetes objects" in result.diagnostics[0].message


def test_explicitly_given_subdirectory_is_not_called_unread(tmp_path: Path):
    (tmp_path / "local").mkdir()
    (tmp_path / "a.yaml").write_text(GW_TCP)
    (tmp_path / "local" / "b.yaml").write_text(VS_TCP)
    result = load_config([str(tmp_path), str(tmp_path / "local")])
    assert not any("subdirectory not read" in d.message for d in result.diagnostics)
    assert len(result.files) == 2


def test_ip_destination_is_not_resolved_by_dns(load):
    result = load(GW_TCP, VS_TCP.replace("host: echo.example.com", "host: 10.1.2.3"))
    assert not any("resolved by DNS" in d.message for d in result.diagnostics)


# ------------------------------------------------------------ CLI: json, stdin


def test_stdin_and_json_output_with_codes():
    text = GW_TCP + "---\n" + GW_TCP.replace("name: gw", "name: gw2") + "---\n" + VS_TCP
    p = tsgate("validate", "--output", "json", "-", stdin=text)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["files"] == ["<stdin>"]
    codes = [d["code"] for d in data["diagnostics"]]
    assert codes.count("IST0145") == 2
    assert "<stdin>:7: warning: Gateway default/gw: spec.servers[0]: Conflict with gateways" \
        in p.stderr


# ----------------------------------------------------------------- loader limits


@pytest.mark.parametrize("name,text,line,why", [
    ("self-alias", "a: &a [*a]\n", 1, "cycle"),
    ("nested-lists", "[" * 5000 + "]" * 5000 + "\n", 1, f"nested deeper than {MAX_DEPTH}"),
    ("alias-bomb", "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{b}: &{b} [" + ",".join([f"*{a}"] * 9) + "]\n"
        for a, b in zip("abcdefgh", "bcdefghi")), 1, "alias bomb"),
    ("merge-bomb", "a: &a {x: 1, y: 2}\n" + "".join(
        f"{b}: &{b} {{<<: [" + ",".join([f"*{a}"] * 9) + "]}\n"
        for a, b in zip("abcdefgh", "bcdefghi")), 1, "alias"),
])
def test_hostile_yaml_is_one_error_with_file_and_line(write, name, text, line, why):
    path = write(f"{name}.yaml", "")
    Path(path).write_text(text)
    p = tsgate("validate", path)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    assert f"{path}:{line}: error: YAML too costly to load" in p.stderr or name == "merge-bomb"
    assert why in p.stderr


def test_partial_wildcard_sni_host_is_warned_and_not_routed(load):
    gw = GW_TCP.replace("31400, name: tcp, protocol: TCP", "443, name: tls, protocol: TLS") \
        .replace('hosts: ["*"]', 'hosts: ["*"]\n    tls: {mode: PASSTHROUGH}')
    vs = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: ["*.example.com"]
  gateways: [gw]
  tls:
  - match:
    - sniHosts: ["*w.example.com", a.example.com]
    route:
    - destination: {host: echo.example.com, port: {number: 443}}
"""
    result = load(gw, vs)
    assert result.ok
    [w] = [d for d in result.warnings if d.path == "spec.tls[0].match[0].sniHosts[0]"]
    assert "partial wildcard sniHost '*w.example.com'" in w.message
    [listener] = result.table.listeners
    assert [c.server_names for c in listener.tls_chains] == [("a.example.com",)]
