"""
The built-in ``kafka`` plugins: a hint parser (client_id and the first
API from a connection's first request) and a passive stream observer with
Envoy ``kafka_broker``-like counters.

Istio has no KAFKA port protocol, so the observer is chosen only by the
port-name prefix ``kafka-`` (``kafka-brokers``), never by ``port.protocol``.

Counters (the data path prefixes ``kafka.``):

- ``request.<api>`` per request (``request.produce``, ``request.api_versions``;
  names from :data:`tsgate.hints.kafka.API_KEYS`), ``request.unknown`` for
  an API key we do not know (still relayed, still timed);
- ``response.<api>`` per response matched to its request by correlation id,
  ``response.unknown`` for one matching no request we saw (or answering a
  ``request.unknown``);
- ``outstanding_overflow`` (a request forgotten because too many were
  waiting), ``decode_error`` (once; then quiet).

Histogram (timed observers only): ``response.<api>_duration``, seconds
from the request's bytes reaching the gateway to the response's (Envoy's
name, in seconds rather than milliseconds like the rest of tsgate).

Produce requests with ``acks=0`` get no response, so they are not
remembered; anything else waits in a table of at most
:data:`MAX_OUTSTANDING` entries (oldest forgotten first).
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.plugin import IPlugin
from zope.interface import implementer

from tsgate.hints import kafka as wire
from tsgate.interfaces import (
    Emit,
    IHintParser,
    IStreamObserver,
    ITimedStreamObserverFactory,
    Observe,
    ParseResult,
)

#: Kafka clients pipeline up to max.in.flight.requests (default 5) per
#: connection; 1024 leaves room for odd clients and stays small.
MAX_OUTSTANDING = 1024


@implementer(IStreamObserver)
class KafkaObserver:
    """One connection's passive Kafka decoder (see the module docstring)."""

    def __init__(
        self,
        emit: Emit,
        observe: Optional[Observe] = None,
        clock: Optional[Callable[[], float]] = None,
    ) -> None:
        self._emit = emit
        self._observe = observe
        self._clock = clock
        self._requests = wire.FrameSplitter(wire.REQUEST_PREFIX_BYTES, min_size=8)
        self._responses = wire.FrameSplitter(wire.RESPONSE_PREFIX_BYTES, min_size=4)
        # correlation_id -> (api name, time or None)
        self._outstanding: dict[int, tuple[str, Optional[float]]] = {}
        self._attributes: dict[str, str] = {}
        self._first = True
        self._dead = False

    def client_data(self, data: bytes) -> None:
        if self._dead:
            return
        try:
            frames = self._requests.feed(data)
            now = self._clock() if self._clock is not None and frames else None
            for prefix in frames:
                self._request(prefix, now)
        except wire.KafkaDecodeError:
            self._fail()

    def server_data(self, data: bytes) -> None:
        if self._dead:
            return
        try:
            frames = self._responses.feed(data)
            now = self._clock() if self._clock is not None and frames else None
            for prefix in frames:
                self._response(wire.response_correlation_id(prefix), now)
        except wire.KafkaDecodeError:
            self._fail()

    def attributes(self) -> dict[str, str]:
        return dict(self._attributes)

    def _fail(self) -> None:
        self._dead = True
        self._emit("decode_error", 1)
        self._requests = wire.FrameSplitter(0, 8)
        self._responses = wire.FrameSplitter(0, 4)
        self._outstanding.clear()

    def _request(self, prefix: bytes, now: Optional[float]) -> None:
        header = wire.parse_request_header(prefix)
        name = header.api_name
        self._emit(f"request.{name}", 1)
        if self._first:
            self._first = False
            if header.client_id is not None:
                self._attributes["client_id"] = header.client_id[: wire.MAX_ATTRIBUTE]
        if header.api_key == wire.API_VERSIONS:
            self._attributes.update(wire.api_versions_software(prefix, header))
        if header.api_key == wire.PRODUCE and wire.produce_acks(prefix, header) == 0:
            return  # acks=0: the broker never answers
        table = self._outstanding
        if header.correlation_id not in table and len(table) >= MAX_OUTSTANDING:
            del table[next(iter(table))]
            self._emit("outstanding_overflow", 1)
        table[header.correlation_id] = (name, now)

    def _response(self, correlation_id: int, now: Optional[float]) -> None:
        entry = self._outstanding.pop(correlation_id, None)
        if entry is None:
            self._emit("response.unknown", 1)
            return
        name, started = entry
        self._emit(f"response.{name}", 1)
        if started is not None and now is not None and self._observe is not None:
            self._observe(f"response.{name}_duration", max(0.0, now - started))


@implementer(IPlugin, ITimedStreamObserverFactory)
class KafkaObserverFactory:
    """Observer plugin for Gateway ports named ``kafka-*``."""

    name = "kafka"
    protocol = "kafka"
    istio_protocols: tuple[str, ...] = ()  # Istio has no KAFKA protocol
    port_name_prefixes = ("kafka",)

    def new_observer(self, emit: Emit) -> IStreamObserver:
        return KafkaObserver(emit)

    def new_timed_observer(
        self, emit: Emit, observe: Observe, clock: Callable[[], float]
    ) -> IStreamObserver:
        return KafkaObserver(emit, observe, clock)


@implementer(IPlugin, IHintParser)
class KafkaHintParser:
    """Hint parser: a first Kafka request gives client_id, api_key, api_version."""

    name = "kafka"
    protocol = "kafka"
    max_bytes = wire.REQUEST_PREFIX_BYTES

    def parse(self, data: bytes) -> ParseResult:
        return wire.parse_hint(data, self.max_bytes)


kafka_hint_parser = KafkaHintParser()
kafka_observer_factory = KafkaObserverFactory()
