"""
Kafka wire protocol, sans-IO: request and response headers for every API
key, including the flexible (KIP-482) versions whose request header (v2)
ends in tagged fields.

A request is ``int32 size`` then the header. Which header version applies
depends on the API key *and* version: v0 (no client_id) only for
ControlledShutdown v0; v2 (client_id, then tagged fields) from the API's
first flexible version; v1 otherwise. Responses carry only the
correlation id (plus tagged fields in header v1, never for ApiVersions,
whose response header stays v0 so any client can read it).
:data:`API_KEYS` lists every API key of Kafka 4.1 with its first flexible
version; the 52 client-facing ones were checked against the Apache Kafka
message schemas bundled in kafka-python 3.0.12.

Limits: frames declaring more than :data:`MAX_FRAME_BYTES` are a decode
error; :class:`FrameSplitter` keeps at most a bounded prefix of each frame
and counts past the rest. Errors are :class:`KafkaDecodeError`.

The hint parser and the observer
--------------------------------

The hint parser (declared as the ``kafka`` plugin in
:mod:`tsgate.plugins.kafka`) reads client_id and the first API from a
connection's first request; the passive stream observer has Envoy
``kafka_broker``-like counters.

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

import struct
from typing import Callable, Optional

import attrs
from zope.interface import implementer

from tsgate.interfaces import (
    NEED_MORE,
    DecodeError,
    Emit,
    Hint,
    HintParseError,
    IHintParser,
    IStreamObserver,
    ITimedStreamObserverFactory,
    NotMine,
    Observe,
    ParseResult,
)

#: api_key -> (counter name, first flexible version or None if never flexible).
API_KEYS: dict[int, tuple[str, Optional[int]]] = {
    0: ("produce", 9),
    1: ("fetch", 12),
    2: ("list_offsets", 6),
    3: ("metadata", 9),
    4: ("leader_and_isr", 4),
    5: ("stop_replica", 2),
    6: ("update_metadata", 6),
    7: ("controlled_shutdown", 3),
    8: ("offset_commit", 8),
    9: ("offset_fetch", 6),
    10: ("find_coordinator", 3),
    11: ("join_group", 6),
    12: ("heartbeat", 4),
    13: ("leave_group", 4),
    14: ("sync_group", 4),
    15: ("describe_groups", 5),
    16: ("list_groups", 3),
    17: ("sasl_handshake", None),
    18: ("api_versions", 3),
    19: ("create_topics", 5),
    20: ("delete_topics", 4),
    21: ("delete_records", 2),
    22: ("init_producer_id", 2),
    23: ("offset_for_leader_epoch", 4),
    24: ("add_partitions_to_txn", 3),
    25: ("add_offsets_to_txn", 3),
    26: ("end_txn", 3),
    27: ("write_txn_markers", 1),
    28: ("txn_offset_commit", 3),
    29: ("describe_acls", 2),
    30: ("create_acls", 2),
    31: ("delete_acls", 2),
    32: ("describe_configs", 4),
    33: ("alter_configs", 2),
    34: ("alter_replica_log_dirs", 2),
    35: ("describe_log_dirs", 2),
    36: ("sasl_authenticate", 2),
    37: ("create_partitions", 2),
    38: ("create_delegation_token", 2),
    39: ("renew_delegation_token", 2),
    40: ("expire_delegation_token", 2),
    41: ("describe_delegation_token", 2),
    42: ("delete_groups", 2),
    43: ("elect_leaders", 2),
    44: ("incremental_alter_configs", 1),
    45: ("alter_partition_reassignments", 0),
    46: ("list_partition_reassignments", 0),
    47: ("offset_delete", None),
    48: ("describe_client_quotas", 1),
    49: ("alter_client_quotas", 1),
    50: ("describe_user_scram_credentials", 0),
    51: ("alter_user_scram_credentials", 0),
    52: ("vote", 0),
    53: ("begin_quorum_epoch", 1),  # v0 was not flexible (KIP-853 added v1)
    54: ("end_quorum_epoch", 1),
    55: ("describe_quorum", 0),
    56: ("alter_partition", 0),
    57: ("update_features", 0),
    58: ("envelope", 0),
    59: ("fetch_snapshot", 0),
    60: ("describe_cluster", 0),
    61: ("describe_producers", 0),
    62: ("broker_registration", 0),
    63: ("broker_heartbeat", 0),
    64: ("unregister_broker", 0),
    65: ("describe_transactions", 0),
    66: ("list_transactions", 0),
    67: ("allocate_producer_ids", 0),
    68: ("consumer_group_heartbeat", 0),
    69: ("consumer_group_describe", 0),
    70: ("controller_registration", 0),
    71: ("get_telemetry_subscriptions", 0),
    72: ("push_telemetry", 0),
    73: ("assign_replicas_to_dirs", 0),
    74: ("list_config_resources", 0),  # ListClientMetricsResources before 4.1
    75: ("describe_topic_partitions", 0),
    76: ("share_group_heartbeat", 0),
    77: ("share_group_describe", 0),
    78: ("share_fetch", 0),
    79: ("share_acknowledge", 0),
    80: ("add_raft_voter", 0),
    81: ("remove_raft_voter", 0),
    82: ("update_raft_voter", 0),
    83: ("initialize_share_group_state", 0),
    84: ("read_share_group_state", 0),
    85: ("write_share_group_state", 0),
    86: ("delete_share_group_state", 0),
    87: ("read_share_group_state_summary", 0),
    88: ("streams_group_heartbeat", 0),
    89: ("streams_group_describe", 0),
    90: ("describe_share_group_offsets", 0),
    91: ("alter_share_group_offsets", 0),
    92: ("delete_share_group_offsets", 0),
}

API_VERSIONS = 18
PRODUCE = 0
CONTROLLED_SHUTDOWN = 7
#: No API has reached version 20 yet (Fetch is at 17/18); anything above
#: this is not Kafka.
MAX_API_VERSION = 32
#: Kafka's default socket.request.max.bytes is 100 MiB; responses are
#: bounded by fetch.max.bytes. Larger declared sizes are not Kafka.
MAX_FRAME_BYTES = 1 << 30
MAX_ATTRIBUTE = 128

_SIZE = struct.Struct(">i")
_REQUEST = struct.Struct(">ihhi")  # size, api_key, api_version, correlation_id
_I16 = struct.Struct(">h")


class KafkaDecodeError(DecodeError):
    """The bytes are not a well-formed Kafka frame."""


def api_name(api_key: int) -> str:
    entry = API_KEYS.get(api_key)
    return entry[0] if entry else "unknown"


def request_header_version(api_key: int, api_version: int) -> int:
    """0, 1 or 2: which request header layout the (key, version) uses."""
    if api_key == CONTROLLED_SHUTDOWN and api_version == 0:
        return 0
    entry = API_KEYS.get(api_key)
    flexible = entry[1] if entry else None
    return 2 if flexible is not None and api_version >= flexible else 1


def response_header_version(api_key: int, api_version: int) -> int:
    """0 or 1; ApiVersions answers with header v0 even when flexible."""
    if api_key == API_VERSIONS:
        return 0
    return 1 if request_header_version(api_key, api_version) == 2 else 0


@attrs.frozen
class RequestHeader:
    """
    A decoded request header. ``body_offset`` is where the body starts
    (from the first byte of the size field), None when the header runs past
    the bytes we have; ``client_id`` is then what fitted.
    """

    size: int
    api_key: int
    api_version: int
    correlation_id: int
    client_id: Optional[str]
    header_version: int
    body_offset: Optional[int]

    @property
    def api_name(self) -> str:
        return api_name(self.api_key)


def _uvarint(buf: bytes, pos: int, limit: int) -> tuple[int, int]:
    """An unsigned varint at ``pos``; raises IndexError if it runs past ``limit``."""
    value = shift = 0
    while True:
        if pos >= limit:
            raise IndexError("varint runs past the data")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise KafkaDecodeError("varint longer than 5 bytes")


def skip_tagged_fields(buf: bytes, pos: int, limit: int) -> int:
    """Step over a tagged-field section; IndexError if it runs past ``limit``."""
    count, pos = _uvarint(buf, pos, limit)
    for _ in range(count):
        _tag, pos = _uvarint(buf, pos, limit)
        size, pos = _uvarint(buf, pos, limit)
        pos += size
        if pos > limit:
            raise IndexError("tagged field runs past the data")
    return pos


def parse_request_header(buf: bytes) -> RequestHeader:
    """
    Decode a request header from a frame prefix (size field included). At
    least 12 bytes are needed; a header cut by the end of ``buf`` is
    returned with ``body_offset`` None.
    """
    if len(buf) < 12:
        raise KafkaDecodeError("short request header")
    size, api_key, api_version, correlation_id = _REQUEST.unpack_from(buf, 0)
    if size < 8 or size > MAX_FRAME_BYTES:
        raise KafkaDecodeError(f"request size {size}")
    if api_key < 0 or not 0 <= api_version <= MAX_API_VERSION:
        raise KafkaDecodeError(f"api key {api_key} version {api_version}")
    end = min(len(buf), 4 + size)
    version = request_header_version(api_key, api_version)
    if version == 0:
        return RequestHeader(size, api_key, api_version, correlation_id, None, 0, 12)
    if end < 14:
        if 4 + size < 14:
            raise KafkaDecodeError("request too short for a client_id")
        return RequestHeader(size, api_key, api_version, correlation_id, None, version, None)
    (length,) = _I16.unpack_from(buf, 12)
    if length < -1 or 14 + max(length, 0) > 4 + size:
        raise KafkaDecodeError(f"client_id length {length}")
    client_id = None
    pos = 14
    if length >= 0:
        client_id = buf[14 : min(14 + length, end)].decode("utf-8", "replace")
        pos = 14 + length
    if pos > end:
        return RequestHeader(size, api_key, api_version, correlation_id, client_id, version, None)
    offset: Optional[int] = pos
    if version == 2:
        try:
            offset = skip_tagged_fields(buf, pos, end)
        except IndexError:
            if end == 4 + size:  # the whole frame is here: it is malformed
                raise KafkaDecodeError("request header tagged fields overrun") from None
            offset = None
    return RequestHeader(size, api_key, api_version, correlation_id, client_id, version, offset)


def _compact_string(buf: bytes, pos: int, limit: int) -> tuple[Optional[str], int]:
    n, pos = _uvarint(buf, pos, limit)
    if n == 0:
        return None, pos
    if pos + n - 1 > limit:
        raise IndexError("compact string runs past the data")
    return buf[pos : pos + n - 1].decode("utf-8", "replace"), pos + n - 1


def api_versions_software(buf: bytes, header: RequestHeader) -> dict[str, str]:
    """ApiVersions v3+ names the client software; {} if absent or cut."""
    if header.api_key != API_VERSIONS or header.api_version < 3 or header.body_offset is None:
        return {}
    end = min(len(buf), 4 + header.size)
    try:
        name, pos = _compact_string(buf, header.body_offset, end)
        version, _pos = _compact_string(buf, pos, end)
    except (IndexError, KafkaDecodeError):  # the body is not ours to judge
        return {}
    out = {}
    if name:
        out["client_software_name"] = name[:MAX_ATTRIBUTE]
    if version:
        out["client_software_version"] = version[:MAX_ATTRIBUTE]
    return out


def produce_acks(buf: bytes, header: RequestHeader) -> Optional[int]:
    """A Produce request's ``acks`` (0 means no response will come), if visible."""
    if header.api_key != PRODUCE or header.body_offset is None:
        return None
    end = min(len(buf), 4 + header.size)
    pos = header.body_offset
    try:
        if header.api_version >= 3:  # transactional_id first
            if header.header_version == 2:
                n, pos = _uvarint(buf, pos, end)
                pos += max(n - 1, 0)
            else:
                if pos + 2 > end:
                    return None
                (n,) = _I16.unpack_from(buf, pos)
                pos += 2 + max(n, 0)
        if pos + 2 > end:
            return None
        return int(_I16.unpack_from(buf, pos)[0])
    except (IndexError, KafkaDecodeError):
        return None


def response_correlation_id(buf: bytes) -> int:
    """The correlation id of a response frame prefix (at least 8 bytes)."""
    if len(buf) < 8:
        raise KafkaDecodeError("short response header")
    size, correlation_id = struct.unpack_from(">ii", buf, 0)
    if size < 4 or size > MAX_FRAME_BYTES:
        raise KafkaDecodeError(f"response size {size}")
    return int(correlation_id)


class FrameSplitter:
    """
    Splits one direction into ``int32 size``-prefixed frames, keeping at
    most ``keep`` bytes of each (size field included) and counting past the
    rest; ``feed`` returns the kept prefixes of frames whose prefix is
    complete. A negative or huge size raises :class:`KafkaDecodeError`.
    """

    def __init__(self, keep: int, min_size: int) -> None:
        self._keep_max = keep
        self._min = min_size
        self._buf = bytearray()
        self._length = 0
        self._keep = 0
        self._skip = 0

    def _size(self, buf: bytes, pos: int) -> int:
        (size,) = _SIZE.unpack_from(buf, pos)
        if size < self._min or size > MAX_FRAME_BYTES:
            raise KafkaDecodeError(f"frame size {size}")
        return int(size) + 4

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos, n = 0, len(data)
        buf = self._buf
        while pos < n:
            if self._skip:
                k = min(self._skip, n - pos)
                self._skip -= k
                pos += k
                continue
            if not buf and n - pos >= 4:
                length = self._size(data, pos)
                keep = min(length, self._keep_max)
                if n - pos >= keep:  # fast path: the prefix is all here
                    out.append(data[pos : pos + keep])
                    pos += keep
                    self._skip = length - keep
                    continue
            if len(buf) < 4:
                k = min(4 - len(buf), n - pos)
                buf += data[pos : pos + k]
                pos += k
                if len(buf) < 4:
                    break
                self._length = self._size(bytes(buf), 0)
                self._keep = min(self._length, self._keep_max)
            k = min(self._keep - len(buf), n - pos)
            buf += data[pos : pos + k]
            pos += k
            if len(buf) == self._keep:
                out.append(bytes(buf))
                buf.clear()
                self._skip = self._length - self._keep
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


#: How much of a request the hint parser and the observer keep: the fixed
#: header, a client_id of up to ~900 bytes, tagged fields and the start of
#: the body (ApiVersions' software name, Produce's acks).
REQUEST_PREFIX_BYTES = 1024
RESPONSE_PREFIX_BYTES = 8


def parse_hint(data: bytes, max_bytes: int = REQUEST_PREFIX_BYTES) -> ParseResult:
    """
    The ``kafka`` hint from a connection's first request (usually
    ApiVersions): client_id, api_key (its name), api_version, and for
    ApiVersions v3+ the client software name and version. The fixed header
    fields decide NotMine (a size, key or version Kafka never sends); a
    plausible header whose flexible parts are malformed raises
    HintParseError.
    """
    if len(data) >= 4:
        (size,) = _SIZE.unpack_from(data, 0)
        if size < 10 or size > 100 * 1024 * 1024:
            return NotMine(f"request size {size}")
    if len(data) < 8:
        return NEED_MORE
    _size, api_key, api_version = struct.unpack_from(">ihh", data, 0)
    if api_key not in API_KEYS or not 0 <= api_version <= MAX_API_VERSION:
        return NotMine(f"api key {api_key} version {api_version}")
    if len(data) >= 14 and request_header_version(api_key, api_version) != 0:
        (length,) = _I16.unpack_from(data, 12)
        if length < -1 or 10 + max(length, 0) > size:
            return NotMine(f"client_id length {length}")
    need = min(4 + size, max_bytes)
    if len(data) < need:
        return NEED_MORE
    prefix = bytes(data[:need])
    try:
        header = parse_request_header(prefix)
    except KafkaDecodeError as e:
        raise HintParseError(f"kafka: {e}") from None
    attributes = {"api_key": header.api_name, "api_version": str(header.api_version)}
    if header.client_id is not None:
        attributes["client_id"] = header.client_id[:MAX_ATTRIBUTE]
    attributes.update(api_versions_software(prefix, header))
    return Hint("kafka", attributes, length=4 + size)


# --- the passive observer and the plugin objects' classes (declared in tsgate.plugins.kafka)

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
        self._requests = FrameSplitter(REQUEST_PREFIX_BYTES, min_size=8)
        self._responses = FrameSplitter(RESPONSE_PREFIX_BYTES, min_size=4)
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
        except KafkaDecodeError:
            self._fail()

    def server_data(self, data: bytes) -> None:
        if self._dead:
            return
        try:
            frames = self._responses.feed(data)
            now = self._clock() if self._clock is not None and frames else None
            for prefix in frames:
                self._response(response_correlation_id(prefix), now)
        except KafkaDecodeError:
            self._fail()

    def attributes(self) -> dict[str, str]:
        return dict(self._attributes)

    def _fail(self) -> None:
        self._dead = True
        self._emit("decode_error", 1)
        self._requests = FrameSplitter(0, 8)
        self._responses = FrameSplitter(0, 4)
        self._outstanding.clear()

    def _request(self, prefix: bytes, now: Optional[float]) -> None:
        header = parse_request_header(prefix)
        name = header.api_name
        self._emit(f"request.{name}", 1)
        if self._first:
            self._first = False
            if header.client_id is not None:
                self._attributes["client_id"] = header.client_id[: MAX_ATTRIBUTE]
        if header.api_key == API_VERSIONS:
            self._attributes.update(api_versions_software(prefix, header))
        if header.api_key == PRODUCE and produce_acks(prefix, header) == 0:
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


@implementer(ITimedStreamObserverFactory)
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


@implementer(IHintParser)
class KafkaHintParser:
    """Hint parser: a first Kafka request gives client_id, api_key, api_version."""

    name = "kafka"
    protocol = "kafka"
    max_bytes = REQUEST_PREFIX_BYTES

    def parse(self, data: bytes) -> ParseResult:
        return parse_hint(data, self.max_bytes)
