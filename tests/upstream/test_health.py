"""
Active health checks (tsgate/upstream/health.py) as unit logic: a
MemoryReactorClock records each connect and holds the timers, the probe talks
to a StringTransport. The semantics are those of an Envoy TCP health check:
connect (and optionally send, then expect bytes) within ``timeout``;
``unhealthyThreshold`` failures in a row eject a host from new connections,
``healthyThreshold`` successes in a row bring it back; hosts start healthy.
Each test names the mutants of ``mutmut`` it was written to kill.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure

from tsgate.upstream import health
from tsgate.upstream.health import ClusterChecker
from tsgate.upstream.policy import HealthCheck


class Host:
    def __init__(self, address: str = "127.0.0.2", port: int = 5432) -> None:
        self.address, self.port = address, port
        self.key = f"{address}:{port}"
        self.hc_healthy = True
        self.hc_failures = 0
        self.hc_successes = 0


class Checker:
    """A ClusterChecker on a memory reactor, recording its changes."""

    def __init__(self, hc: HealthCheck, hosts: list[Host]) -> None:
        self.reactor = MemoryReactorClock()
        self.hosts = hosts
        self.changes: list[tuple[str, bool, str]] = []
        self.checker = ClusterChecker(self.reactor, hc, lambda: self.hosts,
                                      lambda h, ok, why: self.changes.append((h.key, ok, why)))

    def connect(self, i: int = -1) -> tuple[Any, StringTransport]:
        """Completes the i-th connect attempt: returns (probe, its transport)."""
        factory = self.reactor.tcpClients[i][2]
        probe: Any = factory.buildProtocol(None)
        transport = StringTransport()
        probe.makeConnection(transport)
        return probe, transport

    def refuse(self, i: int = -1) -> None:
        self.reactor.tcpClients[i][2].clientConnectionFailed(
            self.reactor.connectors[i], Failure(ConnectionRefusedError("refused")))


def test_hosts_are_checked_at_once_then_every_interval() -> None:
    """Kills mutants of _round (interval, the rounds count, the connect's address and timeout)."""
    hosts = [Host("127.0.0.2", 1), Host("127.0.0.3", 2)]
    c = Checker(HealthCheck(interval=10.0, timeout=1.5), hosts)
    c.checker.start()
    assert [(h, p, t) for h, p, _f, t, _b in c.reactor.tcpClients] == [
        ("127.0.0.2", 1, 1.5), ("127.0.0.3", 2, 1.5)]
    assert c.checker.rounds == 1
    c.reactor.advance(9.9)
    assert len(c.reactor.tcpClients) == 2 + 0  # the timeouts fired, no new round yet
    c.reactor.advance(0.1)
    assert len(c.reactor.tcpClients) == 4
    assert c.checker.rounds == 2


def test_tcp_connect_check_succeeds_on_connect_and_closes() -> None:
    """Kills mutants of _Probe.connectionMade (no send, no expect: the connect is the check)."""
    host = Host()
    host.hc_healthy, host.hc_failures = False, 3
    c = Checker(HealthCheck(healthy_threshold=1), [host])
    c.checker.start()
    _probe, transport = c.connect()
    assert transport.value() == b""  # nothing to send
    assert transport.disconnecting
    assert host.hc_healthy and host.hc_failures == 0 and host.hc_successes == 1
    assert c.changes == [(host.key, True, "")]
    assert c.reactor.getDelayedCalls() != []  # the next round
    assert all(call.getTime() == 10.0 for call in c.reactor.getDelayedCalls())  # timer cancelled


def test_send_then_expect_across_chunks() -> None:
    """Kills mutants of connectionMade/dataReceived (send written; expect over reads)."""
    host = Host()
    host.hc_healthy = False
    c = Checker(HealthCheck(send=b"PING\r\n", expect=b"PONG"), [host])
    c.checker.start()
    probe, transport = c.connect()
    assert transport.value() == b"PING\r\n"
    assert not transport.disconnecting  # waiting for the answer
    probe.dataReceived(b"+PO")
    assert not host.hc_healthy and not transport.disconnecting
    probe.dataReceived(b"NG\r\n")
    assert host.hc_healthy and transport.disconnecting
    assert c.changes == [(host.key, True, "")]
    probe.connectionLost(None)  # the close that follows is not a failure
    assert host.hc_failures == 0 and host.hc_successes == 1


def test_an_answer_without_the_expected_bytes_fails_past_64k() -> None:
    """Kills mutants of the 65536-byte bound in dataReceived (> not >=, the reason, the close)."""
    host = Host()
    c = Checker(HealthCheck(expect=b"OK", unhealthy_threshold=1), [host])
    c.checker.start()
    probe, transport = c.connect()
    probe.dataReceived(b"x" * 65536)
    assert host.hc_healthy and not transport.disconnecting  # exactly 64 KiB: still waiting
    probe.dataReceived(b"x")
    assert not host.hc_healthy and transport.disconnecting
    assert c.changes == [(host.key, False, "response without the expected bytes")]


def test_closed_before_the_expected_bytes_fails() -> None:
    """Kills mutants of _Probe.connectionLost (ok False, the reason)."""
    host = Host()
    c = Checker(HealthCheck(expect=b"OK", unhealthy_threshold=1), [host])
    c.checker.start()
    probe, _transport = c.connect()
    probe.dataReceived(b"NO")
    probe.connectionLost(None)
    assert c.changes == [(host.key, False, "closed before the expected bytes")]


def test_refused_connect_fails_with_the_error() -> None:
    """Kills mutants of _Check.clientConnectionFailed (ok False, the error message)."""
    host = Host()
    c = Checker(HealthCheck(unhealthy_threshold=1), [host])
    c.checker.start()
    c.refuse()
    assert not host.hc_healthy
    assert c.changes[0][:2] == (host.key, False) and "refused" in c.changes[0][2]


def test_timeout_before_connect_stops_connecting() -> None:
    """Kills mutants of _Check._timeout (reason; stopConnecting when not connected)."""
    host = Host()
    c = Checker(HealthCheck(timeout=1.0, unhealthy_threshold=1), [host])
    c.checker.start()
    c.reactor.advance(0.99)
    assert host.hc_healthy
    c.reactor.advance(0.01)
    assert c.changes == [(host.key, False, "timeout")]
    assert c.reactor.connectors[0].stoppedConnecting


def test_timeout_after_connect_aborts_the_probe() -> None:
    """Kills mutants of _Check._timeout (abortConnection on a connected probe)."""
    host = Host()
    c = Checker(HealthCheck(timeout=1.0, expect=b"OK", unhealthy_threshold=1), [host])
    c.checker.start()
    _probe, transport = c.connect()
    c.reactor.advance(1.0)
    assert c.changes == [(host.key, False, "timeout")]
    assert transport.disconnecting and not c.reactor.connectors[0].stoppedConnecting


def test_a_finished_check_ignores_its_timeout() -> None:
    """Kills mutants of _Check.done/_timeout (finished guard; the timer cancelled on success)."""
    host = Host()
    c = Checker(HealthCheck(timeout=1.0, unhealthy_threshold=1, interval=100.0), [host])
    c.checker.start()
    c.connect()
    assert len(c.reactor.getDelayedCalls()) == 1  # the check's timer is gone, the round stays
    c.reactor.advance(1.0)
    assert host.hc_healthy and c.changes == []
    assert not c.reactor.connectors[0].stoppedConnecting


def test_unhealthy_after_threshold_failures_in_a_row() -> None:
    """Kills mutants of _report's failure branch (>= threshold, counts reset by a success)."""
    host = Host()
    c = Checker(HealthCheck(unhealthy_threshold=2, interval=10.0), [host])
    c.checker.start()
    c.refuse()
    assert host.hc_healthy and host.hc_failures == 1 and c.changes == []
    c.reactor.advance(10.0)
    c.connect()  # a success in between resets the run of failures
    assert host.hc_failures == 0 and host.hc_successes == 1
    c.reactor.advance(10.0)
    c.refuse()
    assert host.hc_healthy and host.hc_successes == 0
    c.reactor.advance(10.0)
    c.refuse()
    assert not host.hc_healthy and host.hc_failures == 2
    assert [ok for _k, ok, _w in c.changes] == [False]
    c.reactor.advance(10.0)
    c.refuse()  # already unhealthy: no second change
    assert len(c.changes) == 1 and host.hc_failures == 3


def test_healthy_again_after_threshold_successes() -> None:
    """Kills mutants of _report's success branch (>= healthy threshold, one change)."""
    host = Host()
    host.hc_healthy = False
    c = Checker(HealthCheck(healthy_threshold=2, interval=10.0), [host])
    c.checker.start()
    c.connect()
    assert not host.hc_healthy and c.changes == []
    c.reactor.advance(10.0)
    c.connect()
    assert host.hc_healthy and c.changes == [(host.key, True, "")]
    c.reactor.advance(10.0)
    c.connect()  # already healthy: no second change
    assert len(c.changes) == 1 and host.hc_successes == 3


def test_changes_without_a_listener() -> None:
    """Kills mutants of the ``on_change is not None`` guards."""
    host = Host()
    reactor = MemoryReactorClock()
    checker = ClusterChecker(reactor, HealthCheck(unhealthy_threshold=1, interval=10.0),
                             lambda: [host])
    checker.start()
    reactor.tcpClients[0][2].clientConnectionFailed(reactor.connectors[0],
                                                    Failure(ConnectionRefusedError()))
    assert not host.hc_healthy
    reactor.advance(10.0)
    probe: Any = reactor.tcpClients[1][2].buildProtocol(None)
    probe.makeConnection(StringTransport())
    assert host.hc_healthy


def test_stop_cancels_the_next_round_and_ignores_late_reports() -> None:
    """Kills mutants of ClusterChecker.stop/_round/_report (stopped guards, the call cancelled)."""
    host = Host()
    c = Checker(HealthCheck(unhealthy_threshold=1, interval=10.0), [host])
    c.checker.start()
    c.checker.stop()
    assert c.checker.call is None
    assert all(call.getTime() != 10.0 for call in c.reactor.getDelayedCalls())
    c.refuse()  # the report of a check in flight
    assert host.hc_healthy and host.hc_failures == 0 and c.changes == []
    c.reactor.advance(20.0)
    assert len(c.reactor.tcpClients) == 1
    c.checker.stop()  # twice is harmless
    c.checker._round()  # a round already due does nothing once stopped
    assert len(c.reactor.tcpClients) == 1 and c.checker.rounds == 1


def test_changes_are_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kills _report 12-17/36-43 (the log lines of a change, with the host and the reason)."""
    lines: list[str] = []
    monkeypatch.setattr(health, "log", Logger(
        namespace="tsgate.health", observer=cast(Any, lambda e: lines.append(formatEvent(e)))))
    host = Host("127.0.0.2", 7)
    c = Checker(HealthCheck(unhealthy_threshold=1, timeout=1.0, interval=10.0), [host])
    c.checker.start()
    c.reactor.advance(1.0)
    assert host.hc_healthy is False  # False, as the balancer's view shows it
    c.reactor.advance(9.0)
    c.connect()
    assert lines == ["health check: 127.0.0.2:7 is unhealthy (timeout)",
                     "health check: 127.0.0.2:7 is healthy again"]


def test_stop_before_start_and_after_a_stopped_round() -> None:
    """Kills ClusterChecker.__init__ 5 and _round 1 (no timer is an absent call, not "")."""
    c = Checker(HealthCheck(), [Host()])
    c.checker.stop()
    c.checker._round()
    c.checker.stop()
    assert c.checker.call is None and c.reactor.tcpClients == []
