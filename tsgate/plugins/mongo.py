"""
The built-in ``mongo`` plugins: a hint parser (hello/isMaster client
metadata) and a passive stream observer with Envoy ``mongo_proxy``-like
counters, which, unlike Envoy's filter, understands OP_MSG.

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
  (a name folded into ``_other``), ``decode_error`` (once; then quiet).

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
from typing import Callable, Optional

from twisted.plugin import IPlugin
from zope.interface import implementer

from tsgate.hints import mongo as wire
from tsgate.interfaces import (
    Emit,
    IHintParser,
    IStreamObserver,
    ITimedStreamObserverFactory,
    Observe,
    ParseResult,
)

MAX_COMMANDS = 256
MAX_COLLECTIONS = 1024
PER_CONNECTION_NAMES = 32
#: Requests awaiting a reply that we remember (a driver pipelines at most a
#: few per connection; exhaust cursors one).
MAX_OUTSTANDING = 256
OTHER = "_other"

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
        self._client = wire.MessageFramer()
        self._server = wire.MessageFramer()
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
                self._request(wire.decode_message(prefix, header), prefix, now)
        except wire.MongoDecodeError:
            self._fail()

    def server_data(self, data: bytes) -> None:
        if self._dead:
            return
        try:
            frames = self._server.feed(data)
            now = self._clock() if self._clock is not None and frames else None
            for header, prefix in frames:
                self._reply(wire.decode_message(prefix, header), now)
        except wire.MongoDecodeError:
            self._fail()

    def attributes(self) -> dict[str, str]:
        return dict(self._attributes)

    # internals

    def _fail(self) -> None:
        self._dead = True
        self._emit("decode_error", 1)
        # Drop everything buffered: a dead observer holds no memory.
        self._client = self._server = wire.MessageFramer(0)
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
        return OTHER

    def _request(self, msg: wire.MongoMessage, prefix: bytes, now: Optional[float]) -> None:
        emit = self._emit
        header = msg.header
        emit(header.op_name, 1)
        if self._first:
            self._first = False
            self._attributes.update(wire.client_metadata(msg, prefix))
            self._attributes.pop("command", None)
        if msg.database and self._attributes.get("database", "admin") == "admin":
            self._attributes["database"] = msg.database[: wire.MAX_ATTRIBUTE]
        cmd: Optional[str] = None
        if msg.command is not None:
            cmd = self._label("cmd", msg.command)
            emit(f"cmd.{cmd}.total", 1)
            for _ident, count in msg.sequences:
                emit(f"cmd.{cmd}.documents", count)
            if msg.collection and msg.database:
                coll = self._label("collection", f"{msg.database}.{msg.collection}")
                emit(f"collection.{coll}.{cmd}", 1)
        elif header.op_code == wire.OP_COMPRESSED:
            original = wire.OP_NAMES.get(msg.original_op_code or 0, "op_unknown")
            emit(f"compressed.{original}", 1)
            emit(f"compressor.{msg.compressor}", 1)
        if msg.more_to_come or header.op_code in (
            wire.OP_INSERT,
            wire.OP_UPDATE,
            wire.OP_DELETE,
            wire.OP_KILL_CURSORS,
        ):
            return  # fire-and-forget: no reply will come
        self._remember(header.request_id, cmd, now)

    def _remember(self, request_id: int, cmd: Optional[str], now: Optional[float]) -> None:
        table = self._outstanding
        if request_id not in table and len(table) >= MAX_OUTSTANDING:
            del table[next(iter(table))]
            self._emit("outstanding_overflow", 1)
        table[request_id] = (cmd, now)

    def _reply(self, msg: wire.MongoMessage, now: Optional[float]) -> None:
        emit = self._emit
        header = msg.header
        emit(header.op_name, 1)
        if header.op_code == wire.OP_COMPRESSED:
            original = wire.OP_NAMES.get(msg.original_op_code or 0, "op_unknown")
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


@implementer(IPlugin, ITimedStreamObserverFactory)
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


@implementer(IPlugin, IHintParser)
class MongoHintParser:
    """Hint parser: a first OP_MSG/OP_QUERY gives app_name, driver, database."""

    name = "mongo"
    protocol = "mongo"
    max_bytes = wire.HINT_MAX_BYTES

    def parse(self, data: bytes) -> ParseResult:
        return wire.parse_hint(data, self.max_bytes)


mongo_hint_parser = MongoHintParser()
mongo_observer_factory = MongoObserverFactory()
