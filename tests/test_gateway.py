"""
tsgate.gateway on a MemoryReactorClock: endpoint strings, the table swap on
reload (new listeners bound first, a bad config or a failed bind keeps the
running one), drain. Real sockets are in tests/e2e/.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
import pytest
from twisted.internet.testing import MemoryReactorClock

from tests.support.routes import route
from tsgate.gateway import Gateway, ListenError, listener_endpoint, unix_endpoint
from tsgate.proxy.context import ProxyContext
from tsgate.proxy.listen import max_backlog
from tsgate.routing import Listener, RouteTable


def tcp_listener(port: int, bind: str = "0.0.0.0") -> Listener:
    return Listener(bind=bind, port=port, tcp_route=route())


@attrs.frozen
class Result:
    """The part of a config result the gateway reads."""

    table: RouteTable
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


class Loads:
    """What ``load()`` returns next (or raises)."""

    def __init__(self, first: Any) -> None:
        self.next: Any = first

    def __call__(self) -> Any:
        if isinstance(self.next, Exception):
            raise self.next
        return self.next


def gateway(*ports: int, overrides: Optional[dict[int, str]] = None) -> tuple[Gateway, Loads]:
    reactor = MemoryReactorClock()
    loads = Loads(Result(RouteTable(tuple(tcp_listener(p) for p in ports))))
    gw = Gateway(reactor, ProxyContext(reactor=reactor), loads,
                 endpoint_overrides=overrides, drain_period=5.0)
    return gw, loads


def bound(gw: Gateway) -> list[int]:
    return sorted(port for _bind, port in gw.ports)


def test_listener_endpoint_strings() -> None:
    backlog = max_backlog()  # the kernel's somaxconn
    assert listener_endpoint(tcp_listener(31400), None, {}) == (
        f"tcp:port=31400:interface=0.0.0.0:backlog={backlog}")
    assert listener_endpoint(tcp_listener(31400), "127.0.0.1", {}) == (
        f"tcp:port=31400:interface=127.0.0.1:backlog={backlog}")
    # --bind replaces only the wildcard addresses, IPv6 is escaped and tcp6
    assert listener_endpoint(tcp_listener(443, "::"), "::1", {}) == (
        f"tcp6:port=443:interface=\\:\\:1:backlog={backlog}")
    assert listener_endpoint(tcp_listener(443, "10.0.0.1"), "127.0.0.1", {}) == (
        f"tcp:port=443:interface=10.0.0.1:backlog={backlog}")
    # --endpoint PORT=STRING wins over everything
    assert listener_endpoint(tcp_listener(443), "127.0.0.1", {443: "systemd:domain=INET:index=0"}
                             ) == "systemd:domain=INET:index=0"


def test_unix_endpoint_strings() -> None:
    assert unix_endpoint("unix:///run/gw.sock") == (
        "unix:address=/run/gw.sock:lockfile=1:backlog=1024")
    assert unix_endpoint("unix://@tsgate") == "unix:address=\0tsgate:lockfile=0:backlog=1024"
    assert unix_endpoint("unix:///run/a:b=c.sock") == (
        "unix:address=/run/a\\:b\\=c.sock:lockfile=1:backlog=1024")
    unix = Listener(bind="unix:///run/gw.sock", port=0, tcp_route=route())
    assert listener_endpoint(unix, "127.0.0.1", {}) == unix_endpoint("unix:///run/gw.sock")


def test_start_binds_every_listener_and_stop_releases_them() -> None:
    gw, _ = gateway(31400, 31401)
    gw.privilegedStartService()
    gw.startService()
    assert gw.ready and bound(gw) == [31400, 31401]
    assert sorted(p for p, *_ in gw.reactor.tcpServers) == [31400, 31401]
    gw.stopService()
    assert not gw.ready and gw.ports == {}


def test_reload_swaps_listeners_and_keeps_shared_ones() -> None:
    gw, loads = gateway(31400, 31401)
    gw.startService()
    kept = gw.ports[("0.0.0.0", 31400)]
    new_route = route("default/other#tcp[0]")
    loads.next = Result(RouteTable((
        Listener(bind="0.0.0.0", port=31400, tcp_route=new_route), tcp_listener(31402))))
    assert gw.reload() is loads.next
    assert bound(gw) == [31400, 31402]
    assert gw.ports[("0.0.0.0", 31400)] is kept  # not rebound
    assert gw.factories[("0.0.0.0", 31400)].listener.tcp_route == new_route
    assert gw.stats.get("config.reload_success") == 1
    gw.stopService()


def test_a_rejected_or_unreadable_config_keeps_the_running_table() -> None:
    gw, loads = gateway(31400)
    gw.startService()
    table = gw.table
    loads.next = Result(RouteTable((tcp_listener(9999),)), errors=("bad",))
    gw.reload()
    loads.next = OSError("unreadable")
    assert gw.reload() is None
    assert gw.table is table and bound(gw) == [31400]
    assert gw.stats.get("config.reload_failed") == 2
    assert [message for _, message in gw.recent_errors] == [
        "reload rejected: 1 error(s)", "reload failed: unreadable"]
    gw.stopService()


def test_a_bind_that_fails_changes_nothing() -> None:
    """New listeners are bound first; one bad endpoint rejects the whole table."""
    gw, loads = gateway(31400, overrides={31402: "nonsense:endpoint"})
    gw.startService()
    loads.next = Result(RouteTable((tcp_listener(31400), tcp_listener(31401),
                                    tcp_listener(31402))))
    gw.reload()
    assert bound(gw) == [31400]
    assert gw.stats.get("config.reload_failed") == 1
    assert "cannot listen" in gw.recent_errors[-1][1]
    with pytest.raises(ListenError):
        gw._listen(tcp_listener(31402))
    gw.stopService()


class OpenConnection:
    """Stands in for a live DownstreamProtocol in ``ctx.connections``."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.closed_with: Optional[str] = None
        gw.ctx.connections.add(self)

    def close_gracefully(self, why: str) -> None:
        self.closed_with = why
        self.gw.ctx.connections.discard(self)


def test_drain_stops_accepting_and_waits_for_connections_to_finish() -> None:
    gw, _ = gateway(31400)
    gw.startService()
    conn = OpenConnection(gw)
    cut: list[int] = []
    gw.drain(1.0).addCallback(cut.append)
    assert not gw.ready and gw.draining and gw.ports == {}
    gw.drain().addCallback(cut.append)  # a second drain waits for the same one
    gw.reactor.advance(0.5)
    assert cut == []
    gw.ctx.connections.discard(conn)  # the connection finished in time
    gw.reactor.advance(0.1)
    assert cut == [0, 0] and conn.closed_with is None
    assert gw.stats.get("gateway.drain_cut") == 0
    done: list[int] = []
    gw.drain().addCallback(done.append)  # drained already: at once
    assert done == [0]


def test_drain_cuts_what_is_left_at_the_end_of_the_period() -> None:
    gw, _ = gateway(31400)
    gw.startService()
    conns = [OpenConnection(gw), OpenConnection(gw)]
    cut: list[int] = []
    gw.drain().addCallback(cut.append)  # the gateway's drain period: 5 s
    gw.reactor.advance(4.9)
    assert cut == []
    for _ in range(3):
        gw.reactor.advance(0.1)
    assert cut == [2]
    assert [c.closed_with for c in conns] == ["drained", "drained"]
    assert gw.stats.get("gateway.drain_cut") == 2
