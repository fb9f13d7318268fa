"""
What each admin page shows (tsgate.admin.views), by plain function calls on
the fake gateway: no request, no reactor, no socket. The pages themselves
(paths, guards, status codes) are tests/admin/test_server.py's.
"""

from __future__ import annotations

from tests.admin.fakes import (
    ECHO,
    SNI1,
    SNI1_ROUTE,
    SNI2,
    SPLIT_ROUTE,
    TABLE,
    TCP_ROUTE,
    FakeGateway,
    busy_gateway,
)
from tsgate.admin import views
from tsgate.admin.resources import host_allowed
from tsgate.config.dump import table_to_dict

NOW = 1_700_000_000.0


def test_listeners_view_follows_the_table_model() -> None:
    gw = busy_gateway()
    first, second = views.listeners_view(gw)
    # each chain in the listener's order (RouteTable.routes), with its match
    entries = [e for e in TABLE.routes() if e.listener.name == first["name"]]
    assert [c["match"] for c in first["chains"]] == [e.match for e in entries if e.chain]
    assert [c["server_names"] for c in first["chains"]] == [
        ["simple-sni-1.istioinaction.io"], ["*.istioinaction.io"]]
    assert first["chains"][1]["route"]["destinations"] == [
        {"cluster": SNI2.name, "weight": 80, "percent": 80.0},
        {"cluster": ECHO.name, "weight": 20, "percent": 20.0}]
    # live counts per listener and per (listener, route)
    assert (first["active_connections"], second["active_connections"]) == (7, 4)
    assert first["chains"][0]["route"]["active_connections"] == 2
    assert (first["tcp_route"]["active_connections"],
            second["tcp_route"]["active_connections"]) == (3, 4)
    assert second["chains"] == [] and second["address"] == "0.0.0.0:31401"
    assert views.listeners_text([first, second]) == (
        "0.0.0.0_31400::0.0.0.0:31400\n0.0.0.0_31401::0.0.0.0:31401\n")


def test_clusters_view_lists_a_shared_cluster_once_by_name() -> None:
    gw = busy_gateway()
    clusters = views.clusters_view(gw)
    # ECHO is used by three routes on two listeners: one entry, all its connections
    assert [c["name"] for c in clusters] == sorted(c.name for c in TABLE.clusters())
    (echo,) = [c for c in clusters if c["name"] == ECHO.name]
    assert echo["active_connections"] == 7 and echo["upstreams"] == {"10.9.9.9:2701": 7}
    (sni1,) = [c for c in clusters if c["name"] == SNI1.name]
    assert [(e["address"], e["weight"], e["active_connections"]) for e in sni1["endpoints"]] \
        == [("10.0.0.11", 1, 0), ("10.0.0.12", 3, 2)]
    assert sni1["stats"] == {"upstream_cx_connect_fail": 1}
    assert [e["message"] for e in sni1["last_errors"]] == [
        "connect to outbound|80||simple-tls-service-1 10.0.0.11:8080 failed: refused"]
    text = views.clusters_text(clusters)
    assert f"{SNI1.name}::10.0.0.12:8080::weight::3\n" in text
    assert f"{ECHO.name}::10.9.9.9:2701::cx_active::7\n" in text


def test_config_dump_is_the_tables_dict_form_with_real_addresses() -> None:
    gw = FakeGateway()
    dump = views.config_dump(gw)
    assert dump["table"] == table_to_dict(TABLE)
    assert dump["config"]["files"] == ["gateway-tcp.yaml", "echo-vs.yaml"]

    class Bound(FakeGateway):
        def bound_addresses(self) -> dict[str, str]:
            return {"0.0.0.0_31400": "127.0.0.1:5555"}

    bound = views.config_dump(Bound())["table"]["listeners"]
    assert [li.get("address") for li in bound] == ["127.0.0.1:5555", None]


def test_connections_view_pages_oldest_first() -> None:
    gw = busy_gateway()
    page = views.connections_view(gw, NOW + 100, limit=3, offset=1)
    assert (page["total"], page["offset"], page["limit"], len(page["connections"])) == (
        11, 1, 3, 3)
    started = [c["started"] for c in page["connections"]]
    assert started == sorted(started)
    assert page["by_route"] == {"(choosing)": 1, SNI1_ROUTE.name: 2, SPLIT_ROUTE.name: 1,
                                TCP_ROUTE.name: 7}
    assert views.connections_view(gw, NOW, limit=10**6)["limit"] == views.MAX_PAGE


def test_errors_view_is_newest_first() -> None:
    errors = views.errors_view(busy_gateway())
    assert [e["time"] for e in errors] == [NOW - 1, NOW - 5]
    assert errors[0]["iso"] == "2023-11-14T22:13:19Z"


def test_status_rates_need_a_sample_between_half_a_second_and_a_minute_old() -> None:
    totals = {"connections": 30.0}
    assert views.rates_per_second(totals, [], NOW) == {"connections": None}
    assert views.rates_per_second(totals, [(NOW - 0.1, {"connections": 0.0})], NOW) == {
        "connections": None}
    assert views.rates_per_second(totals, [(NOW - 61, {"connections": 0.0}),
                                           (NOW - 10, {"connections": 10.0})], NOW) == {
        "connections": 2.0}


def test_status_view_adds_up_one_pass() -> None:
    gw = busy_gateway()
    totals = views.status_totals(gw)
    assert totals["upstream_connect_failures"] == 1 and totals["connections"] == 0
    status = views.status_view(gw, NOW + 30, NOW, totals, dict.fromkeys(totals))
    assert (status["uptime"], status["active_connections"]) == (30.0, 11)
    assert status["listeners"] == views.listeners_view(gw)
    assert status["clusters"] == views.clusters_view(gw)


def test_host_guard_takes_ip_literals_localhost_and_allowed_names() -> None:
    for host in (None, b"", b"127.0.0.1:15000", b"[::1]:15000", b"localhost", b"LOCALHOST.",
                 b"admin.internal"):
        assert host_allowed(host, ("admin.internal",)), host
    for host in (b"evil.example.com", b"evil.example.com:15000", b"admin.internal.evil"):
        assert not host_allowed(host, ("admin.internal",)), host
