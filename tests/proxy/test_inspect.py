"""
The inspection stage and the parser contract: each inspector is given at most
its own ``max_bytes``; too large (``HintTooLarge``, or undecided at
``max_bytes``) closes the connection and counts ``<name>.too_large``.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import attrs

from tests.support.proxy import Harness, route
from tsgate.hints.tls import TlsHintParser
from tsgate.interfaces import NEED_MORE, Hint, HintTooLarge, NeedMore, NotMine
from tsgate.proxy.context import FALLBACK_MAX_BYTES, ListenerRuntime, max_bytes
from tsgate.proxy.state import CLOSED
from tsgate.routing import Listener, Route, SniChain

LISTENER = "0.0.0.0_31400"
MIXED = Listener(bind="0.0.0.0", port=31400, tcp_route=route(),
                 tls_chains=(SniChain(("a.example.test",), route("default/a#tls[0]")),))
TCP = Listener(bind="0.0.0.0", port=31400, tcp_route=route())
#: a handshake record announcing a ClientHello of 60,000 bytes
BIG_HELLO = b"\x16\x03\x01\x3f\xff\x01\x00\xea\x60"


@attrs.define
class Greedy:
    """A parser for ``GREEDY...`` that never decides (breaking the contract)."""

    name: str = "greedy"
    protocol: str = "greedy"
    max_bytes: Any = 16
    seen: list[int] = attrs.field(factory=list)

    def parse(self, data: bytes) -> Union[NeedMore, NotMine]:
        self.seen.append(len(data))
        if data.startswith(b"GREEDY") or b"GREEDY".startswith(data):
            return NEED_MORE
        return NotMine("not greedy")


@attrs.define
class Sized:
    """A parser for ``SIZED`` messages that says when one cannot fit."""

    name: str = "sized"
    protocol: str = "sized"
    max_bytes: int = 32

    def parse(self, data: bytes) -> Union[NeedMore, NotMine, Hint]:
        if not data.startswith(b"SIZED"):
            return NotMine()
        raise HintTooLarge("a SIZED message over 32 bytes")


@attrs.define
class Echo:
    """Recognises anything starting with ``SIZED`` (to show a later parser still decides)."""

    name: str = "echo"
    protocol: str = "echo"
    max_bytes: int = 64

    def parse(self, data: bytes) -> Union[NeedMore, NotMine, Hint]:
        if len(data) < 8:
            return NEED_MORE
        return Hint("echo", {}, len(data))


def harness(*inspectors: Any) -> Harness:
    h = Harness(MIXED)
    h.ctx.inspectors = [TlsHintParser(), *inspectors]
    return h


def routed(protocol: Any) -> str:
    route: Optional[Route] = protocol.route
    assert route is not None
    return route.name


def count(h: Harness, name: str) -> int:
    return int(h.ctx.stats.get(name, listener=LISTENER))


def test_each_inspector_with_its_max_bytes_once_per_listener() -> None:
    greedy = Greedy()
    h = harness(greedy)
    runtime = h.ctx.runtime(MIXED)
    assert isinstance(runtime, ListenerRuntime)
    assert [(type(i).__name__, n) for i, n in runtime.inspectors] == \
        [("TlsHintParser", 16384), ("Greedy", 16)]
    assert h.ctx.runtime(TCP).inspectors == ()  # a listener that does not inspect


def test_an_unusable_max_bytes_falls_back() -> None:
    for bad in (None, 0, -5, "16", True, 1.5):
        assert max_bytes(Greedy(max_bytes=bad)) == FALLBACK_MAX_BYTES
    assert max_bytes(Greedy(max_bytes=7)) == 7


def test_oversized_client_hello_closes_and_is_counted() -> None:
    """As Envoy's tls_inspector: client_hello_too_large, connection closed, no upstream."""
    h = harness()
    protocol, down = h.accept()
    protocol.dataReceived(BIG_HELLO)
    assert down.disconnecting
    assert h.reactor.tcpClients == []
    assert protocol.route is None
    assert count(h, "tls_inspector.client_hello_too_large") == 1
    assert count(h, "tls_inspector.tls_not_found") == 0
    h.close(protocol)
    assert protocol.state is CLOSED
    assert h.reactor.getDelayedCalls() == []  # the inspection deadline is gone
    record = h.records[0]
    assert record.connection_termination_details == "tls_inspector_client_hello_too_large"
    assert record.response_flags == "-"


def test_a_parser_is_never_given_more_than_its_max_bytes() -> None:
    greedy = Greedy()
    h = harness(greedy)
    protocol, down = h.accept()
    protocol.dataReceived(b"GREE")
    protocol.dataReceived(b"DY" + b"x" * 5)
    assert not down.disconnecting  # 11 bytes: under greedy's 16
    protocol.dataReceived(b"y" * 100)
    assert greedy.seen == [4, 11, 16]
    assert down.disconnecting
    assert count(h, "greedy.too_large") == 1
    assert count(h, "tls_inspector.tls_not_found") == 0
    assert h.reactor.tcpClients == []
    h.close(protocol)
    assert h.records[0].connection_termination_details == "greedy_too_large"


def test_exactly_max_bytes_undecided_is_too_large() -> None:
    h = harness(Greedy())
    protocol, down = h.accept()
    protocol.dataReceived(b"GREEDY" + b"z" * 9)  # 15: still waiting
    assert not down.disconnecting
    protocol.dataReceived(b"z")  # 16
    assert down.disconnecting
    assert count(h, "greedy.too_large") == 1


def test_hint_too_large_from_a_plugin_counts_its_name() -> None:
    h = harness(Sized())
    protocol, down = h.accept()
    protocol.dataReceived(b"SIZED message")
    assert down.disconnecting
    assert count(h, "sized.too_large") == 1
    assert count(h, "sized.parse_error") == 0


def test_a_later_inspector_that_recognises_the_bytes_still_wins() -> None:
    h = harness(Sized(), Echo())
    protocol, down = h.accept()
    protocol.dataReceived(b"SIZE")  # sized: NotMine yet; echo needs 8
    protocol.dataReceived(b"D message")
    assert not down.disconnecting
    assert routed(protocol) == "default/echo#tcp[0]"  # no SNI: the fallback
    assert count(h, "sized.too_large") == 0


def test_too_large_waits_while_another_inspector_needs_more() -> None:
    class Slow(Echo):
        """Decides at 40 bytes."""

        def parse(self, data: bytes) -> Union[NeedMore, NotMine]:
            return NEED_MORE if len(data) < 40 else NotMine("not slow")

    h = harness(Greedy(), Slow(name="slow"))
    protocol, down = h.accept()
    protocol.dataReceived(b"GREEDY" + b"x" * 20)  # greedy too large, slow undecided
    assert not down.disconnecting
    assert count(h, "greedy.too_large") == 0
    protocol.dataReceived(b"x" * 20)  # slow: not mine
    assert down.disconnecting
    assert count(h, "greedy.too_large") == 1
    assert count(h, "slow.too_large") == 0


def test_malformed_is_not_too_large() -> None:
    """A malformed hello is still handled as not TLS (the fallback), as before."""
    h = harness()
    protocol, down = h.accept()
    protocol.dataReceived(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00")  # not a ClientHello
    assert not down.disconnecting
    assert routed(protocol) == "default/echo#tcp[0]"
    assert count(h, "tls_inspector.client_hello_too_large") == 0


def test_too_large_says_why_in_words() -> None:
    """
    The connection's ``termination`` (admin, error lines) names the counter
    (mutants of ``_too_large``: ``why=None`` or no ``why``, which leave "-").
    """
    h = harness()
    protocol, down = h.accept()
    protocol.dataReceived(BIG_HELLO)
    assert protocol.termination == \
        "first bytes too large to inspect (tls_inspector.client_hello_too_large)"


class Bare:
    """A parser with neither ``name`` nor ``protocol`` that never decides."""

    max_bytes = 16

    def parse(self, data: bytes) -> NeedMore:
        return NEED_MORE


def test_too_large_from_an_inspector_without_name_or_protocol() -> None:
    """
    A plugin that leaves out ``name`` and ``protocol`` is too large as ``?``,
    as a crashed one is named (mutants of ``_too_large``: ``getattr`` with no
    default raises; the defaults ``None``/``"XX?XX"`` rename the counter).
    """
    h = harness(Bare())
    protocol, down = h.accept()
    protocol.dataReceived(b"x" * 16)
    assert down.disconnecting
    assert count(h, "?.too_large") == 1
    h.close(protocol)
    assert h.records[0].connection_termination_details == "?_too_large"


def test_a_max_bytes_of_one_is_usable() -> None:
    """The smallest positive ``max_bytes`` is kept (mutant of ``max_bytes``: ``value > 1``)."""
    assert max_bytes(Greedy(max_bytes=1)) == 1
