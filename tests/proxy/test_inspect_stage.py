"""
The listener stages and the inspection (tsgate.proxy.inspect) on the
unit-test harness: Envoy's tls_inspector counters, inspectors in order,
several listener stages, the deadline. Each test states the planted bug (a
mutant of docs/mutation-report.md, "data path") it catches.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest
from twisted.logger import Logger

from tests.support.proxy import Harness, route
from tests.support.samples import client_hello
from tsgate.hints.postgres import PostgresStartTlsNegotiator
from tsgate.hints.tls import TlsHintParser
from tsgate.interfaces import Hint, HintParseError
from tsgate.proxy import inspect
from tsgate.proxy.stages import NEED_MORE, Ending, StageResult, Stages
from tsgate.proxy.state import CONNECTING
from tsgate.routing import Listener, SniChain

KEY = "0.0.0.0_31400"
MIXED = Listener(bind="0.0.0.0", port=31400, tcp_route=route(),
                 tls_chains=(SniChain(("a.example.test",), route("default/a#tls[0]")),))
TLS_ONLY = Listener(bind="0.0.0.0", port=31400,
                    tls_chains=(SniChain(("a.example.test",), route("default/a#tls[0]")),))
TCP = Listener(bind="0.0.0.0", port=31400, tcp_route=route())
COUNTERS = ("tls_found", "sni_found", "sni_not_found", "alpn_found", "tls_not_found",
            "client_hello_too_large", "parse_error", "connection_closed", "read_timeout")



def written(transport: Any) -> bytes:
    """What the code under test wrote to a StringTransport (typed for mypy)."""
    return bytes(transport.value())

def counters(h: Harness) -> dict[str, float]:
    """The tls_inspector counters of the listener that are not zero."""
    got = {name: h.ctx.stats.get(f"tls_inspector.{name}", listener=KEY) for name in COUNTERS}
    return {name: value for name, value in got.items() if value}


def test_hello_with_sni_and_alpn() -> None:
    """Envoy's tls_found, sni_found, alpn_found (planted: any of them misnamed or not counted)."""
    h = Harness(MIXED)
    protocol, down = h.accept()
    protocol.dataReceived(client_hello("a.example.test", alpn=["h2"]))
    assert counters(h) == {"tls_found": 1, "sni_found": 1, "alpn_found": 1}
    assert protocol.route is not None and protocol.route.name == "default/a#tls[0]"
    h.close(protocol)
    hints = h.records[0].hints
    assert hints is not None and hints["protocol"] == "tls" and hints["alpn"] == "h2"


def test_hello_without_sni_or_alpn() -> None:
    """sni_not_found, no alpn_found (planted: sni_found either way, alpn_found either way)."""
    h = Harness(MIXED)
    protocol, down = h.accept()
    protocol.dataReceived(client_hello(None))
    assert counters(h) == {"tls_found": 1, "sni_not_found": 1}
    assert protocol.route is not None and protocol.route.name == "default/echo#tcp[0]"


def test_not_tls_is_tls_not_found() -> None:
    h = Harness(MIXED)
    protocol, down = h.accept()
    protocol.dataReceived(b"GET / HTTP/1.1\r\n")
    assert counters(h) == {"tls_not_found": 1}


def test_a_non_tls_hint_is_no_tls_counter_but_is_logged() -> None:
    """
    A hint of another protocol routes without SNI, counts nothing of the TLS
    inspector's, and its attributes reach the access log.
    """
    class Fake:
        name = protocol = "fake"

        def parse(self, data: bytes) -> Hint:
            return Hint(protocol="fake", attributes={"user": "sam"}, length=len(data))

    h = Harness(MIXED)
    h.ctx.inspectors = [TlsHintParser(), Fake()]
    protocol, down = h.accept()
    protocol.dataReceived(b"HELLO fake\r\n")
    assert counters(h) == {}
    assert protocol.route is not None and protocol.route.name == "default/echo#tcp[0]"
    h.close(protocol)
    assert h.records[0].hints == {"user": "sam", "protocol": "fake"}


def test_parse_errors_are_counted_per_protocol_and_the_next_inspector_asked() -> None:
    """
    A parser's error is ``tls_inspector.parse_error`` for TLS and
    ``<protocol>.parse_error`` for others; the next inspector still gets the
    bytes (planted: the error stops the inspection, every error counted too
    large, the TLS prefix for every protocol).
    """
    class Failing:
        name = "failing"

        def __init__(self, protocol: str, exc: Exception) -> None:
            self.protocol, self.exc = protocol, exc

        def parse(self, data: bytes) -> Any:
            raise self.exc

    h = Harness(MIXED)
    h.ctx.inspectors = [Failing("tls", HintParseError("bad")),
                        Failing("y", HintParseError("bad")), TlsHintParser()]
    protocol, down = h.accept()
    protocol.dataReceived(client_hello("a.example.test"))
    stats = h.ctx.stats
    assert stats.get("tls_inspector.parse_error", listener=KEY) == 1
    assert stats.get("y.parse_error", listener=KEY) == 1
    assert stats.get("tls_inspector.client_hello_too_large", listener=KEY) == 0
    assert protocol.route is not None and protocol.route.name == "default/a#tls[0]"


def test_crashing_inspector_is_logged_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    An inspector that raises is counted and logged with its name (``?``
    when it has none) and the next one decides (planted: the name or the
    message lost).
    """
    events: list[dict[str, Any]] = []
    observer: Any = events.append
    monkeypatch.setattr(inspect, "log", Logger(namespace="tsgate.proxy", observer=observer))

    class Crashing:
        def parse(self, data: bytes) -> Any:
            raise ZeroDivisionError()

    named = Crashing()
    named.name = "crash"  # type: ignore[attr-defined]
    h = Harness(MIXED)
    h.ctx.inspectors = [named, Crashing(), TlsHintParser()]
    protocol, down = h.accept()
    protocol.dataReceived(client_hello("a.example.test"))
    assert protocol.route is not None and protocol.route.name == "default/a#tls[0]"
    assert h.ctx.stats.get("plugin.crashed", plugin="crash") == 1
    assert h.ctx.stats.get("plugin.crashed", plugin="?") == 1
    assert [(e["log_format"], e["name"]) for e in events] == [
        ("inspector {name} crashed", "crash"), ("inspector {name} crashed", "?")]
    assert all(e["log_failure"].check(ZeroDivisionError) for e in events)


def test_a_second_starttls_request_lets_later_inspectors_decide() -> None:
    """
    Once STARTTLS was negotiated, another request is not answered; the
    inspectors after the negotiator are still asked (planted: ``break``).
    """
    class Anything:
        name = protocol = "anything"

        def parse(self, data: bytes) -> Hint:
            return Hint(protocol="anything", attributes={}, length=len(data))

    h = Harness(MIXED)
    h.ctx.inspectors = [TlsHintParser(), PostgresStartTlsNegotiator(), Anything()]
    protocol, down = h.accept()
    request = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
    protocol.dataReceived(request)
    assert written(down) == b"S"
    protocol.dataReceived(request)
    assert written(down) == b"S"
    assert protocol.hint is not None and protocol.hint.protocol == "anything"
    assert counters(h) == {}


def test_client_closed_during_inspection() -> None:
    """Counted per listener as Envoy's connection_closed, with the reason kept."""
    h = Harness(MIXED)
    protocol, down = h.accept()
    protocol.dataReceived(b"\x16\x03")
    protocol.readConnectionLost()
    assert counters(h) == {"connection_closed": 1}
    assert protocol.termination == "client closed during inspection"
    assert down.disconnecting and h.reactor.tcpClients == []


class Tagged:
    """A listener stage that reads ``<tag> <value>\\n`` and notes the value."""

    def __init__(self, tag: str, pass_on_timeout: Optional[bool] = None) -> None:
        self.name = tag
        self.tag = tag.encode()
        self.seen: list[str] = []
        self.timeouts = 0
        if pass_on_timeout is not None:
            self.timed_out = self._timed_out

    def feed(self, conn: Any, data: bytes) -> StageResult:
        end = data.find(b"\n")
        if end < 0:
            return NEED_MORE
        if not data.startswith(self.tag + b" "):
            return Ending(termination=f"no_{self.name}")
        self.seen.append(data[len(self.tag) + 1:end].decode())
        return end + 1

    def _timed_out(self, conn: Any) -> Optional[Ending]:
        self.timeouts += 1
        return None


def provide(*stages: Any) -> Any:
    return lambda listener: Stages(listener=stages)


def test_listener_stages_run_in_order_each_once() -> None:
    """
    Two listener stages: each reads its own header, in order, once; the
    rest is replayed upstream (planted: the stage index reset or skipped).
    """
    first, second = Tagged("A"), Tagged("B")
    h = Harness(TCP, [provide(first, second)])
    protocol, down = h.accept()
    protocol.dataReceived(b"A one\nB tw")
    assert h.reactor.tcpClients == []
    protocol.dataReceived(b"o\nA payload")
    assert (first.seen, second.seen) == (["one"], ["two"])
    upstream, up = h.connect_upstream()
    assert written(up) == b"A payload"


def test_deadline_asks_each_waiting_stage_in_turn() -> None:
    """
    At the deadline each stage still waiting decides in turn; both pass, so
    the TCP route serves the (server-first) client (planted: a stage skipped).
    """
    first, second = Tagged("A", pass_on_timeout=True), Tagged("B", pass_on_timeout=True)
    h = Harness(TCP, [provide(first, second)], inspect_timeout=5)
    protocol, down = h.accept()
    h.reactor.advance(5.2)
    assert (first.timeouts, second.timeouts) == (1, 1)
    assert protocol.state is CONNECTING and len(h.reactor.tcpClients) == 1
    assert h.ctx.stats.get("listener.downstream_pre_cx_timeout", listener=KEY) == 1


def test_deadline_ends_a_stage_that_cannot_decide() -> None:
    """A stage without ``timed_out`` ends the connection at the deadline, with the reason."""
    h = Harness(TCP, [provide(Tagged("A"))], inspect_timeout=5)
    protocol, down = h.accept()
    h.reactor.advance(5.2)
    assert down.disconnecting and h.reactor.tcpClients == []
    assert protocol.termination == "timed out before the listener stages finished"
    h.close(protocol)
    assert h.records[0].connection_termination_details == "listener_stage_timeout"


def test_tls_only_timeout_is_not_a_chain_miss() -> None:
    """On a TLS-only port, a silent client times out: NR, read_timeout, no chain-miss count."""
    h = Harness(TLS_ONLY, inspect_timeout=2)
    protocol, down = h.accept()
    h.reactor.advance(2.2)
    assert counters(h) == {"read_timeout": 1}
    assert h.ctx.stats.get("listener.no_filter_chain_match", listener=KEY) == 0


def test_a_parser_without_a_protocol_name_cannot_take_the_connection() -> None:
    """
    A third-party parser lacking IHintParser's ``protocol`` that raises a
    parse error: counted, and the next inspector decides (planted: reading
    ``protocol`` without a default, which raised out of ``dataReceived``).
    """
    class Nameless:
        name = "nameless"

        def parse(self, data: bytes) -> Any:
            raise HintParseError("bad")

    h = Harness(MIXED)
    h.ctx.inspectors = [Nameless(), TlsHintParser()]
    protocol, down = h.accept()
    protocol.dataReceived(client_hello("a.example.test"))
    assert protocol.route is not None and protocol.route.name == "default/a#tls[0]"
    assert sum(v for name, _, v in h.ctx.stats.iter_counters()
               if name.endswith(".parse_error")) == 1
