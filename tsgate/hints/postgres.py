"""
PostgreSQL wire protocol (v3), client-first messages and a passive observer.

A PostgreSQL connection starts with one *untyped* client message,
``length (int32, counting itself) | code (int32) | body``:

- ``SSLRequest`` (code 80877103, 8 bytes): the client asks for TLS; the
  server answers one byte, ``S`` (a TLS handshake follows) or ``N``;
- ``GSSENCRequest`` (80877104, 8 bytes): the same for GSSAPI encryption;
- ``CancelRequest`` (80877102, 16 bytes): process id and secret key, on a
  connection of its own;
- ``StartupMessage`` (protocol 3.x, ``major << 16 | minor``): NUL-terminated
  ``name, value`` pairs (user, database, application_name, options ...)
  ending with an empty name. The server caps it at 10000 bytes
  (``MAX_STARTUP_PACKET_LENGTH``), and so do we.

After that every message in either direction is *typed*: ``type (1 byte) |
length (int32, counting itself, not the type) | body``.

STARTTLS passthrough uses :class:`PostgresStartTlsNegotiator`: the gateway
answers the client's SSLRequest with ``S`` itself, reads the ClientHello
that follows and routes it by SNI, then replays an SSLRequest to the chosen
server, which must answer ``S``. A PostgreSQL 17 client with
``sslnegotiation=direct`` skips the SSLRequest and sends a ClientHello with
ALPN ``postgresql`` at once: that is plain TLS and needs nothing from here.
GSSAPI encryption cannot be passed through by SNI (there is no ClientHello),
so a GSSENCRequest is not a preamble; libpq only sends one when it holds a
Kerberos ticket, and falls back to SSLRequest when answered ``N``.
"""

from __future__ import annotations

import collections
import struct
from typing import Callable, Optional, Union

import attrs
from zope.interface import implementer

from tsgate.hints.stream import ByteQueue, ObserverBase, bounded_name
from tsgate.interfaces import (
    NEED_MORE,
    DecodeError,
    Emit,
    Hint,
    HintParseError,
    IHintParser,
    IPreambleNegotiator,
    IStreamObserver,
    ITimedStreamObserverFactory,
    NeedMore,
    NotMine,
    Observe,
    Preamble,
)


class PostgresDecodeError(DecodeError):
    """The bytes are not a well-formed PostgreSQL message; the observer goes quiet."""

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
#: The server's own cap on the first message (src/include/libpq/pqcomm.h).
MAX_STARTUP_PACKET_LENGTH = 10000

#: Bytes a StartupMessage body may hold: NUL separators, tab/CR/LF and
#: everything from space up (UTF-8 included); other control bytes mean binary.
_TEXT_BYTES = bytes([0, 9, 10, 13, *range(32, 256)])

#: Startup parameters copied to hints, under tsgate's well-known keys.
_HINT_KEYS = {"user": "user", "database": "database", "application_name": "app_name"}


@attrs.frozen
class StartupPacket:
    """The first client message, decoded."""

    kind: str  # "ssl", "gssenc", "cancel" or "startup"
    length: int
    version: str = ""
    parameters: tuple[tuple[str, str], ...] = ()
    process_id: int = 0


def parse_startup(data: bytes) -> Union[NeedMore, NotMine, StartupPacket]:
    """
    Decode the untyped first message from the start of ``data``.

    Cheap rejection first: every valid first message is shorter than 64 KiB,
    so its length starts with two zero bytes, which no TLS record (0x16),
    HTTP request or RESP command does. Raises only HintParseError, for a
    message that has PostgreSQL's shape but is malformed.
    """
    if data[:1] not in (b"", b"\x00") or data[1:2] not in (b"", b"\x00"):
        return NotMine("first bytes are not a PostgreSQL message length")
    if len(data) < 8:
        if len(data) >= 4:
            (length,) = struct.unpack_from(">i", data)
            if not 8 <= length <= MAX_STARTUP_PACKET_LENGTH:
                return NotMine("length out of range for a PostgreSQL first message")
        return NEED_MORE
    length, code = struct.unpack_from(">ii", data)
    if not 8 <= length <= MAX_STARTUP_PACKET_LENGTH:
        return NotMine("length out of range for a PostgreSQL first message")
    if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
        if length != 8:
            raise HintParseError(f"PostgreSQL request code {code} with length {length}, not 8")
        return StartupPacket(kind="ssl" if code == SSL_REQUEST_CODE else "gssenc", length=8)
    if code == CANCEL_REQUEST_CODE:
        if length != 16:
            raise HintParseError(f"PostgreSQL CancelRequest with length {length}, not 16")
        if len(data) < 16:
            return NEED_MORE
        # The secret key (bytes 12..16) is a credential: never kept.
        (pid,) = struct.unpack_from(">i", data, 8)
        return StartupPacket(kind="cancel", length=16, process_id=pid)
    major, minor = code >> 16, code & 0xFFFF
    if major != 3:
        return NotMine(f"not PostgreSQL protocol 3 (code {code})")
    if len(data) < length:
        return NEED_MORE
    body = bytes(data[8:length])
    if body.translate(None, _TEXT_BYTES):
        # Control bytes: binary, not name/value text. A Kafka Metadata
        # request (api_key 3) has the same first 8 bytes as a v3 startup.
        return NotMine("binary data where StartupMessage parameters would be")
    return StartupPacket(
        kind="startup",
        length=length,
        version=f"{major}.{minor}",
        parameters=_parameters(body),
    )


def _parameters(body: bytes) -> tuple[tuple[str, str], ...]:
    if not body.endswith(b"\x00"):
        raise HintParseError("PostgreSQL StartupMessage does not end with NUL")
    inner = body[:-1]  # the pairs, each NUL-terminated, then the final NUL
    if not inner:
        return ()
    if not inner.endswith(b"\x00"):
        raise HintParseError("PostgreSQL StartupMessage parameter is not NUL-terminated")
    fields = inner[:-1].split(b"\x00")
    if len(fields) % 2:
        raise HintParseError("PostgreSQL StartupMessage has a name without a value")
    try:
        texts = [f.decode("utf-8") for f in fields]
    except UnicodeDecodeError:
        raise HintParseError("PostgreSQL StartupMessage parameter is not UTF-8") from None
    pairs = tuple(zip(texts[::2], texts[1::2]))
    if any(not name for name, _ in pairs):
        raise HintParseError("PostgreSQL StartupMessage has an empty parameter name")
    return pairs


def startup_attributes(packet: StartupPacket) -> dict[str, str]:
    """Hint/access-log attributes: ``request`` and, for a startup, who and where."""
    attributes = {"request": packet.kind}
    if packet.kind == "startup":
        attributes["version"] = packet.version
        for name, value in packet.parameters:
            key = _HINT_KEYS.get(name)
            if key is not None:
                attributes[key] = value[:128]
        # As the server does: no database named means the user's name.
        if "database" not in attributes and "user" in attributes:
            attributes["database"] = attributes["user"]
    elif packet.kind == "cancel":
        attributes["process_id"] = str(packet.process_id)
    return attributes


@implementer(IHintParser)
class PostgresHintParser:
    """
    The ``postgres`` hint parser: which of the four first messages the
    client sent and, for a StartupMessage, its user, database and
    application name (``Hint.length`` is the message's length).
    """

    name = "postgres"
    protocol = "postgres"
    max_bytes = MAX_STARTUP_PACKET_LENGTH

    def parse(self, data: bytes) -> Union[NeedMore, NotMine, Hint]:
        result = parse_startup(data)
        if not isinstance(result, StartupPacket):
            return result
        return Hint(
            protocol="postgres", attributes=startup_attributes(result), length=result.length
        )


@implementer(IPreambleNegotiator)
class PostgresStartTlsNegotiator:
    """
    PostgreSQL's STARTTLS: an SSLRequest is answered ``S`` by the gateway,
    and replayed to the upstream, which must answer ``S`` too.
    """

    name = "postgres-starttls"
    protocol = "postgres"
    max_bytes = 8

    def parse(self, data: bytes) -> Union[NeedMore, NotMine, Preamble]:
        head = bytes(data[:8])
        if len(head) < 8:
            # Let parse_startup reject early (it never needs more than 8 here).
            early = parse_startup(head)
            return early if isinstance(early, NotMine) else NEED_MORE
        length, code = struct.unpack(">ii", head)
        if code != SSL_REQUEST_CODE:
            return NotMine("not a PostgreSQL SSLRequest")
        if length != 8:
            raise HintParseError(f"PostgreSQL SSLRequest with length {length}, not 8")
        return Preamble(
            protocol="postgres",
            length=8,
            client_reply=b"S",
            upstream_request=head,
            upstream_reply=b"S",
            attributes={"request": "ssl"},
        )


# -- the observer -----------------------------------------------------------

#: Message types by direction (PostgreSQL docs, "Message Formats").
FRONTEND_TYPES = {
    "B": "bind", "C": "close", "d": "copy_data", "c": "copy_done", "f": "copy_fail",
    "D": "describe", "E": "execute", "H": "flush", "F": "function_call", "P": "parse",
    "p": "password", "Q": "query", "S": "sync", "X": "terminate",
}
BACKEND_TYPES = {
    "R": "authentication", "K": "backend_key_data", "2": "bind_complete",
    "3": "close_complete", "C": "command_complete", "d": "copy_data", "c": "copy_done",
    "G": "copy_in_response", "H": "copy_out_response", "W": "copy_both_response",
    "D": "data_row", "I": "empty_query_response", "E": "error_response",
    "V": "function_call_response", "v": "negotiate_protocol_version", "n": "no_data",
    "N": "notice_response", "A": "notification_response", "t": "parameter_description",
    "S": "parameter_status", "1": "parse_complete", "s": "portal_suspended",
    "Z": "ready_for_query", "T": "row_description",
}
#: Most of a message body the observer keeps: an ErrorResponse's severity
#: and SQLSTATE come first in practice; nothing else is read from bodies.
BODY_PREFIX = 1024
#: Largest typed message we accept before calling the stream garbage (the
#: server's own limit for most messages is 1 GiB, PQ_LARGE_MESSAGE_LIMIT).
MAX_MESSAGE = 1 << 30
_SEVERITIES = {"error", "fatal", "panic"}
#: Requests timed (Query, Sync, FunctionCall) and their answer (ReadyForQuery).
_TIMED = {"frontend": frozenset(b"QSF"), "backend": frozenset(b"Z")}
#: Requests awaiting their ReadyForQuery that we remember per connection.
MAX_PENDING = 1024
#: What of a CommandComplete tag we read: its first word is at most 8 bytes.
TAG_PREFIX = 32
_STATEMENTS = {
    b"SELECT": "statements_select", b"INSERT": "statements_insert",
    b"UPDATE": "statements_update", b"DELETE": "statements_delete",
}
_TRANSACTIONS = {b"COMMIT": "transactions_commit", b"ROLLBACK": "transactions_rollback"}
_FRONTEND_COUNTERS = {ord(k): f"frontend.{v}" for k, v in FRONTEND_TYPES.items()}
_BACKEND_COUNTERS = {ord(k): f"backend.{v}" for k, v in BACKEND_TYPES.items()}


@implementer(IStreamObserver)
class PostgresObserver(ObserverBase):
    """
    Counts frontend and backend messages by type, and ErrorResponses by
    severity and SQLSTATE class, the way Envoy's postgres_proxy does:
    ``messages_frontend``, ``frontend.<type>``, ``backend.<type>``,
    ``errors``, ``errors.<severity>``, ``errors.sqlstate_class.<XX>``,
    ``sessions``, ``sessions_encrypted``, ``sessions_unencrypted``, and from
    CommandComplete tags ``statements``, ``statements_<select|insert|update|
    delete|other>``, ``transactions``, ``transactions_<commit|rollback>``.
    It goes quiet (without an error) once the stream turns into TLS or GSS.

    Given ``observe`` and ``clock`` (``ITimedStreamObserverFactory``), it
    also times ``query.duration``: from each Query, Sync or FunctionCall to
    the ReadyForQuery that answers it (the server answers them in order,
    one each). At most :data:`MAX_PENDING` are tracked; beyond that timing
    stops for the connection (``latency_untracked``), counting does not.
    """

    def __init__(
        self,
        emit: Emit,
        observe: Optional[Observe] = None,
        clock: Optional[Callable[[], float]] = None,
    ) -> None:
        super().__init__(emit)
        self._client_untyped = True  # the next client message is a first message
        self._awaiting_encryption_reply = False
        self._observe = observe if clock is not None else None
        self._clock = clock
        self._pending: collections.deque[float] = collections.deque()

    # client -> server

    def _client(self, data: bytes) -> None:
        buf = self.client_buf
        buf.feed(data)
        while not self.quiet and len(buf):
            if not self._client_untyped:
                self._typed_messages(buf, _FRONTEND_COUNTERS, "frontend")
                return
            if not self._first_message(buf):
                return

    def _first_message(self, buf: ByteQueue) -> bool:
        head = buf.peek(MAX_STARTUP_PACKET_LENGTH)
        if head[:1] == b"\x16":
            # A direct-TLS client (PostgreSQL 17, ALPN "postgresql").
            self._emit("sessions", 1)
            self._emit("sessions_encrypted", 1)
            self.go_quiet()
            return False
        try:
            result = parse_startup(head)
        except HintParseError as e:
            raise PostgresDecodeError(str(e)) from None
        if isinstance(result, NotMine):
            raise PostgresDecodeError(result.reason)
        if isinstance(result, NeedMore):
            return False
        buf.discard(result.length)
        self._emit(f"frontend.{result.kind}_request" if result.kind != "startup"
                   else "frontend.startup", 1)
        self._emit("messages_frontend", 1)
        if result.kind in ("ssl", "gssenc"):
            self._awaiting_encryption_reply = True
        elif result.kind == "startup":
            self._client_untyped = False
            self._emit("sessions", 1)
            self._emit("sessions_unencrypted", 1)
            self._attributes.update(startup_attributes(result))
            self._attributes.pop("request", None)
        return True

    # server -> client

    def _server(self, data: bytes) -> None:
        buf = self.server_buf
        buf.feed(data)
        while not self.quiet and len(buf):
            if self._awaiting_encryption_reply:
                reply = buf.take(1)
                self._awaiting_encryption_reply = False
                if reply in (b"S", b"G"):
                    self._emit("sessions", 1)
                    self._emit("sessions_encrypted", 1)
                    self._attributes["tls" if reply == b"S" else "gssenc"] = "true"
                    self.go_quiet()
                    return
                if reply != b"N":
                    raise PostgresDecodeError(f"PostgreSQL encryption reply {reply!r}")
                self._emit("backend.encryption_refused", 1)
            else:
                self._typed_messages(buf, _BACKEND_COUNTERS, "backend")
                return

    # both

    def _typed_messages(self, buf: ByteQueue, counters: dict[int, str], side: str) -> None:
        """
        Count every complete typed message header in the buffer (bodies are
        skipped, past the end of the buffer too); walks a snapshot with an
        index because per-message buffer operations dominate the cost.
        """
        b = buf.snapshot()
        n = len(b)
        pos = 0
        total = 0
        counts = self._counts
        backend = side == "backend"
        try:
            while n - pos >= 5:
                kind = b[pos]
                length = int.from_bytes(b[pos + 1 : pos + 5], "big", signed=True)
                if length < 4 or length > MAX_MESSAGE:
                    raise PostgresDecodeError(
                        f"PostgreSQL {side} message {chr(kind)!r} with length {length}"
                    )
                counter = counters.get(kind)
                if counter is None:
                    raise PostgresDecodeError(
                        f"unknown PostgreSQL {side} message type {chr(kind)!r}"
                    )
                if backend and kind in (67, 69):  # 'C' and 'E' bodies are read
                    wanted = min(length - 4, BODY_PREFIX if kind == 69 else TAG_PREFIX)
                    if n - pos < 5 + wanted:
                        break
                    body = b[pos + 5 : pos + 5 + wanted]
                    if kind == 69:
                        self._count_error(body)
                    else:
                        self._count_statement(body)
                pos += 1 + length
                counts[counter] = counts.get(counter, 0) + 1
                total += 1
                if self._observe is not None and kind in _TIMED[side]:
                    self._timed(kind)
        finally:
            buf.discard(pos)
            if total:
                self._count(f"messages_{side}", total)

    def _timed(self, kind: int) -> None:
        """A request starts (frontend Q/S/F) or is answered (backend Z)."""
        clock, observe = self._clock, self._observe
        if clock is None or observe is None:
            return
        if kind != 90:  # 'Z' is the only backend kind in _TIMED
            if len(self._pending) >= MAX_PENDING:
                self._count("latency_untracked")
                self._observe = None
                self._pending.clear()
                return
            self._pending.append(clock())
        elif self._pending:  # the ReadyForQuery after startup answers nothing
            observe("query.duration", clock() - self._pending.popleft())

    def _count_statement(self, tag: bytes) -> None:
        """CommandComplete's tag (``SELECT 1``, ``INSERT 0 1``, ``COMMIT``), as Envoy counts it."""
        word = tag.split(b" ", 1)[0].rstrip(b"\x00")
        self._count("statements")
        self._count(_STATEMENTS.get(word, "statements_other"))
        transaction = _TRANSACTIONS.get(word)
        if transaction is not None:
            self._count("transactions")
            self._count(transaction)

    def _count_error(self, body: bytes) -> None:
        fields = {}
        for field in body.split(b"\x00"):
            if field:
                fields[chr(field[0])] = field[1:].decode("ascii", "replace")
        # 'V' (non-localised severity, 9.6+) is better than 'S' (translated).
        severity = fields.get("V") or fields.get("S") or ""
        self._count("errors")
        self._count(f"errors.{bounded_name(severity, _SEVERITIES)}")
        code = fields.get("C", "")
        if len(code) == 5 and code.isalnum():
            self._count(f"errors.sqlstate_class.{bounded_name(code[:2])}")
            self._attributes["last_error"] = code


@implementer(ITimedStreamObserverFactory)
class PostgresObserverFactory:
    """
    Counts PostgreSQL messages and errors per connection, and times
    ``query.duration`` when the data path gives a clock (see PostgresObserver).
    """

    name = "postgres"
    protocol = "postgres"
    istio_protocols: tuple[str, ...] = ()
    port_name_prefixes = ("postgres", "postgresql", "pg")

    def new_observer(self, emit: Emit) -> IStreamObserver:
        return PostgresObserver(emit)

    def new_timed_observer(
        self, emit: Emit, observe: Observe, clock: Callable[[], float]
    ) -> IStreamObserver:
        return PostgresObserver(emit, observe, clock)
