"""
``tsgate explain``: the decision trace agrees with the router, and says why
every other chain lost. Config tests use the seed's YAML (Istio in Action ch.4).
"""

from __future__ import annotations

import argparse
import io
import json
import ssl
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsgate import explain_cli
from tsgate.explain import CHOSEN, REJECTED, explain, short_trace
from tsgate.routing import Cluster, Listener, Route, RouteTable, SniChain, WeightedCluster

GATEWAY_TCP = """\
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: echo-tcp-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 31400
      name: tcp-echo
      protocol: TCP
    hosts:
    - "*"
"""
ECHO_VS = """\
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: tcp-echo-vs-from-gw
spec:
  hosts:
  - "*"
  gateways:
  - echo-tcp-gateway
  tcp:
  - match:
    - port: 31400
    route:
    - destination:
        host: tcp-echo-service
        port:
          number: 2701
"""
SNI_GATEWAY_BOTH = """\
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: sni-passthrough-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 31400
      name: tcp-sni-1
      protocol: TLS
    hosts:
    - "simple-sni-1.istioinaction.io"
    tls:
      mode: PASSTHROUGH
  - port:
      number: 31400
      name: tcp-sni-2
      protocol: TLS
    hosts:
    - "simple-sni-2.istioinaction.io"
    tls:
      mode: PASSTHROUGH
"""
SNI_VS = """\
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: simple-sni-{n}-vs
spec:
  hosts:
  - simple-sni-{n}.istioinaction.io
  gateways:
  - sni-passthrough-gateway
  tls:
  - match:
    - port: 31400
      sniHosts:
      - simple-sni-{n}.istioinaction.io
    route:
    - destination:
        host: simple-tls-service-{n}
        port:
          number: 80
"""


@pytest.fixture
def sni_config(tmp_path):
    """The book's final state: both SNI servers and both VirtualServices."""
    (tmp_path / "passthrough-sni-gateway-both.yaml").write_text(SNI_GATEWAY_BOTH)
    for n in (1, 2):
        (tmp_path / f"passthrough-sni-vs-{n}.yaml").write_text(SNI_VS.format(n=n))
    return tmp_path


@pytest.fixture
def tcp_config(tmp_path):
    (tmp_path / "gateway-tcp.yaml").write_text(GATEWAY_TCP)
    (tmp_path / "echo-vs.yaml").write_text(ECHO_VS)
    return tmp_path


def cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="tsgate")
    explain_cli.register(parser.add_subparsers())
    args = parser.parse_args(["explain", *argv])
    out, err = io.StringIO(), io.StringIO()
    return args.func(args, out, err), out.getvalue(), err.getvalue()


# --- the seed walkthrough through the CLI -------------------------------------------------


def test_sni_1_routed_and_sni_2_explained(sni_config):
    """SNI 1 picks its VirtualService rule; the SNI 2 chain says it does not match."""
    code, out, _ = cli(str(sni_config), "--port", "31400",
                       "--sni", "simple-sni-1.istioinaction.io")
    assert code == 0
    assert "listener: 0.0.0.0_31400 (inspects the TLS ClientHello" in out
    assert "chain: sni:simple-sni-1.istioinaction.io" in out
    assert "route: default/simple-sni-1-vs#tls[0]" in out
    assert "VirtualService default/simple-sni-1-vs spec.tls[0]" in out
    assert "passthrough-sni-vs-1.yaml" in out
    assert "outbound|80||simple-tls-service-1" in out and "100.0%" in out
    assert ("exact simple-sni-2.istioinaction.io does not match "
            "simple-sni-1.istioinaction.io") in out
    assert ("access log route: tls:simple-sni-1.istioinaction.io->"
            "default/simple-sni-1-vs#tls[0]") in out


def test_unknown_sni_is_nr_with_reasons(sni_config):
    code, out, _ = cli(str(sni_config), "--port", "31400", "--sni", "other.istioinaction.io")
    assert code == 1
    assert "result: NR" in out
    assert out.count("does not match other.istioinaction.io") == 2
    assert "access log route: none" in out


def test_no_listener_lists_ports(tcp_config):
    """A wrong port says which ports exist (the common NR cause)."""
    code, out, _ = cli("--config", str(tcp_config), "--port", "31401")
    assert code == 1
    assert "listener: none on port 31401" in out
    assert "listeners exist on ports: 31400" in out


def test_tcp_route_ignores_sni(tcp_config):
    """A TCP-only port routes at accept: SNI/ALPN are noted as irrelevant."""
    code, out, _ = cli(str(tcp_config), "--port", "31400", "--sni", "x.example",
                       "--alpn", "h2", "--source", "10.0.0.1")
    assert code == 0
    assert "route: default/tcp-echo-vs-from-gw#tcp[0]" in out
    assert "does not read the ClientHello" in out and "source 10.0.0.1" in out
    assert "access log route: tcp->default/tcp-echo-vs-from-gw#tcp[0]" in out


def test_json_output(sni_config):
    code, out, _ = cli(str(sni_config), "--port", "31400", "--sni",
                       "SIMPLE-SNI-2.istioinaction.io.", "--json")
    data = json.loads(out)
    assert code == 0 and data["route"] == "default/simple-sni-2-vs#tls[0]"
    assert [c["verdict"] for c in data["candidates"]] == [REJECTED, CHOSEN]
    assert data["trace"] == "tls:simple-sni-2.istioinaction.io->default/simple-sni-2-vs#tls[0]"


def test_bad_config_exits_2(tmp_path):
    (tmp_path / "bad.yaml").write_text(GATEWAY_TCP.replace("number: 31400", "number: nope"))
    code, _, err = cli(str(tmp_path), "--port", "31400")
    assert code == 2 and "bad.yaml" in err
    code, _, err = cli("--port", "31400")
    assert code == 2 and "--config" in err


def client_hello(server_name: Optional[str], alpn: Optional[list[str]] = None) -> bytes:
    """A real ClientHello from Python's ssl module (memory BIOs, no network)."""
    ctx = ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_first_bytes_from_a_captured_client_hello(sni_config, tmp_path):
    """--first-bytes reads SNI and ALPN with the data path's TLS parser."""
    hello = tmp_path / "hello.bin"
    hello.write_bytes(client_hello("simple-sni-2.istioinaction.io", ["h2", "http/1.1"]))
    code, out, _ = cli(str(sni_config), "--port", "31400", "--first-bytes", str(hello))
    assert code == 0
    assert "SNI simple-sni-2.istioinaction.io, ALPN h2,http/1.1" in out
    assert "route: default/simple-sni-2-vs#tls[0]" in out

    hello.write_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    code, out, _ = cli(str(sni_config), "--port", "31400", "--first-bytes", str(hello))
    assert code == 1 and "not TLS" in out and "routed as plaintext" in out

    hello.write_bytes(client_hello("simple-sni-1.istioinaction.io")[:40])
    code, _, err = cli(str(sni_config), "--port", "31400", "--first-bytes", str(hello))
    assert code == 2 and "incomplete ClientHello" in err


def test_first_bytes_too_large_are_closed(sni_config, tmp_path):
    """A ClientHello over the TLS parser's max_bytes: closed as the data path does (exit 1)."""
    hello = tmp_path / "hello.bin"
    hello.write_bytes(b"\x16\x03\x01\x3f\xff\x01\x00\xea\x60" + bytes(100))
    code, out, _ = cli(str(sni_config), "--port", "31400", "--first-bytes", str(hello),
                       "--sni", "simple-sni-1.istioinaction.io")
    assert code == 1
    assert "the connection is closed (tls_inspector.client_hello_too_large)" in out
    assert "route:" not in out and "overrides" not in out


# --- the pure function ---------------------------------------------------------------------


def route(name: str) -> Route:
    cluster = Cluster(name=f"outbound|1||{name}", host=name, port=1)
    return Route(name=name, destinations=(WeightedCluster(cluster, 1),))


def listener(chains: list[tuple[str, ...]], tcp: bool = True) -> Listener:
    return Listener(
        bind="0.0.0.0", port=443,
        tls_chains=tuple(SniChain(names, route(f"r{i}")) for i, names in enumerate(chains)),
        tcp_route=route("tcp") if tcp else None,
    )


def by_match(e):
    return {c.match: c for c in e.candidates}


def test_precedence_reasons():
    """Exact beats wildcard beats catch-all beats TCP; each loser says why."""
    lst = listener([("*.example.com",), ("a.example.com",), (), ("*.com",), ("b.example.com",)])
    e = explain(RouteTable((lst,)), 443, sni="a.example.com")
    c = by_match(e)
    assert e.route is lst.tls_chains[1].route and c["sni:a.example.com"].verdict == CHOSEN
    assert "less specific than a.example.com" in c["sni:*.example.com"].reason
    assert "shadowed by the more specific a.example.com" in c["sni:*"].reason
    assert "does not match" in c["sni:b.example.com"].reason
    assert c["tcp"].reason == "TCP fallback not used: a TLS chain matched"
    assert e.short() == "tls:a.example.com->r1"

    e = explain(RouteTable((lst,)), 443, sni="zzz.org")
    assert by_match(e)["sni:*"].verdict == CHOSEN and e.short() == "tls:*->r2"

    e = explain(RouteTable((lst,)), 443)
    assert e.short() == "tls:*->r2"
    assert any("until the listener-filter timeout" in n for n in e.notes)

    tcp_only = listener([("a.example.com",)])
    e = explain(RouteTable((tcp_only,)), 443, sni="q.example.com")
    assert e.short() == "tcp->tcp"
    assert "TCP route is the fallback" in by_match(e)["tcp"].reason


def test_ties_first_chain_wins():
    lst = listener([("*.example.com",), ("*.example.com", "x.org")])
    e = explain(RouteTable((lst,)), 443, sni="a.example.com")
    rejected = [c for c in e.candidates if c.verdict == REJECTED and c.match != "tcp"]
    assert e.route is lst.tls_chains[0].route
    assert "matches equally; the earlier chain *.example.com wins" in rejected[0].reason


def test_bind_selection():
    a = Listener(bind="127.0.0.1", port=80, tcp_route=route("a"))
    b = Listener(bind="0.0.0.0", port=80, tcp_route=route("b"))
    table = RouteTable((a, b))
    assert explain(table, 80, bind="0.0.0.0").route is b.tcp_route
    e = explain(table, 80)
    assert e.route is a.tcp_route and any("--bind" in n for n in e.notes)
    only_wild = RouteTable((b,))
    assert explain(only_wild, 80, bind="10.1.1.1").route is b.tcp_route
    e = explain(RouteTable((a,)), 80, bind="10.1.1.1")
    assert e.route is None and any("bound to 127.0.0.1" in n for n in e.notes)


def test_short_trace_has_no_spaces():
    from tsgate.routing import Decision
    assert short_trace(Decision(route("a b"), "tcp", "x")) == "tcp->a_b"
    assert short_trace(Decision(None, "none", "x")) == "none"


# --- agreement with the router, on many generated tables ----------------------------------

labels = st.sampled_from(["a", "b", "example", "com", "io", "x-y"])
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
patterns = st.one_of(names, names.map(lambda n: "*." + n), names.map(str.upper))
chains = st.lists(st.lists(patterns, max_size=3).map(tuple), max_size=6)
snis = st.one_of(st.none(), names, names.map(lambda n: n.upper() + "."), st.just(""))


@settings(max_examples=400, deadline=None)
@given(chains, st.booleans(), snis)
def test_explain_agrees_with_route_for_sni(chain_names, tcp, sni):
    """explain() chooses exactly what the data path's Listener.route_for_sni chooses."""
    lst = listener(chain_names, tcp=tcp)
    decision = lst.route_for_sni(sni)
    e = explain(RouteTable((lst,)), 443, sni=sni)
    chosen = [c for c in e.candidates if c.verdict == CHOSEN]
    assert not any("disagrees" in n for n in e.notes)
    assert e.route is decision.route
    if decision.route is None:
        assert chosen == [] and e.short() == "none"
    else:
        assert len(chosen) == 1 and chosen[0].route is decision.route
        assert chosen[0].match == decision.chain
    assert len(e.candidates) == len(lst.tls_chains) + (1 if tcp else 0)
    assert all(c.reason for c in e.candidates)
    assert " " not in e.short()


def test_tsgate_command(sni_config):
    """``python -m tsgate explain`` is wired into the real CLI."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "tsgate", "explain", "--config", str(sni_config),
         "--port", "31400", "--sni", "simple-sni-2.istioinaction.io",
         "--gateway-label", "istio=ingressgateway"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "route: default/simple-sni-2-vs#tls[0]" in proc.stdout
