"""The supervisor's decisions, with a fake process spawner (no real processes here)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from tsgate.routing import RouteTable
from tsgate.tap import Options
from tsgate.workers import supervisor as sup


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sent: list[bytes] = []
        self.signals: list[str] = []

    def writeToChild(self, fd: int, data: bytes) -> None:  # noqa: N802
        self.sent.append(data)

    def signalProcess(self, name: str) -> None:  # noqa: N802
        self.signals.append(name)


class FakeReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], dict[int, Any]]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: Any = None,
                     path: Any = None, childFDs: Any = None) -> FakeProcess:  # noqa: N803
        self.spawned.append((protocol, args, dict(childFDs)))
        return FakeProcess(1000 + len(self.spawned))


class Result:
    ok = True
    errors = ()

    def __init__(self) -> None:
        self.table = RouteTable()


def make(count: int = 2) -> tuple[sup.Supervisor, FakeReactor]:
    reactor = FakeReactor()
    s = sup.Supervisor(reactor, count, Result, lambda table: {}, lambda overrides: ["tsgate"],
                       initial=Result(), drain_period=1.0)
    s.startService()
    return s, reactor


def end(worker: sup.Worker, code: int = 1, sig: Any = None) -> Failure:
    return Failure(ProcessTerminated(exitCode=code, signal=sig))


def test_starts_n_workers_with_ids() -> None:
    s, reactor = make(3)
    assert [w.id for w in s.workers] == [1, 2, 3]
    assert len(reactor.spawned) == 3
    assert all("--worker-id" in args for _, args, _ in reactor.spawned)


def test_a_dead_worker_is_restarted_quickly_then_with_backoff() -> None:
    s, reactor = make(2)
    first = s.workers[0]
    reactor.advance(60)  # it lived long: the next death restarts after RESTART_FIRST
    s.worker_ended(first, end(first, sig=9))
    assert [w.id for w in s.workers] == [2]
    reactor.advance(sup.RESTART_FIRST)
    assert sorted(w.id for w in s.workers) == [1, 2]
    # dying young again and again: delays double up to RESTART_MAX
    delays = []
    for _ in range(8):
        w = next(w for w in s.workers if w.id == 1)
        s.worker_ended(w, end(w))
        before = len(reactor.spawned)
        waited = 0.0
        while len(reactor.spawned) == before:
            reactor.advance(0.05)
            waited += 0.05
        delays.append(round(waited, 2))
    assert delays[0] <= 0.15
    assert delays == sorted(delays)
    assert max(delays) <= sup.RESTART_MAX + 0.05
    assert s.stats.get("workers.restarted") == 9


def test_no_restart_while_stopping_and_stop_waits_for_every_worker() -> None:
    s, reactor = make(2)
    done: list[Any] = []
    s.stopService().addBoth(done.append)
    assert all(w.process.signals == ["TERM"] for w in s.workers)
    for w in list(s.workers):
        s.worker_ended(w, end(w, code=0))
    assert done == [None]
    reactor.advance(10)
    assert s.workers == [] and len(reactor.spawned) == 2


def test_merged_stats_keep_counters_of_exited_workers() -> None:
    s, reactor = make(2)
    counters = {"counters": [["listener.downstream_cx_total", [], 5]]}
    for w in s.workers:
        s.message(w, {"t": "stats", "ready": True, "stats": counters})
    assert s.ready
    assert s.merged_stats().get("listener.downstream_cx_total") == 10
    w = s.workers[0]
    s.worker_ended(w, end(w, sig=9))
    assert not s.ready
    assert s.merged_stats().get("listener.downstream_cx_total") == 10


def test_reload_is_announced_once_every_worker_switched(caplog: Any) -> None:
    s, reactor = make(2)
    for w in s.workers:
        s.message(w, {"t": "stats", "ready": True, "stats": {}})
    s.reload()
    assert all(w.process.sent[-1] == b"reload\n" for w in s.workers)
    assert s._reload_announce is not None
    s.message(s.workers[0], {"t": "reload", "ok": True})
    assert s._reload_announce is not None
    s.message(s.workers[1], {"t": "reload", "ok": True})
    assert s._reload_announce is None
    assert s.stats.get("config.reload_success") == 1


def test_worker_arguments_leave_admin_and_watching_to_the_supervisor() -> None:
    options = Options()
    options.parseOptions(["--config", "a.yaml", "--config", "b/", "--gateway-label", "app=gw",
                          "--gateway-class", "tsgate", "--namespace-label", "apps:team=a",  # type: ignore[no-untyped-call]
                          "--workers", "2", "--idle-timeout", "30", "--admin",
                          "tcp:15000", "--endpoint", "31400=tcp:0"])
    build = sup.worker_arguments(options, Options.optParameters)
    args = build({31400: "systemd:domain=INET:index=0"})
    joined = " ".join(args)
    assert "--config a.yaml --config b/" in joined
    assert "--gateway-label app=gw" in joined
    assert "--gateway-class tsgate" in joined and "--namespace-label apps:team=a" in joined
    assert "--endpoint 31400=systemd:domain=INET:index=0" in joined
    assert "tcp:0" not in joined
    assert "--admin none" in joined and "--readiness none" in joined
    assert "--watch-interval 0" in joined
    assert "--idle-timeout 30.0" in joined
    assert args.count("--workers") == 1 and args[args.index("--workers") + 1] == "1"
    reparsed = Options()
    reparsed.parseOptions(args[args.index("tsgate") + 1:])  # type: ignore[no-untyped-call]
    assert reparsed["idle-timeout"] == 30.0 and reparsed["workers"] == 1
    assert reparsed["gateway-classes"] == ["tsgate"]
    assert reparsed["namespace-labels"] == {"apps": {"team": "a"}}


@pytest.mark.parametrize("description, expected", [
    ("tcp:port=0:interface=127.0.0.1:backlog=1024", (socket.AF_INET, "127.0.0.1", 0)),
    ("tcp:31400:interface=127.0.0.1", (socket.AF_INET, "127.0.0.1", 31400)),
    ("tcp6:port=31400:interface=\\:\\:1", (socket.AF_INET6, "::1", 31400)),
    ("tcp:port=31400", (socket.AF_INET, "0.0.0.0", 31400)),
    ("systemd:domain=INET:index=0", None),
    ("unix:/run/tsgate.sock", None),
    ("tcp:port=notaport", None),
])
def test_tcp_address(description: str, expected: Any) -> None:
    assert sup.tcp_address(description) == expected


def test_parse_workers() -> None:
    assert sup.parse_workers("3") == 3
    assert sup.parse_workers("auto") == sup.usable_cores()
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError):
            sup.parse_workers(bad)


def test_reuseport_sockets_share_a_port() -> None:
    a = sup.reuseport_socket(socket.AF_INET, ("127.0.0.1", 0))
    b = sup.reuseport_socket(socket.AF_INET, a.getsockname())
    try:
        assert a.getsockname() == b.getsockname()
    finally:
        a.close()
        b.close()


def test_bound_addresses_are_the_held_sockets() -> None:
    """What the "tsgate ... started" line lists (a supervisor listens through its workers)."""
    reactor = FakeReactor()
    wanted = {("0.0.0.0", 7000): (7000, "tcp:0:interface=127.0.0.1")}
    s = sup.Supervisor(reactor, 2, Result, lambda table: wanted, lambda overrides: ["tsgate"],
                       initial=Result(), drain_period=1.0)
    s.privilegedStartService()
    try:
        held = s.sockets[("0.0.0.0", 7000)]
        assert held.anchor is not None
        port = held.anchor.getsockname()[1]
        assert port > 0
        assert s.bound_addresses() == {"0.0.0.0_7000": f"127.0.0.1:{port}"}
    finally:
        s.stopService()


def test_held_socket_addresses_bracket_ipv6_and_name_unix_paths() -> None:
    """The startup line's addresses: ``[v6]:port``, ``v4:port``, a unix socket's path."""
    from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

    class Anchor:
        def __init__(self, name: Any) -> None:
            self.name = name

        def getsockname(self) -> Any:
            return self.name

    class Shared:
        def __init__(self, address: Any) -> None:
            self.address = address

        def getHost(self) -> Any:
            return self.address

    def held(**kw: Any) -> sup.HeldSocket:
        return sup.HeldSocket(("0.0.0.0", 8443), "tcp:8443", "INET", **kw)

    assert held(anchor=Anchor(("::1", 8443, 0, 0))).address() == "[::1]:8443"
    assert held(anchor=Anchor(("127.0.0.1", 8443))).address() == "127.0.0.1:8443"
    assert held(shared=Shared(IPv6Address("TCP", "::", 443))).address() == "[::]:443"
    assert held(shared=Shared(IPv4Address("TCP", "10.0.0.1", 443))).address() == "10.0.0.1:443"
    assert held(shared=Shared(UNIXAddress(b"/run/gw.sock"))).address() == "/run/gw.sock"
