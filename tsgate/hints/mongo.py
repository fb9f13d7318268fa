"""
MongoDB wire protocol, sans-IO: message headers, OP_MSG, OP_QUERY,
OP_REPLY, OP_COMPRESSED and the legacy write ops, plus a minimal BSON reader.

Why our own BSON reader: we need a handful of top-level values (the command
name, ``$db``, the collection, ``ok``, the ``client`` metadata of a hello)
from a *bounded prefix* of a message; a full decoder would build every
document of a 16 MiB insert. The reader walks top-level elements, skips
each by its declared length, and stops cleanly where the prefix ends.

Limits: a message is at most :data:`MAX_MESSAGE_BYTES` (a larger declared
length is a decode error, not an allocation); only its first
:data:`PREFIX_BYTES` bytes are ever looked at (:class:`MessageFramer`
counts past the rest). Compressed messages are not decompressed: only the
OP_COMPRESSED header (original opcode, compressor) is reported.

Nothing here imports Twisted; errors are :class:`MongoDecodeError`.

The hint parser and the observer
--------------------------------

The hint parser (declared as the ``mongo`` plugin in
:mod:`tsgate.plugins.mongo`) reads hello/isMaster client metadata; the
passive stream observer has Envoy ``mongo_proxy``-like counters, which,
unlike Envoy's filter, understands OP_MSG.

Counters (the data path prefixes ``mongo.``):

- ``op_msg``, ``op_query``, ``op_reply``, ``op_compressed``, ``op_insert``,
  ... one per message by op code; ``compressed.<op>`` and
  ``compressor.<name>`` for OP_COMPRESSED (never decompressed);
- ``cmd.<command>.total`` per request, ``cmd.<command>.documents`` (the
  documents of kind-1 sequences, e.g. an insert's), ``cmd.<command>.error``
  and ``reply.error`` for replies with ``ok: 0`` (or OP_REPLY QueryFailure);
- ``collection.<db>.<collection>.<command>`` per request naming a collection;
- ``reply.unmatched`` (a reply to no request we saw), ``outstanding_overflow``
  (a request forgotten because too many were waiting), ``label_overflow``
  (a name folded into :data:`OTHER_LABEL`, ``_other``), ``decode_error``
  (once; then quiet).

Histograms (timed observers only): ``reply_time`` and
``cmd.<command>.reply_time``, seconds from the request's bytes reaching the
gateway to its reply's.

Label cardinality is bounded: a command or collection name must look like
one (letters, digits, ``_$.-``, at most 64 characters) and is admitted only
while there are fewer than :data:`MAX_COMMANDS` distinct commands and
:data:`MAX_COLLECTIONS` distinct ``db.collection`` pairs across the process
*and* fewer than 32 of each on the connection; the rest are counted under
``_other`` and bump ``label_overflow``.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Callable, Optional, Union

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

OP_REPLY = 1
OP_UPDATE = 2001
OP_INSERT = 2002
OP_QUERY = 2004
OP_GET_MORE = 2005
OP_DELETE = 2006
OP_KILL_CURSORS = 2007
OP_COMPRESSED = 2012
OP_MSG = 2013

#: Counter names of the op codes (Envoy's ``op_query``, ``op_reply`` style).
OP_NAMES = {
    OP_REPLY: "op_reply",
    OP_UPDATE: "op_update",
    OP_INSERT: "op_insert",
    OP_QUERY: "op_query",
    OP_GET_MORE: "op_get_more",
    OP_DELETE: "op_delete",
    OP_KILL_CURSORS: "op_kill_cursors",
    2010: "op_command",
    2011: "op_commandreply",
    OP_COMPRESSED: "op_compressed",
    OP_MSG: "op_msg",
}

COMPRESSORS = {0: "noop", 1: "snappy", 2: "zlib", 3: "zstd"}

#: OP_MSG flag bits.
CHECKSUM_PRESENT = 1 << 0
MORE_TO_COME = 1 << 1
EXHAUST_ALLOWED = 1 << 16

#: mongod refuses messages above 48,000,000 bytes (maxMessageSizeBytes); we
#: allow some slack and call anything larger not MongoDB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
HEADER_BYTES = 16
#: The smallest real message (OP_REPLY with no documents, or a tiny OP_MSG).
MIN_MESSAGE_BYTES = HEADER_BYTES + 5
#: How much of one message is ever kept: the header plus a 16 KiB prefix.
PREFIX_BYTES = HEADER_BYTES + 16 * 1024
#: Longest attribute value we report (client metadata is client-controlled).
MAX_ATTRIBUTE = 128

_HEADER = struct.Struct("<iiii")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")


class MongoDecodeError(DecodeError):
    """The bytes are not a well-formed MongoDB message."""


# --- BSON -----------------------------------------------------------------


@attrs.frozen
class Span:
    """An embedded document or array left undecoded: ``buf[start:end]``."""

    start: int
    end: int


class _Other:
    """A BSON value we step over without decoding (ObjectId, binary, ...)."""

    def __repr__(self) -> str:
        return "OTHER"


OTHER = _Other()

# Fixed-size BSON element types -> value size.
_FIXED = {
    0x01: 8,  # double
    0x06: 0,  # undefined
    0x07: 12,  # ObjectId
    0x08: 1,  # bool
    0x09: 8,  # UTC datetime
    0x0A: 0,  # null
    0x10: 4,  # int32
    0x11: 8,  # timestamp
    0x12: 8,  # int64
    0x13: 16,  # decimal128
    0xFF: 0,  # min key
    0x7F: 0,  # max key
}
_STRINGISH = (0x02, 0x0D, 0x0E)  # string, JavaScript code, symbol

BsonValue = Union[str, int, float, bool, None, Span, _Other]


def read_document(
    buf: bytes,
    pos: int,
    limit: int,
    max_keys: int = 64,
    wanted: Optional[frozenset[bytes]] = None,
) -> tuple[dict[str, BsonValue], bool]:
    """
    The top-level elements of the BSON document at ``buf[pos:]``, reading no
    further than ``limit`` (where the kept prefix of the message ends).

    Returns ``(elements, truncated)``: ``truncated`` is true when the
    document runs past ``limit``; the elements that fit are still returned.
    Embedded documents and arrays come back as :class:`Span`; types we do not
    need as :data:`OTHER`. At most ``max_keys`` elements are walked (the
    rest of the document is skipped by its length). With ``wanted``, only
    the first element and those named in it are returned (decoding values
    nobody reads is most of the cost on the data path). Raises
    :class:`MongoDecodeError` for anything malformed inside what is there.
    """
    if pos + 4 > limit:
        return {}, True
    (doc_len,) = _I32.unpack_from(buf, pos)
    if doc_len < 5:
        raise MongoDecodeError(f"BSON document length {doc_len}")
    end = pos + doc_len
    truncated = end > limit
    stop = end - 1 if not truncated else limit  # exclusive bound for elements
    out: dict[str, BsonValue] = {}
    i = pos + 4
    walked = 0
    while i < stop:
        if walked >= max_keys:
            return out, truncated
        walked += 1
        etype = buf[i]
        name_end = buf.find(b"\0", i + 1, stop)
        if name_end < 0:
            if truncated:
                return out, True
            raise MongoDecodeError("unterminated BSON key")
        j = name_end + 1
        size = _FIXED.get(etype)
        if size is not None:
            value_end = j + size
        elif etype in _STRINGISH or etype in (0x03, 0x04, 0x05, 0x0C, 0x0F):
            if j + 4 > stop:
                if truncated:
                    return out, True
                raise MongoDecodeError("BSON length overruns document")
            (n,) = _I32.unpack_from(buf, j)
            if etype in (0x03, 0x04):
                if n < 5:
                    raise MongoDecodeError(f"embedded document length {n}")
                value_end = j + n
            elif etype == 0x05:
                if n < 0:
                    raise MongoDecodeError(f"binary length {n}")
                value_end = j + 5 + n
            elif etype == 0x0F:
                if n < 14:
                    raise MongoDecodeError(f"code-with-scope length {n}")
                value_end = j + n
            else:
                if n < 1:
                    raise MongoDecodeError(f"string length {n}")
                value_end = j + 4 + n + (12 if etype == 0x0C else 0)
        elif etype == 0x0B:  # regex: two cstrings
            a = buf.find(b"\0", j, stop)
            b = buf.find(b"\0", a + 1, stop) if a >= 0 else -1
            if b < 0:
                if truncated:
                    return out, True
                raise MongoDecodeError("unterminated BSON regex")
            value_end = b + 1
        else:
            raise MongoDecodeError(f"unknown BSON type 0x{etype:02x}")
        if value_end > stop:
            if truncated:
                return out, True
            raise MongoDecodeError("BSON element overruns document")
        raw = buf[i + 1 : name_end]
        if wanted is None or walked == 1 or raw in wanted:
            out[raw.decode("utf-8", "replace")] = _value(buf, etype, j, value_end)
        i = value_end
    if not truncated and (i != end - 1 or buf[end - 1] != 0):
        raise MongoDecodeError("BSON document not terminated")
    return out, truncated


def _value(buf: bytes, etype: int, j: int, end: int) -> BsonValue:
    if etype == 0x02:
        if buf[end - 1] != 0:
            raise MongoDecodeError("BSON string not NUL-terminated")
        return buf[j + 4 : end - 1].decode("utf-8", "replace")
    if etype == 0x10:
        return int(_I32.unpack_from(buf, j)[0])
    if etype == 0x12:
        return int(_I64.unpack_from(buf, j)[0])
    if etype == 0x01:
        return float(_F64.unpack_from(buf, j)[0])
    if etype == 0x08:
        return buf[j] != 0
    if etype == 0x0A:
        return None
    if etype in (0x03, 0x04):
        return Span(j, end)
    return OTHER


def sub_document(buf: bytes, value: BsonValue, limit: int) -> dict[str, BsonValue]:
    """The elements of an embedded document value (empty if it is not one)."""
    if not isinstance(value, Span):
        return {}
    return read_document(buf, value.start, limit)[0]


# --- messages -------------------------------------------------------------


@attrs.frozen
class Header:
    """The 16-byte header every MongoDB message starts with."""

    length: int
    request_id: int
    response_to: int
    op_code: int

    @property
    def op_name(self) -> str:
        return OP_NAMES.get(self.op_code, "op_unknown")


@attrs.frozen
class MongoMessage:
    """
    What we decode from (the kept prefix of) one message.

    ``command`` is the first key of an OP_MSG body or of a ``$cmd`` query;
    ``collection`` the command's string value (``find: "users"``), the
    ``collection`` field of ``getMore``, or the legacy op's namespace;
    ``ok`` is False for a reply whose ``ok`` is 0 or an OP_REPLY with the
    QueryFailure flag, None when unknown (not a reply, or beyond the prefix).
    ``document`` holds the body's top-level values (for hello metadata).
    """

    header: Header
    command: Optional[str] = None
    database: Optional[str] = None
    collection: Optional[str] = None
    ok: Optional[bool] = None
    flags: int = 0
    sequences: tuple[tuple[str, int], ...] = ()
    number_returned: int = 0
    original_op_code: Optional[int] = None
    compressor: Optional[str] = None
    document: Any = attrs.field(factory=dict, eq=False, repr=False)
    truncated: bool = False

    @property
    def more_to_come(self) -> bool:
        return bool(self.flags & MORE_TO_COME) and self.header.op_code == OP_MSG


def parse_header(buf: bytes, pos: int = 0) -> Header:
    """Decode and sanity-check a header (``buf`` holds at least 16 bytes)."""
    length, request_id, response_to, op_code = _HEADER.unpack_from(buf, pos)
    if length < MIN_MESSAGE_BYTES or length > MAX_MESSAGE_BYTES:
        raise MongoDecodeError(f"message length {length}")
    if op_code not in OP_NAMES:
        raise MongoDecodeError(f"unknown op code {op_code}")
    return Header(length, request_id, response_to, op_code)


def decode_message(buf: bytes, header: Optional[Header] = None) -> MongoMessage:
    """
    Decode one message from its kept prefix ``buf`` (header included;
    ``len(buf)`` may be less than the header's length when the framer kept
    only a prefix: whatever lies beyond is reported as unknown). ``header``
    saves decoding it again when the framer already has.
    """
    if len(buf) < HEADER_BYTES:
        raise MongoDecodeError("short header")
    if header is None:
        header = parse_header(buf)
    limit = min(len(buf), header.length)
    prefix_only = limit < header.length
    op = header.op_code
    if op == OP_MSG:
        return _decode_op_msg(buf, header, limit, prefix_only)
    if op == OP_QUERY:
        return _decode_op_query(buf, header, limit)
    if op == OP_REPLY:
        return _decode_op_reply(buf, header, limit)
    if op == OP_COMPRESSED:
        if limit < HEADER_BYTES + 9:
            raise MongoDecodeError("short OP_COMPRESSED")
        original, _size = struct.unpack_from("<ii", buf, HEADER_BYTES)
        compressor = COMPRESSORS.get(buf[HEADER_BYTES + 8], "unknown")
        return MongoMessage(header, original_op_code=original, compressor=compressor)
    if op in (OP_UPDATE, OP_INSERT, OP_DELETE, OP_GET_MORE):
        # int32 (ZERO or flags), then fullCollectionName.
        database, collection = _namespace(buf, HEADER_BYTES + 4, limit)
        command = {
            OP_UPDATE: "update",
            OP_INSERT: "insert",
            OP_DELETE: "delete",
            OP_GET_MORE: "getMore",
        }[op]
        return MongoMessage(header, command=command, database=database, collection=collection)
    return MongoMessage(header, truncated=prefix_only)


def _namespace(buf: bytes, pos: int, limit: int) -> tuple[Optional[str], Optional[str]]:
    end = buf.find(b"\0", pos, limit)
    if end < 0:
        if limit - pos >= 1024:  # no sane namespace is that long
            raise MongoDecodeError("unterminated collection name")
        return None, None
    namespace = buf[pos:end].decode("utf-8", "replace")
    database, _, collection = namespace.partition(".")
    return database, collection or None


#: The body values anyone reads (the first key, the command, is always kept).
_OP_MSG_KEYS = frozenset({b"$db", b"ok", b"collection", b"client"})
_REPLY_KEYS = frozenset({b"ok"})


def _decode_op_msg(buf: bytes, header: Header, limit: int, prefix_only: bool) -> MongoMessage:
    if limit < HEADER_BYTES + 4:
        raise MongoDecodeError("short OP_MSG")
    (flags,) = _U32.unpack_from(buf, HEADER_BYTES)
    # Required flag bits (0-15) we do not know make the message invalid.
    if flags & 0xFFFF & ~(CHECKSUM_PRESENT | MORE_TO_COME):
        raise MongoDecodeError(f"unknown required OP_MSG flags 0x{flags:x}")
    sections_end = header.length - (4 if flags & CHECKSUM_PRESENT else 0)
    end = min(limit, sections_end)
    pos = HEADER_BYTES + 4
    body: dict[str, BsonValue] = {}
    have_body = False
    truncated = prefix_only
    sequences: list[tuple[str, int]] = []
    while pos < end:
        kind = buf[pos]
        pos += 1
        if kind == 0:
            if have_body:
                raise MongoDecodeError("two OP_MSG body sections")
            have_body = True
            if pos + 4 <= end:
                (n,) = _I32.unpack_from(buf, pos)
                if n < 5 or pos + n > sections_end:
                    raise MongoDecodeError(f"OP_MSG body length {n}")
            body, cut = read_document(buf, pos, end, wanted=_OP_MSG_KEYS)
            if cut:
                truncated = True
                break
            pos += _I32.unpack_from(buf, pos)[0]
        elif kind == 1:
            if pos + 4 > end:
                truncated = True
                break
            (size,) = _I32.unpack_from(buf, pos)
            if size < 5 or pos + size > sections_end:
                raise MongoDecodeError(f"OP_MSG sequence length {size}")
            name_end = buf.find(b"\0", pos + 4, min(end, pos + size))
            if name_end < 0:
                truncated = True
                break
            ident = buf[pos + 4 : name_end].decode("utf-8", "replace")
            sequences.append((ident, _count_documents(buf, name_end + 1, pos + size, end)))
            pos += size
        else:
            raise MongoDecodeError(f"OP_MSG section kind {kind}")
    if not truncated and not have_body:
        raise MongoDecodeError("OP_MSG without a body section")
    command = next(iter(body), None)
    database = body.get("$db")
    collection = body.get(command) if command is not None else None
    if command == "getMore":
        collection = body.get("collection")
    return MongoMessage(
        header,
        command=command,
        database=database if isinstance(database, str) else None,
        collection=collection if isinstance(collection, str) else None,
        ok=_ok(body),
        flags=flags,
        sequences=tuple(sequences),
        document=body,
        truncated=truncated,
    )


def _count_documents(buf: bytes, pos: int, end: int, limit: int) -> int:
    """Documents in a kind-1 sequence, counted by length within the prefix."""
    count = 0
    while pos + 4 <= min(end, limit):
        (n,) = _I32.unpack_from(buf, pos)
        if n < 5 or pos + n > end:
            raise MongoDecodeError(f"sequence document length {n}")
        pos += n
        count += 1
    return count


def _ok(body: dict[str, BsonValue]) -> Optional[bool]:
    ok = body.get("ok")
    if isinstance(ok, (int, float)):  # bool is an int too
        return ok != 0
    return None


def _decode_op_query(buf: bytes, header: Header, limit: int) -> MongoMessage:
    # int32 flags, cstring fullCollectionName, int32 skip, int32 return, query doc
    pos = HEADER_BYTES + 4
    ns_end = buf.find(b"\0", pos, limit)
    if ns_end < 0:
        raise MongoDecodeError("unterminated OP_QUERY collection name")
    namespace = buf[pos:ns_end].decode("utf-8", "replace")
    database, _, collection = namespace.partition(".")
    query, truncated = read_document(buf, ns_end + 9, limit)
    command: Optional[str] = None
    if collection == "$cmd":
        wrapped = query.get("$query", query.get("query"))
        if isinstance(wrapped, Span):  # {$query: {isMaster: 1}, $readPreference: ...}
            query = sub_document(buf, wrapped, limit)
        command = next(iter(query), None)
        value = query.get(command) if command is not None else None
        collection = value if isinstance(value, str) else ""
    else:
        command = "query"
    return MongoMessage(
        header,
        command=command,
        database=database,
        collection=collection or None,
        flags=_I32.unpack_from(buf, HEADER_BYTES)[0],
        document=query,
        truncated=truncated,
    )


def _decode_op_reply(buf: bytes, header: Header, limit: int) -> MongoMessage:
    # int32 responseFlags, int64 cursorID, int32 startingFrom, int32 numberReturned, docs
    if limit < HEADER_BYTES + 20:
        raise MongoDecodeError("short OP_REPLY")
    flags = _I32.unpack_from(buf, HEADER_BYTES)[0]
    (returned,) = _I32.unpack_from(buf, HEADER_BYTES + 16)
    if returned < 0:
        raise MongoDecodeError(f"OP_REPLY numberReturned {returned}")
    first: dict[str, BsonValue] = {}
    truncated = False
    if returned:
        first, truncated = read_document(buf, HEADER_BYTES + 20, limit, wanted=_REPLY_KEYS)
    ok: Optional[bool] = _ok(first)
    if flags & 0x2:  # QueryFailure
        ok = False
    return MongoMessage(
        header, ok=ok, flags=flags, number_returned=returned, document=first, truncated=truncated
    )


# --- framing --------------------------------------------------------------


class MessageFramer:
    """
    Splits one direction of a connection into messages, keeping at most the
    first ``keep`` bytes of each (header included) and counting past the
    rest, so memory stays below ``keep`` whatever lengths the peer declares.
    ``feed`` returns ``(header, prefix)`` for each message whose prefix is
    complete; a bad header raises :class:`MongoDecodeError`.
    """

    def __init__(self, keep: int = PREFIX_BYTES) -> None:
        self._keep_max = keep
        self._buf = bytearray()
        self._header: Optional[Header] = None
        self._keep = 0
        self._skip = 0

    def feed(self, data: bytes) -> list[tuple[Header, bytes]]:
        out: list[tuple[Header, bytes]] = []
        pos, n = 0, len(data)
        buf = self._buf
        while pos < n:
            if self._skip:
                k = min(self._skip, n - pos)
                self._skip -= k
                pos += k
                continue
            if not buf and n - pos >= HEADER_BYTES:
                # Fast path: the whole kept prefix is in this chunk.
                header = parse_header(data, pos)
                keep = min(header.length, self._keep_max)
                if n - pos >= keep:
                    out.append((header, data[pos : pos + keep]))
                    pos += keep
                    self._skip = header.length - keep
                    continue
            if len(buf) < HEADER_BYTES:
                k = min(HEADER_BYTES - len(buf), n - pos)
                buf += data[pos : pos + k]
                pos += k
                if len(buf) < HEADER_BYTES:
                    break
                self._header = parse_header(bytes(buf))
                self._keep = min(self._header.length, self._keep_max)
            k = min(self._keep - len(buf), n - pos)
            buf += data[pos : pos + k]
            pos += k
            if len(buf) == self._keep and self._header is not None:
                out.append((self._header, bytes(buf)))
                buf.clear()
                self._skip = self._header.length - self._keep
        return out

    @property
    def buffered(self) -> int:
        """Bytes currently held (for memory-bound tests)."""
        return len(self._buf)


# --- hint -----------------------------------------------------------------

#: The most bytes the hint parser looks at: a hello with client metadata is
#: well under 2 KiB (drivers cap the metadata at 512 bytes).
HINT_MAX_BYTES = 16 * 1024
_HANDSHAKES = ("hello", "ismaster", "isMaster")


def _short(value: object) -> Optional[str]:
    if not isinstance(value, str):
        return None
    return value[:MAX_ATTRIBUTE]


def client_metadata(message: MongoMessage, buf: bytes) -> dict[str, str]:
    """``app_name``, ``driver`` and ``database`` from a hello/isMaster."""
    attributes: dict[str, str] = {}
    if message.database:
        attributes["database"] = message.database[:MAX_ATTRIBUTE]
    if message.command:
        attributes["command"] = message.command[:MAX_ATTRIBUTE]
    limit = min(len(buf), message.header.length)
    client = sub_document(buf, message.document.get("client"), limit)
    app = _short(sub_document(buf, client.get("application"), limit).get("name"))
    if app:
        attributes["app_name"] = app
    driver = sub_document(buf, client.get("driver"), limit)
    name, version = _short(driver.get("name")), _short(driver.get("version"))
    if name:
        attributes["driver"] = f"{name} {version}" if version else name
    return attributes


def parse_hint(data: bytes, max_bytes: int = HINT_MAX_BYTES) -> ParseResult:
    """
    The ``mongo`` hint: the first client message must be a request (OP_MSG
    or OP_QUERY with responseTo 0). Attributes: ``database`` (``$db``, or
    the namespace's database for OP_QUERY), ``command`` (``hello``,
    ``ismaster``, ...) and, from a handshake's client metadata, ``app_name``
    and ``driver`` (``"<name> <version>"``), each cut to 128 characters.
    Bytes that cannot be a MongoDB header are NotMine; a plausible header
    with a malformed body raises HintParseError.
    """
    if len(data) >= 4:
        (length,) = _I32.unpack_from(data, 0)
        if length < MIN_MESSAGE_BYTES or length > MAX_MESSAGE_BYTES:
            return NotMine(f"message length {length}")
    if len(data) < HEADER_BYTES:
        return NEED_MORE
    length, _request_id, response_to, op_code = _HEADER.unpack_from(data, 0)
    if op_code not in (OP_MSG, OP_QUERY):
        return NotMine(f"op code {op_code} cannot start a connection")
    if response_to != 0:
        return NotMine("first message is a reply")
    need = min(length, max_bytes)
    if len(data) < need:
        return NEED_MORE
    prefix = bytes(data[:need])
    try:
        message = decode_message(prefix)
        attributes = client_metadata(message, prefix)
    except MongoDecodeError as e:
        raise HintParseError(f"mongo: {e}") from None
    return Hint("mongo", attributes, length=length)


# --- the passive observer and the plugin objects' classes (declared in tsgate.plugins.mongo)

MAX_COMMANDS = 256
MAX_COLLECTIONS = 1024
PER_CONNECTION_NAMES = 32
#: Requests awaiting a reply that we remember (a driver pipelines at most a
#: few per connection; exhaust cursors one).
MAX_OUTSTANDING = 256
OTHER_LABEL = "_other"

_NAME = re.compile(r"[A-Za-z0-9_$.\-]{1,64}\Z")


class NameBudget:
    """A process-wide set of admitted label names with a hard size cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._seen: set[str] = set()

    def admit(self, name: str) -> bool:
        if name in self._seen:
            return True
        if len(self._seen) >= self.cap:
            return False
        self._seen.add(name)
        return True


@implementer(IStreamObserver)
class MongoObserver:
    """One connection's passive MongoDB decoder (see the module docstring)."""

    def __init__(
        self,
        emit: Emit,
        commands: NameBudget,
        collections: NameBudget,
        observe: Optional[Observe] = None,
        clock: Optional[Callable[[], float]] = None,
    ) -> None:
        self._emit = emit
        self._observe = observe
        self._clock = clock
        self._global = {"cmd": commands, "collection": collections}
        self._local: dict[str, set[str]] = {"cmd": set(), "collection": set()}
        self._client = MessageFramer()
        self._server = MessageFramer()
        # request_id -> (command label or None, time or None)
        self._outstanding: dict[int, tuple[Optional[str], Optional[float]]] = {}
        self._attributes: dict[str, str] = {}
        self._first = True
        self._dead = False

    # IStreamObserver

    def client_data(self, data: bytes) -> None:
        if self._dead:
            return
        try:
            frames = self._client.feed(data)
            now = self._clock() if self._clock is not None and frames else None
            for header, prefix in frames:
                self._request(decode_message(prefix, header), prefix, now)
        except MongoDecodeError:
            self._fail()

    def server_data(self, data: bytes) -> None:
        if self._dead:
            return
        try:
            frames = self._server.feed(data)
            now = self._clock() if self._clock is not None and frames else None
            for header, prefix in frames:
                self._reply(decode_message(prefix, header), now)
        except MongoDecodeError:
            self._fail()

    def attributes(self) -> dict[str, str]:
        return dict(self._attributes)

    # internals

    def _fail(self) -> None:
        self._dead = True
        self._emit("decode_error", 1)
        # Drop everything buffered: a dead observer holds no memory.
        self._client = self._server = MessageFramer(0)
        self._outstanding.clear()

    def _label(self, kind: str, name: str) -> str:
        local = self._local[kind]
        if name in local:
            return name
        fits = len(local) < PER_CONNECTION_NAMES
        if fits and _NAME.match(name) and self._global[kind].admit(name):
            local.add(name)
            return name
        self._emit("label_overflow", 1)
        return OTHER_LABEL

    def _request(self, msg: MongoMessage, prefix: bytes, now: Optional[float]) -> None:
        emit = self._emit
        header = msg.header
        emit(header.op_name, 1)
        if self._first:
            self._first = False
            self._attributes.update(client_metadata(msg, prefix))
            self._attributes.pop("command", None)
        if msg.database and self._attributes.get("database", "admin") == "admin":
            self._attributes["database"] = msg.database[: MAX_ATTRIBUTE]
        cmd: Optional[str] = None
        if msg.command is not None:
            cmd = self._label("cmd", msg.command)
            emit(f"cmd.{cmd}.total", 1)
            for _ident, count in msg.sequences:
                emit(f"cmd.{cmd}.documents", count)
            if msg.collection and msg.database:
                coll = self._label("collection", f"{msg.database}.{msg.collection}")
                emit(f"collection.{coll}.{cmd}", 1)
        elif header.op_code == OP_COMPRESSED:
            original = OP_NAMES.get(msg.original_op_code or 0, "op_unknown")
            emit(f"compressed.{original}", 1)
            emit(f"compressor.{msg.compressor}", 1)
        if msg.more_to_come or header.op_code in (
            OP_INSERT,
            OP_UPDATE,
            OP_DELETE,
            OP_KILL_CURSORS,
        ):
            return  # fire-and-forget: no reply will come
        self._remember(header.request_id, cmd, now)

    def _remember(self, request_id: int, cmd: Optional[str], now: Optional[float]) -> None:
        table = self._outstanding
        if request_id not in table and len(table) >= MAX_OUTSTANDING:
            del table[next(iter(table))]
            self._emit("outstanding_overflow", 1)
        table[request_id] = (cmd, now)

    def _reply(self, msg: MongoMessage, now: Optional[float]) -> None:
        emit = self._emit
        header = msg.header
        emit(header.op_name, 1)
        if header.op_code == OP_COMPRESSED:
            original = OP_NAMES.get(msg.original_op_code or 0, "op_unknown")
            emit(f"compressed.{original}", 1)
            emit(f"compressor.{msg.compressor}", 1)
        entry = self._outstanding.pop(header.response_to, None)
        if entry is None:
            emit("reply.unmatched", 1)
            cmd = None
        else:
            cmd, started = entry
            if started is not None and now is not None and self._observe is not None:
                elapsed = max(0.0, now - started)
                self._observe("reply_time", elapsed)
                if cmd is not None:
                    self._observe(f"cmd.{cmd}.reply_time", elapsed)
        if msg.more_to_come:
            # Exhaust/streaming: the next reply answers this one, untimed.
            self._remember(header.request_id, cmd, None)
        if msg.ok is False:
            emit("reply.error", 1)
            if cmd is not None:
                emit(f"cmd.{cmd}.error", 1)


@implementer(ITimedStreamObserverFactory)
class MongoObserverFactory:
    """Observer plugin for Gateway ports ``protocol: MONGO`` or named ``mongo-*``."""

    name = "mongo"
    protocol = "mongo"
    istio_protocols = ("MONGO",)
    port_name_prefixes = ("mongo",)

    def __init__(self) -> None:
        self._commands = NameBudget(MAX_COMMANDS)
        self._collections = NameBudget(MAX_COLLECTIONS)

    def new_observer(self, emit: Emit) -> IStreamObserver:
        return MongoObserver(emit, self._commands, self._collections)

    def new_timed_observer(
        self, emit: Emit, observe: Observe, clock: Callable[[], float]
    ) -> IStreamObserver:
        return MongoObserver(emit, self._commands, self._collections, observe, clock)


@implementer(IHintParser)
class MongoHintParser:
    """Hint parser: a first OP_MSG/OP_QUERY gives app_name, driver, database."""

    name = "mongo"
    protocol = "mongo"
    max_bytes = HINT_MAX_BYTES

    def parse(self, data: bytes) -> ParseResult:
        return parse_hint(data, self.max_bytes)
