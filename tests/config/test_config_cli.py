"""``tsgate validate`` and ``tsgate routes`` as users run them: a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.config.conftest import EXAMPLES, ROOT

SNI = EXAMPLES / "sni"
LOCAL = EXAMPLES / "local"


def tsgate(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tsgate", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_validate_the_seed_tcp_walkthrough():
    p = tsgate("validate", "examples/istioinaction/")
    assert p.returncode == 0, p.stderr
    assert "1 listener(s), 0 SNI chain(s), 1 route(s); 0 error(s), 0 warning(s)" in p.stdout
    assert "0.0.0.0:31400 [TCP] TCP route" in p.stdout
    # the Deployment and Service of echo.yaml: one-line notices on stderr
    assert "examples/istioinaction/echo.yaml:1: info: skipped Deployment tcp-echo-deployment" \
        in p.stderr
    assert "no ServiceEntry names host tcp-echo-service.default.svc.cluster.local" in p.stderr


def test_validate_every_seed_file_with_local_backends_quietly():
    files = [EXAMPLES / "gateway-tcp.yaml", EXAMPLES / "echo-vs.yaml",
             SNI / "passthrough-sni-gateway-both.yaml", SNI / "passthrough-sni-vs-1.yaml",
             SNI / "passthrough-sni-vs-2.yaml", LOCAL]
    p = tsgate("validate", "-q", *files)
    assert p.returncode == 0, p.stderr
    assert "2 SNI chain(s), 3 route(s)" in p.stdout
    assert "0.0.0.0:31400 [TCP,TLS] 2 SNI chain(s), TCP route (fallback)" in p.stdout
    assert "info:" not in p.stderr


def test_validate_reports_every_error_and_exits_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("""\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: vs
spec:
  hosts: [a.example.com]
  gateways: [gw]
  tls:
  - match:
    - port: 443
      sniHosts: [b.example.com]
    route:
    - destination: {host: backend}
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [a.example.com]
""")
    p = tsgate("validate", bad)
    assert p.returncode == 1
    assert p.stdout == ""
    assert (f"{bad}:11: error: VirtualService default/vs: spec.tls[0].match[0].sniHosts[0]: "
            "SNI host 'b.example.com' is not a compatible subset of any of the virtual service "
            "hosts: [a.example.com]") in p.stderr
    assert (f"{bad}:20: error: Gateway default/gw: spec.servers[0]: server must have TLS "
            "settings for HTTPS/TLS protocols") in p.stderr
    assert "tsgate validate: 2 error(s)" in p.stderr


def test_validate_gateway_labels_and_namespace_options():
    p = tsgate("validate", "--gateway-label", "app=edge", "examples/istioinaction/")
    assert p.returncode == 0
    assert "0 listener(s)" in p.stdout
    assert "no Gateway selects this gateway's labels app=edge" in p.stderr
    p = tsgate("validate", "--namespace", "istioinaction", "examples/istioinaction/")
    assert "tcp-echo-service.istioinaction.svc.cluster.local" in p.stderr


def test_routes_prints_chains_routes_and_endpoints():
    p = tsgate("routes", SNI / "passthrough-sni-gateway-both.yaml",
               SNI / "passthrough-sni-vs-1.yaml", SNI / "passthrough-sni-vs-2.yaml",
               EXAMPLES / "gateway-tcp.yaml",
               EXAMPLES / "echo-vs.yaml", LOCAL)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("listener 0.0.0.0_31400 0.0.0.0:31400 protocols TLS,TCP")
    assert "inspects the first client bytes" in out
    assert "  chain sni simple-sni-1.istioinaction.io\n    route default/simple-sni-1-vs#tls[0]" \
        in out
    assert ("-> outbound|80||simple-tls-service-2.default.svc.cluster.local 100% STATIC "
            "127.0.0.1:9082") in out
    assert "  chain tcp (fallback: no matching SNI, or not TLS)" in out
    assert "STATIC 127.0.0.1:2701" in out


def test_routes_tcp_only_does_not_inspect():
    p = tsgate("routes", "examples/istioinaction/")
    assert p.returncode == 0
    assert "does not inspect (connects upstream at accept)" in p.stdout
    assert "HOSTNAME tcp-echo-service:2701" in p.stdout


def test_routes_json():
    p = tsgate("routes", "--json", "examples/istioinaction/", LOCAL)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    [li] = data["listeners"]
    assert (li["bind"], li["port"], li["inspect"]) == ("0.0.0.0", 31400, False)
    assert li["tcp_route"]["name"] == "default/tcp-echo-vs-from-gw#tcp[0]"
    [cluster] = data["clusters"]
    assert cluster["endpoints"] == [{"address": "127.0.0.1", "port": 2701, "weight": 1,
                                     "labels": {}}]


def test_routes_with_errors_exits_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n"
                   "spec: {servers: [{port: {number: 1, name: a, protocol: TCP}, hots: ['*']}]}\n")
    p = tsgate("routes", bad)
    assert p.returncode == 1
    assert "unknown field 'hots' in Server (did you mean \"hosts\"?)" in p.stderr
    assert p.stdout == ""


def test_usage_errors():
    assert tsgate().returncode == 2
    p = tsgate("validate", "--gateway-label", "novalue", "examples/istioinaction/")
    assert p.returncode == 2
    assert "expected KEY=VALUE" in p.stderr
    p = tsgate("validate", "does/not/exist.yaml")
    assert p.returncode == 1
    assert "does/not/exist.yaml: error: no such file or directory" in p.stderr


def test_validate_json_has_files_diagnostics_resources_and_table():
    p = tsgate("validate", "--json", "-q", "examples/istioinaction/", LOCAL)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["ok"] is True
    assert data["files"][0] == "examples/istioinaction/echo-vs.yaml"
    kinds = [r["meta"]["kind"] for r in data["resources"]]
    assert kinds.count("ServiceEntry") == 3
    assert data["table"]["listeners"][0]["port"] == 31400
    assert all(d["severity"] == "info" for d in data["diagnostics"])


def test_every_subcommand_is_registered():
    """validate and routes (cli), explain (explain_cli), plugins (plugins_cli)."""
    from tsgate import cli, explain_cli, plugins_cli

    parser = cli.build_parser()
    args = parser.parse_args(["routes", "examples/istioinaction/"])
    assert args.func is cli.run_routes
    assert parser.parse_args(["validate", "x.yaml"]).func is cli.run_validate
    assert parser.parse_args(["plugins"]).func.__module__ == plugins_cli.__name__
    explain_args = parser.parse_args(["explain", "examples/istioinaction/", "--port", "31400"])
    assert explain_args.func.__module__ == explain_cli.__name__
