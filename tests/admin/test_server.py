"""
The admin and readiness sites over real loopback HTTP, reading a fake gateway.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from tsgate.admin.server import make_admin_site, make_readiness_site

from .fakes import SNI1, SNI1_ROUTE, TCP_ROUTE, busy_gateway
from .http_client import close, fetch, listen


@pytest.fixture
def gateway():
    return busy_gateway()


@pytest.fixture
def admin(gateway):
    port = listen(make_admin_site(gateway, now=lambda: gateway.now))
    yield port
    pytest_twisted.blockon(close(port))


@pytest.fixture
def readiness(gateway):
    port = listen(make_readiness_site(gateway))
    yield port
    pytest_twisted.blockon(close(port))


@pytest_twisted.inlineCallbacks
def test_prometheus_endpoint_parses(admin, gateway):
    """/stats/prometheus is valid exposition text with the gateway's counters in it."""
    gateway.stats.inc("istio_tcp_connections_opened_total", 7, reporter="source",
                      destination_service_name="tcp-echo-service")
    r = yield fetch(admin, "/stats/prometheus")
    assert r.code == 200
    assert r.header("content-type").startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.body.decode())}
    opened = families["istio_tcp_connections_opened"].samples[0]
    assert opened.value == 7 and opened.labels["destination_service_name"] == "tcp-echo-service"
    fail = families["envoy_cluster_upstream_cx_connect_fail"].samples[0]
    assert fail.labels == {"cluster_name": SNI1.name} and fail.value == 1


@pytest_twisted.inlineCallbacks
def test_stats_text_flattens_envoy_names(admin):
    """/stats prints Envoy's flattened names that operators grep for."""
    r = yield fetch(admin, "/stats")
    assert r.code == 200
    assert f"cluster.{SNI1.name}.upstream_cx_connect_fail: 1" in r.body.decode().splitlines()
    r = yield fetch(admin, "/stats?format=json&filter=connect_fail")
    data = json.loads(r.body)
    assert data["stats"] == [{"name": f"cluster.{SNI1.name}.upstream_cx_connect_fail",
                              "value": 1}]
    r = yield fetch(admin, "/stats?filter=(")
    assert r.code == 400


@pytest_twisted.inlineCallbacks
def test_listeners_json_counts_connections_per_route(admin):
    """/listeners?format=json shows every chain with its live connection count."""
    r = yield fetch(admin, "/listeners?format=json")
    assert r.code == 200
    listeners = {v["name"]: v for v in json.loads(r.body)["listeners"]}
    l1 = listeners["0.0.0.0_31400"]
    assert l1["inspect"] is True and l1["active_connections"] == 7
    assert [c["match"] for c in l1["chains"]] == ["sni:simple-sni-1.istioinaction.io",
                                                    "sni:*.istioinaction.io"]
    assert l1["chains"][0]["route"]["active_connections"] == 2
    assert [d["percent"] for d in l1["chains"][1]["route"]["destinations"]] == [80.0, 20.0]
    # a route serving two listeners is counted per listener
    assert l1["tcp_route"]["active_connections"] == 3
    assert listeners["0.0.0.0_31401"]["tcp_route"]["active_connections"] == 4
    assert listeners["0.0.0.0_31401"]["active_connections"] == 4
    assert l1["tcp_route"]["source"].startswith("VirtualService default/tcp-echo-vs-from-gw")


@pytest_twisted.inlineCallbacks
def test_listeners_text(admin):
    """/listeners plain text is Envoy's name::address list."""
    r = yield fetch(admin, "/listeners")
    assert r.body.decode().splitlines() == ["0.0.0.0_31400::0.0.0.0:31400",
                                          "0.0.0.0_31401::0.0.0.0:31401"]


@pytest_twisted.inlineCallbacks
def test_clusters(admin):
    """/clusters: endpoints with live connections, cluster stats and that cluster's errors."""
    r = yield fetch(admin, "/clusters?format=json")
    clusters = {c["name"]: c for c in json.loads(r.body)["clusters"]}
    assert set(clusters) == {SNI1.name, TCP_ROUTE.destinations[0].cluster.name,
                             "outbound|80||simple-tls-service-2"}
    sni1 = clusters[SNI1.name]
    assert sni1["active_connections"] == 2
    assert [(e["address"], e["active_connections"]) for e in sni1["endpoints"]] == [
        ("10.0.0.11", 0), ("10.0.0.12", 2)]
    assert sni1["stats"] == {"upstream_cx_connect_fail": 1}
    assert len(sni1["last_errors"]) == 1 and "refused" in sni1["last_errors"][0]["message"]
    echo = clusters["outbound|2701||tcp-echo-service"]
    assert echo["upstreams"] == {"10.9.9.9:2701": 7} and echo["last_errors"] == []
    r = yield fetch(admin, "/clusters")
    lines = r.body.decode().splitlines()
    assert f"{SNI1.name}::10.0.0.12:8080::cx_active::2" in lines
    assert "outbound|2701||tcp-echo-service::10.9.9.9:2701::cx_active::7" in lines


@pytest_twisted.inlineCallbacks
def test_connections_and_errors(admin, gateway):
    """/connections groups live connections; /errors lists newest first."""
    r = yield fetch(admin, "/connections")
    data = json.loads(r.body)
    assert data["total"] == 11
    assert data["by_route"] == {"(choosing)": 1, SNI1_ROUTE.name: 2,
                                "default/simple-sni-2-vs#tls[0]": 1, TCP_ROUTE.name: 7}
    assert data["connections"][0]["duration"] >= 10
    r = yield fetch(admin, "/errors")
    errors = json.loads(r.body)["errors"]
    assert [e["time"] for e in errors] == [gateway.now - 1, gateway.now - 5]


@pytest_twisted.inlineCallbacks
def test_config_dump(admin):
    """/config_dump has the loaded files and the compiled table as JSON."""
    r = yield fetch(admin, "/config_dump")
    assert r.header("content-type") == "application/json"
    dump = json.loads(r.body)
    assert dump["config"]["files"] == ["gateway-tcp.yaml", "echo-vs.yaml"]
    listener = dump["table"]["listeners"][0]
    assert listener["name"] == "0.0.0.0_31400" and listener["port"] == 31400
    assert listener["tls_chains"][0]["route"]["destinations"] == [
        {"cluster": SNI1.name, "weight": 100}]
    clusters = {c["name"]: c for c in dump["table"]["clusters"]}
    assert clusters[SNI1.name]["endpoints"][1] == {
        "address": "10.0.0.12", "port": 8080, "weight": 3, "labels": {}}


@pytest_twisted.inlineCallbacks
def test_ready_and_drain(admin, readiness, gateway):
    """POST /drain drains once, and both readiness endpoints then answer 503."""
    r = yield fetch(admin, "/ready")
    assert (r.code, r.body) == (200, b"LIVE\n")
    r = yield fetch(readiness, "/healthz/ready")
    assert r.code == 200
    r = yield fetch(admin, "/drain")
    assert r.code == 405 and r.header("allow") == "POST"
    assert gateway.drains == 0
    r = yield fetch(admin, "/drain", "POST")
    r2 = yield fetch(admin, "/drain", "POST")
    assert (r.code, r2.code, gateway.drains) == (200, 200, 1)
    r = yield fetch(admin, "/ready")
    assert (r.code, r.body) == (503, b"DRAINING\n")
    r = yield fetch(readiness, "/healthz/ready")
    assert r.code == 503
    gateway.drained.callback(None)


@pytest_twisted.inlineCallbacks
def test_readiness_site_serves_nothing_else(readiness):
    """The :15021 site is reachable from the pod network: it must not expose admin pages."""
    for path in ("/stats", "/config_dump", "/", "/drain"):
        r = yield fetch(readiness, path)
        assert r.code == 404


@pytest_twisted.inlineCallbacks
def test_reload(admin, gateway):
    """POST /reload reports the new config's errors and a 400 when it was refused."""
    r = yield fetch(admin, "/reload", "POST")
    assert r.code == 200 and json.loads(r.body) == {"ok": True, "errors": []}
    gateway.reload_result.ok = False
    gateway.reload_result.errors = ("bad.yaml:3: spec.servers[0].port: required",)
    r = yield fetch(admin, "/reload", "POST")
    assert r.code == 400
    assert json.loads(r.body)["errors"] == ["bad.yaml:3: spec.servers[0].port: required"]
    assert gateway.reloads == 2


@pytest_twisted.inlineCallbacks
def test_browser_guards(admin, gateway):
    """Cross-origin POSTs and foreign Host names (DNS rebinding) are refused."""
    r = yield fetch(admin, "/drain", "POST", {"Origin": "http://evil.example"})
    assert r.code == 403 and gateway.drains == 0
    r = yield fetch(admin, "/config_dump", headers={"Host": "evil.example:15000"})
    assert r.code == 403
    r = yield fetch(admin, "/config_dump", headers={"Host": "localhost:15000"})
    assert r.code == 200


@pytest_twisted.inlineCallbacks
def test_status_page_files(admin):
    """/ serves the HTML, which loads app.js and style.css from the same server."""
    r = yield fetch(admin, "/")
    assert r.code == 200 and b'<script src="app.js">' in r.body
    assert r.header("content-type").startswith("text/html")
    r = yield fetch(admin, "/app.js")
    assert r.code == 200 and b"setInterval(refresh" in r.body
    r = yield fetch(admin, "/nope")
    assert r.code == 404


GATEWAY_AND_VS = """\
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: echo-tcp-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp-echo, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: tcp-echo-vs-from-gw}
spec:
  hosts: ["*"]
  gateways: [echo-tcp-gateway]
  tcp:
  - match: [{port: 31400}]
    route:
    - destination: {host: tcp-echo-service, port: {number: 2701}}
"""


@pytest_twisted.inlineCallbacks
def test_config_dump_of_a_real_config(admin, gateway, tmp_path):
    """With a real ConfigResult loaded, /config_dump shows its resources and the table."""
    from tsgate.config import load_config

    (tmp_path / "echo.yaml").write_text(GATEWAY_AND_VS)
    result = load_config([str(tmp_path)])
    assert result.ok
    gateway.config, gateway.table = result, result.table
    r = yield fetch(admin, "/config_dump")
    dump = json.loads(r.body)
    assert "dump_error" not in dump["config"]
    assert dump["config"]["ok"] is True
    assert dump["config"]["files"] == [str(tmp_path / "echo.yaml")]
    assert len(dump["config"]["resources"]) == 2
    (listener,) = dump["table"]["listeners"]
    assert listener["tcp_route"]["name"] == "default/tcp-echo-vs-from-gw#tcp[0]"


@pytest_twisted.inlineCallbacks
def test_connections_are_paged_server_side(admin, gateway):
    """/connections sends one bounded page, oldest first; totals count them all."""
    from tsgate.admin.server import MAX_PAGE

    gateway.add_connection(TCP_ROUTE, 1500, upstream="10.9.9.9:2701")
    r = yield fetch(admin, "/connections")
    data = json.loads(r.body)
    assert data["total"] == 1511 and len(data["connections"]) == 100
    starts = [c["started"] for c in data["connections"]]
    assert starts == sorted(starts) and starts[0] == min(c.started for c in gateway.live)
    r = yield fetch(admin, "/connections?limit=100000&offset=1500")
    data = json.loads(r.body)
    assert data["limit"] == MAX_PAGE and len(data["connections"]) == 11
    r = yield fetch(admin, "/connections?limit=x")
    assert r.code == 400


@pytest_twisted.inlineCallbacks
def test_status_totals_and_rates(admin, gateway):
    """/status: totals from the counters; rates from the previous request's totals."""
    gateway.stats.inc("listener.downstream_cx_total", 10, listener="0.0.0.0_31400")
    r = yield fetch(admin, "/status")
    first = json.loads(r.body)
    assert first["totals"]["connections"] == 10
    assert first["rates_per_second"]["connections"] is None  # nothing to compare with yet
    assert first["active_connections"] == 11
    (sni1,) = [c for c in first["clusters"] if c["name"] == SNI1.name]
    assert sni1["bytes_received"] == 300 and sni1["bytes_sent"] == 3000
    assert [e["active_connections"] for e in sni1["endpoints"]] == [0, 2]
    gateway.now += 2
    gateway.stats.inc("listener.downstream_cx_total", 30, listener="0.0.0.0_31400")
    r = yield fetch(admin, "/status")
    assert json.loads(r.body)["rates_per_second"]["connections"] == 15.0


@pytest_twisted.inlineCallbacks
def test_help_says_drain_keeps_running(admin):
    r = yield fetch(admin, "/help")
    text = r.body.decode()
    assert "connections, then exit" not in text
    assert "the process keeps running" in text and "/status" in text
