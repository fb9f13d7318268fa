"""
Redis (RESP2/RESP3): the first command as a hint, and a passive observer
counting commands and error replies.

Clients send either RESP arrays of bulk strings (``*2\\r\\n$3\\r\\nGET\\r\\n
$1\\r\\nk\\r\\n``), which every client library uses, or *inline commands*
(``GET k\\r\\n``), which is what a person types into ``nc`` or ``telnet``.
Replies are typed values (``+OK``, ``-ERR ...``, ``:1``, ``$5 hello``,
``*2 ...``; RESP3 adds ``%`` maps, ``~`` sets, ``>`` pushes, ``|``
attributes, ``_`` null, ``,`` doubles, ``#`` booleans, ``!`` blob errors,
``=`` verbatim strings, ``(`` big numbers), nested to any depth.

Only the command *name* is ever read. Arguments are skipped by length and
never buffered or logged, so ``AUTH user password`` shows up as the
attribute ``command=auth`` and the counter ``command.auth`` and nothing
else. Counter names come from a fixed list of Redis commands (Redis 7's
``COMMAND LIST``) and error codes: a client cannot mint counters.
"""

from __future__ import annotations

import re
from typing import Union

from zope.interface import implementer

from tsgate.hints.stream import ObserverBase, bounded_name
from tsgate.interfaces import (
    NEED_MORE,
    DecodeError,
    Emit,
    Hint,
    HintParseError,
    IHintParser,
    IStreamObserver,
    IStreamObserverFactory,
    NeedMore,
    NotMine,
)


class RedisDecodeError(DecodeError):
    """The bytes are not a well-formed RESP frame; the observer goes quiet."""

#: Top-level commands of Redis 7.0 (``COMMAND LIST`` without subcommands).
COMMANDS = frozenset(
    """
    acl append asking auth bgrewriteaof bgsave bitcount bitfield bitfield_ro bitop bitpos blmove
    blmpop blpop brpop brpoplpush bzmpop bzpopmax bzpopmin client cluster command config copy
    dbsize debug decr decrby del discard dump echo eval eval_ro evalsha evalsha_ro exec exists
    expire expireat expiretime failover fcall fcall_ro flushall flushdb function geoadd geodist
    geohash geopos georadius georadius_ro georadiusbymember georadiusbymember_ro geosearch
    geosearchstore get getbit getdel getex getrange getset hdel hello hexists hget hgetall
    hincrby hincrbyfloat hkeys hlen hmget hmset hrandfield hscan hset hsetnx hstrlen hvals incr
    incrby incrbyfloat info keys lastsave latency lcs lindex linsert llen lmove lmpop lolwut lpop
    lpos lpush lpushx lrange lrem lset ltrim memory mget migrate module monitor move mset msetnx
    multi object persist pexpire pexpireat pexpiretime pfadd pfcount pfdebug pfmerge pfselftest
    ping psetex psubscribe psync pttl publish pubsub punsubscribe quit randomkey readonly
    readwrite rename renamenx replconf replicaof reset restore restore_asking role rpop
    rpoplpush rpush rpushx sadd save scan scard script sdiff sdiffstore select set setbit setex
    setnx setrange shutdown sinter sintercard sinterstore sismember slaveof slowlog smembers
    smismember smove sort sort_ro spop spublish srandmember srem sscan ssubscribe strlen
    subscribe substr sunion sunionstore sunsubscribe swapdb sync time touch ttl type unlink
    unsubscribe unwatch wait watch xack xadd xautoclaim xclaim xdel xgroup xinfo xlen xpending
    xrange xread xreadgroup xrevrange xsetid xtrim zadd zcard zcount zdiff zdiffstore zincrby
    zinter zintercard zinterstore zlexcount zmpop zmscore zpopmax zpopmin zrandmember zrange
    zrangebylex zrangebyscore zrangestore zrank zrem zremrangebylex zremrangebyrank
    zremrangebyscore zrevrange zrevrangebylex zrevrangebyscore zrevrank zscan zscore zunion
    zunionstore
    """.split()  # noqa: SIM905 (a word list reads better than 240 quoted strings)
)
#: Error-reply codes Redis and Redis Cluster send (the first word of ``-CODE message``).
ERROR_CODES = frozenset(
    """
    err wrongtype noauth noperm wrongpass moved ask loading busy noscript readonly oom execabort
    masterdown misconf noreplicas clusterdown crossslot tryagain noproto busykey unkillable
    notbusy nogoodslave
    """.split()  # noqa: SIM905 (a word list, as above)
)
#: Longest command name we read (the longest real one is 20 bytes).
MAX_NAME = 64
#: Redis's own cap on an inline command or a RESP header line (PROTO_INLINE_MAX_SIZE).
LINE_CAP = 64 * 1024
#: Redis refuses more elements than this in one multibulk request.
MAX_MULTIBULK = 1024 * 1024
#: Redis's proto-max-bulk-len default is 512 MB; replies may be larger in theory.
MAX_BULK = 1 << 40
#: Nesting of reply aggregates we follow.
MAX_DEPTH = 64


def command_name(raw: bytes) -> str:
    """A counter/attribute-safe lower-case command name, ``unknown`` if not a Redis command."""
    name = raw.decode("ascii", "replace").lower().replace("-", "_")
    return bounded_name(name, COMMANDS)


def _digits(raw: bytes, allow_negative: bool = False) -> bool:
    if allow_negative and raw[:1] == b"-":
        raw = raw[1:]
    return 0 < len(raw) <= 19 and raw.isdigit()


@implementer(IHintParser)
class RedisHintParser:
    """
    The ``redis`` hint parser: the first command's name as ``command``.

    ``Hint.length`` covers the bytes examined (through the command name),
    not the whole first command, whose arguments may be megabytes.
    """

    name = "redis"
    protocol = "redis"
    max_bytes = 1024

    def parse(self, data: bytes) -> Union[NeedMore, NotMine, Hint]:
        if not data:
            return NEED_MORE
        if data[:1] == b"*":
            return self._multibulk(bytes(data[: self.max_bytes]))
        return self._inline(bytes(data[: self.max_bytes]))

    def _multibulk(self, data: bytes) -> Union[NeedMore, NotMine, Hint]:
        end = data.find(b"\r\n")
        if end < 0:
            head = data[1:].removesuffix(b"\r")
            if head and not head.isdigit():
                return NotMine("'*' not followed by a RESP array length")
            return NEED_MORE if len(head) <= 7 else NotMine("RESP array length too long")
        head = data[1:end]
        if not head.isdigit():
            return NotMine("'*' not followed by a RESP array length")
        if len(head) > 7:  # Redis takes at most 1048576 elements: 7 digits
            return NotMine("RESP array length too long")
        count = int(head)
        if not 1 <= count <= MAX_MULTIBULK:
            raise HintParseError(f"RESP request array of {count} elements")
        pos = end + 2
        if len(data) <= pos:
            return NEED_MORE
        if data[pos : pos + 1] != b"$":
            raise HintParseError(f"RESP request element starts with {data[pos:pos + 1]!r}, not '$'")
        end = data.find(b"\r\n", pos)
        if end < 0:
            if len(data) - pos > 12:
                raise HintParseError("RESP bulk length line too long")
            partial = data[pos + 1 :].removesuffix(b"\r")
            if partial and not partial.isdigit():
                raise HintParseError("RESP bulk length is not a number")
            return NEED_MORE
        raw_len = data[pos + 1 : end]
        if not _digits(raw_len) or len(raw_len) > 11:
            raise HintParseError("RESP bulk length is not a number")
        length = int(raw_len)
        pos = end + 2
        if length > MAX_NAME:
            return Hint(protocol="redis", attributes={"command": "unknown"}, length=pos)
        if len(data) < pos + length + 2:
            return NEED_MORE
        if data[pos + length : pos + length + 2] != b"\r\n":
            raise HintParseError("RESP bulk string not followed by CRLF")
        command = command_name(data[pos : pos + length])
        return Hint(protocol="redis", attributes={"command": command}, length=pos + length + 2)

    def _inline(self, data: bytes) -> Union[NeedMore, NotMine, Hint]:
        word_end = len(data)
        for i, byte in enumerate(data):
            if byte in b" \t\r\n":
                word_end = i
                break
            if not (65 <= byte <= 90 or 97 <= byte <= 122 or byte in b"_-"):
                return NotMine("not a Redis inline command")
            if i >= MAX_NAME:
                return NotMine("word too long for a Redis command")
        else:
            return NEED_MORE if len(data) < self.max_bytes else NotMine("no command word")
        if word_end == 0:
            return NotMine("not a Redis inline command")
        command = command_name(data[:word_end])
        if command == "unknown":
            return NotMine("not a Redis command")
        line_end = data.find(b"\n")
        if command == "get":
            # "GET / HTTP/1.1" is HTTP: look at the whole line before claiming it.
            if line_end < 0:
                if len(data) < self.max_bytes:
                    return NEED_MORE
                return NotMine("a GET line longer than any Redis hint needs: HTTP?")
            if data[:line_end].rstrip(b"\r").split(b" ")[-1].startswith(b"HTTP/"):
                return NotMine("an HTTP request line")
        return Hint(protocol="redis", attributes={"command": command}, length=word_end)


# -- the observer -----------------------------------------------------------

#: A request array's header and its command name's length; a bulk string header.
_ARRAY_HEAD = re.compile(rb"\*([1-9][0-9]{0,6})\r\n\$([0-9]{1,2})\r\n")
_BULK_HEAD = re.compile(rb"\$([0-9]{1,11})\r\n")
#: Reply type bytes: scalars on one line, bulk strings, aggregates.
_SCALARS = frozenset(b"+:_,#(")
_BULKS = frozenset(b"$=")
_AGGREGATES = frozenset(b"*~>%|")
_PAIRS = frozenset(b"%|")
#: Precomputed names: the common spellings of every command, and counter names.
_NAMES = {
    spelling: name
    for name in COMMANDS
    for spelling in (name.encode(), name.upper().encode(), name.replace("_", "-").encode(),
                     name.upper().replace("_", "-").encode())
}
_COMMAND_COUNTERS = {name: f"command.{name}" for name in COMMANDS}


def _length(raw: bytes, what: str, limit: int) -> int:
    if not _digits(raw, allow_negative=True):
        raise RedisDecodeError(f"RESP {what} is not a number: {raw[:20]!r}")
    n = int(raw)
    if n < -1 or n > limit:
        raise RedisDecodeError(f"RESP {what} out of range: {n}")
    return n


def _line_end(b: bytes, pos: int) -> int:
    """Index of the LF ending the line at ``pos``, -1 if not here yet (capped)."""
    end = b.find(b"\n", pos, pos + LINE_CAP + 2)
    if end < 0 and len(b) - pos > LINE_CAP:
        raise RedisDecodeError("RESP line longer than 64 KiB")
    return end


def _strip(b: bytes, pos: int, end: int) -> bytes:
    """The line between ``pos`` and the LF at ``end``, without its CR."""
    return b[pos : end - 1] if end > pos and b[end - 1] == 13 else b[pos:end]


@implementer(IStreamObserver)
class RedisObserver(ObserverBase):
    """
    Counts ``commands`` and ``command.<name>`` (array or inline, pipelined
    or not), ``replies``, ``pushes``, ``errors`` and ``error.<code>``
    (``error.err``, ``error.wrongtype``, ``error.noauth`` ...). Attribute:
    ``command`` (the first command, as in the hint).
    """

    def __init__(self, emit: Emit) -> None:
        super().__init__(emit)
        # client: elements left in the current request array, and whether the
        # next one is the command name; pending bulk payload to read/skip.
        self._c_elements = 0
        self._c_name_next = False
        self._c_name_len = -1
        # server: [elements left, kind] per open aggregate; pending blob error.
        self._stack: list[list[int]] = []
        self._s_blob_error = -1

    # client -> server

    def _client(self, data: bytes) -> None:
        buf = self.client_buf
        buf.feed(data)
        b = buf.snapshot()
        n = len(b)
        pos = 0
        try:
            while pos < n:
                if not self._c_elements and b[pos] == 42:  # '*': try the fast path
                    fast = self._fast_command(b, pos)
                    if fast:
                        pos = fast
                        continue
                if self._c_name_len >= 0:
                    size = self._c_name_len
                    if n - pos < size + 2:
                        break
                    self._command(b[pos : pos + size])
                    pos += size + 2
                    self._c_name_len = -1
                    self._element_done()
                    continue
                end = _line_end(b, pos)
                if end < 0:
                    break
                line = _strip(b, pos, end)
                pos = end + 1
                if self._c_elements:
                    if line[:1] != b"$":
                        raise RedisDecodeError(
                            f"RESP request element {line[:1]!r}, not a bulk string"
                        )
                    size = _length(line[1:], "bulk length", MAX_BULK)
                    if size < 0:
                        raise RedisDecodeError("null bulk string in a request")
                    if self._c_name_next and size <= MAX_NAME:
                        self._c_name_len = size
                        continue
                    if self._c_name_next:
                        self._count_command("unknown")
                    pos += size + 2  # skipped; past the end, future bytes are skipped
                    self._element_done()
                elif line[:1] == b"*":
                    count = _length(line[1:], "array length", MAX_MULTIBULK)
                    if count > 0:
                        self._c_elements = count
                        self._c_name_next = True
                else:
                    words = line.split()
                    if words:  # Redis ignores empty inline lines
                        self._command(words[0])
        finally:
            buf.discard(pos)

    def _fast_command(self, b: bytes, pos: int) -> int:
        """
        The common request shape (``*N``, a short ``$L`` name, bulk
        arguments) matched with two compiled patterns instead of line by
        line; returns the position after what it consumed, or 0 to let the
        general parser handle it. Same results as the general path, only
        fewer Python steps per element (tested against it).
        """
        m = _ARRAY_HEAD.match(b, pos)
        if m is None:
            return 0
        size = int(m.group(2))
        start = m.end()
        if size > MAX_NAME or len(b) - start < size + 2 or int(m.group(1)) > MAX_MULTIBULK:
            return 0
        self._command(b[start : start + size])
        at = start + size + 2
        remaining = int(m.group(1)) - 1
        bulk = _BULK_HEAD.match
        while remaining:
            m = bulk(b, at)
            if m is None:
                break
            at = m.end() + int(m.group(1)) + 2
            remaining -= 1
        # Elements not matched here (not arrived yet, or malformed) go to the
        # general parser, which waits or raises exactly as it would have.
        self._c_elements = remaining
        self._c_name_next = False
        return at

    def _element_done(self) -> None:
        self._c_name_next = False
        self._c_elements -= 1

    def _command(self, raw: bytes) -> None:
        name = _NAMES.get(raw)
        self._count_command(name if name is not None else command_name(raw))

    def _count_command(self, name: str) -> None:
        self._count("commands")
        self._count(_COMMAND_COUNTERS.get(name) or f"command.{name}")
        if "command" not in self._attributes:
            self._attributes["command"] = name

    # server -> client

    def _server(self, data: bytes) -> None:
        buf = self.server_buf
        buf.feed(data)
        b = buf.snapshot()
        n = len(b)
        pos = 0
        try:
            while pos < n:
                if self._s_blob_error >= 0:
                    size = self._s_blob_error
                    want = min(size, 32)
                    if n - pos < want:
                        break
                    self._error(b[pos : pos + want])
                    pos += size + 2
                    self._s_blob_error = -1
                    self._value_done(0)
                    continue
                end = _line_end(b, pos)
                if end < 0:
                    break
                kind = b[pos]
                rest = _strip(b, pos + 1, end)
                pos = end + 1
                if kind in _SCALARS:
                    self._value_done(0)
                elif kind == 45:  # '-'
                    self._error(rest)
                    self._value_done(0)
                elif kind in _BULKS:
                    size = _length(rest, "bulk length", MAX_BULK)
                    if size >= 0:
                        pos += size + 2
                    self._value_done(0)
                elif kind == 33:  # '!'
                    self._s_blob_error = _length(rest, "blob error length", MAX_BULK)
                    if self._s_blob_error < 0:
                        raise RedisDecodeError("null blob error")
                elif kind in _AGGREGATES:
                    size = _length(rest, "aggregate length", MAX_BULK)
                    if kind in _PAIRS and size > 0:
                        size *= 2
                    if size <= 0:
                        self._value_done(0)
                    elif len(self._stack) >= MAX_DEPTH:
                        raise RedisDecodeError("RESP replies nested too deep")
                    else:
                        self._stack.append([size, kind])
                else:
                    raise RedisDecodeError(f"unknown RESP type {bytes([kind])!r}")
        finally:
            buf.discard(pos)

    def _value_done(self, kind: int) -> None:
        """One value finished: close the aggregates it completes; count top-level replies."""
        while self._stack:
            top = self._stack[-1]
            top[0] -= 1
            if top[0] > 0:
                return
            self._stack.pop()
            kind = top[1]
        if kind == 124:  # '|'
            return  # an attribute: the reply it annotates follows
        self._count("pushes" if kind == 62 else "replies")

    def _error(self, text: bytes) -> None:
        code = text.split(b" ", 1)[0].decode("ascii", "replace").lower()
        self._count("errors")
        self._count(f"error.{bounded_name(code, ERROR_CODES, 'other')}")


@implementer(IStreamObserverFactory)
class RedisObserverFactory:
    """Counts Redis commands (per name) and error replies per connection."""

    name = "redis"
    protocol = "redis"
    istio_protocols = ("REDIS",)
    port_name_prefixes = ("redis",)

    def new_observer(self, emit: Emit) -> IStreamObserver:
        return RedisObserver(emit)
