"""
Active health checks (``tsgate.io/health-check`` on a DestinationRule; Istio
has none): every ``interval`` each host of the cluster is connected to (TCP
connect check), optionally sent ``send`` and expected to answer bytes that
contain ``expect``, within ``timeout``. ``unhealthyThreshold`` failures in a
row mark a host unhealthy (no new connections), ``healthyThreshold``
successes in a row mark it healthy again. Hosts start healthy and are checked
at once.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import Logger

from tsgate.upstream.policy import HealthCheck

log = Logger(namespace="tsgate.health")


class _Probe(Protocol):
    transport: Any

    def __init__(self, check: _Check) -> None:
        self.check = check
        self.received = b""

    def connectionMade(self) -> None:
        hc = self.check.hc
        if hc.send:
            self.transport.write(hc.send)
        if not hc.expect:
            self.check.done(True, "")
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.check.hc.expect in self.received:
            self.check.done(True, "")
            self.transport.loseConnection()
        elif len(self.received) > 65536:
            self.check.done(False, "response without the expected bytes")
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.check.done(False, "closed before the expected bytes")


class _Check(ClientFactory):
    noisy = False

    def __init__(self, hc: HealthCheck, reactor: Any, host: Any,
                 report: Callable[[Any, bool, str], None]) -> None:
        self.hc = hc
        self.host = host
        self.report = report
        self.finished = False
        self.timer = reactor.callLater(hc.timeout, self._timeout)
        self.connector = reactor.connectTCP(host.address, host.port, self, timeout=hc.timeout)
        self.probe: Optional[_Probe] = None

    def buildProtocol(self, addr: Any) -> _Probe:
        self.probe = _Probe(self)
        return self.probe

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.done(False, reason.getErrorMessage())

    def _timeout(self) -> None:
        self.timer = None
        if not self.finished:
            self.done(False, "timeout")
            if self.probe is not None and self.probe.transport is not None:
                self.probe.transport.abortConnection()
            else:
                self.connector.stopConnecting()

    def done(self, ok: bool, why: str) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.report(self.host, ok, why)


class ClusterChecker:
    """Checks the hosts of one cluster every ``interval``."""

    def __init__(self, reactor: Any, hc: HealthCheck, hosts: Callable[[], Any],
                 on_change: Optional[Callable[[Any, bool, str], None]] = None) -> None:
        self.reactor = reactor
        self.hc = hc
        self.hosts = hosts
        self.on_change = on_change
        self.call: Any = None
        self.stopped = False
        self.rounds = 0

    def start(self) -> None:
        self._round()

    def _round(self) -> None:
        self.call = None
        if self.stopped:
            return
        self.rounds += 1
        for host in self.hosts():
            _Check(self.hc, self.reactor, host, self._report)
        self.call = self.reactor.callLater(self.hc.interval, self._round)

    def _report(self, host: Any, ok: bool, why: str) -> None:
        if self.stopped:
            return
        hc = self.hc
        if ok:
            host.hc_failures = 0
            host.hc_successes += 1
            if not host.hc_healthy and host.hc_successes >= hc.healthy_threshold:
                host.hc_healthy = True  # (on_change also tells the balancer)
                log.info("health check: {host} is healthy again", host=host.key)
                if self.on_change is not None:
                    self.on_change(host, True, "")
        else:
            host.hc_successes = 0
            host.hc_failures += 1
            if host.hc_healthy and host.hc_failures >= hc.unhealthy_threshold:
                host.hc_healthy = False
                log.warn("health check: {host} is unhealthy ({why})", host=host.key, why=why)
                if self.on_change is not None:
                    self.on_change(host, False, why)

    def stop(self) -> None:
        self.stopped = True
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
