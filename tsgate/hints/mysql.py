"""
MySQL / MariaDB client-server protocol: a passive observer.

Every MySQL packet is ``payload length (3 bytes, little endian) | sequence
id (1 byte) | payload``; a payload of 0xFFFFFF bytes continues in the next
packet. A connection goes:

1. the **server speaks first** with its greeting (protocol 10: server
   version, connection id, capability flags, auth plugin);
2. the client answers with a HandshakeResponse (user, database, auth
   plugin, connect attributes), or first with a 32-byte SSLRequest
   (``CLIENT_SSL``) after which TLS starts;
3. an authentication exchange ends with the server's OK (0x00) or ERR
   (0xFF) packet;
4. the command phase: each command is a client packet with sequence id 0
   whose first byte is the ``COM_*`` code; every reply packet has a higher
   sequence id, an ERR packet starting with 0xFF.

There is deliberately **no MySQL hint parser**: a hint parser decides from
the client's first bytes, and a MySQL client sends nothing until the server
has greeted it. Holding the connection to wait for client bytes would
deadlock it (never delay the greeting); the protocol can only be chosen by
configuration (``port.protocol: MYSQL`` or a ``mysql-`` port name), and the
observer learns the rest from the greeting and the response.
"""

from __future__ import annotations

from zope.interface import implementer

from tsgate.hints.stream import ByteQueue, ObserverBase, bounded_name
from tsgate.interfaces import DecodeError, Emit, IStreamObserver, IStreamObserverFactory


class MysqlDecodeError(DecodeError):
    """The bytes are not a well-formed MySQL packet; the observer goes quiet."""

CLIENT_CONNECT_WITH_DB = 0x00000008
CLIENT_COMPRESS = 0x00000020
CLIENT_PROTOCOL_41 = 0x00000200
CLIENT_SSL = 0x00000800
CLIENT_SECURE_CONNECTION = 0x00008000
CLIENT_PLUGIN_AUTH = 0x00080000
CLIENT_CONNECT_ATTRS = 0x00100000
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 0x00200000

#: Command codes (MySQL's ``enum_server_command``; 0xFA is MariaDB's bulk execute).
COMMANDS = {
    0x00: "com_sleep", 0x01: "com_quit", 0x02: "com_init_db", 0x03: "com_query",
    0x04: "com_field_list", 0x05: "com_create_db", 0x06: "com_drop_db", 0x07: "com_refresh",
    0x08: "com_shutdown", 0x09: "com_statistics", 0x0A: "com_process_info",
    0x0B: "com_connect", 0x0C: "com_process_kill", 0x0D: "com_debug", 0x0E: "com_ping",
    0x0F: "com_time", 0x10: "com_delayed_insert", 0x11: "com_change_user",
    0x12: "com_binlog_dump", 0x13: "com_table_dump", 0x14: "com_connect_out",
    0x15: "com_register_slave", 0x16: "com_stmt_prepare", 0x17: "com_stmt_execute",
    0x18: "com_stmt_send_long_data", 0x19: "com_stmt_close", 0x1A: "com_stmt_reset",
    0x1B: "com_set_option", 0x1C: "com_stmt_fetch", 0x1D: "com_daemon",
    0x1E: "com_binlog_dump_gtid", 0x1F: "com_reset_connection", 0xFA: "com_stmt_bulk_execute",
}
COM_CHANGE_USER = 0x11
_COMMAND_COUNTERS = {code: f"command.{name}" for code, name in COMMANDS.items()}

MAX_PAYLOAD = 0xFFFFFF
#: Largest greeting or handshake response we decode whole (real ones are
#: ~100 bytes and under 1 KiB with connect attributes).
HANDSHAKE_CAP = 16 * 1024
#: What we read of any other packet: an ERR's code and SQLSTATE.
PREFIX = 9

_GREETING, _HANDSHAKE, _AUTH, _COMMAND = range(4)


class _Reader:
    """Cursor over one decoded payload; MysqlDecodeError when it runs out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MysqlDecodeError("MySQL packet shorter than its fields")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def cstring(self) -> bytes:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise MysqlDecodeError("MySQL string without NUL")
        out = self.data[self.pos : end]
        self.pos = end + 1
        return out

    def lenenc_int(self) -> int:
        first = self.uint(1)
        if first < 0xFB:
            return first
        if first == 0xFC:
            return self.uint(2)
        if first == 0xFD:
            return self.uint(3)
        if first == 0xFE:
            return self.uint(8)
        raise MysqlDecodeError(f"bad MySQL length-encoded integer 0x{first:02x}")

    def lenenc_str(self) -> bytes:
        return self.take(self.lenenc_int())

    def at_end(self) -> bool:
        return self.pos >= len(self.data)


def _text(raw: bytes, limit: int = 128) -> str:
    return raw[:limit].decode("utf-8", "replace")


@implementer(IStreamObserver)
class MysqlObserver(ObserverBase):
    """
    Counters, after Envoy's mysql_proxy: ``sessions``, ``login_attempts``,
    ``login_failures``, ``upgraded_to_ssl``, ``auth_switch_request``,
    ``commands``, ``command.com_query`` (each ``COM_*`` by name),
    ``errors``, ``errors.sqlstate_class.<XX>``, ``sessions_compressed``.
    Attributes: ``server_version``, ``connection_id``, ``capabilities``
    (server flags, hex), ``user``, ``database``, ``tls`` (``true`` when the
    client asked for TLS), ``app_name`` (connect attribute ``program_name``),
    ``client`` (``_client_name``).
    """

    def __init__(self, emit: Emit) -> None:
        super().__init__(emit)
        self._phase = _GREETING
        self._server_caps = 0
        self._client_caps = 0
        self._continued = {"c": False, "s": False}

    def _client(self, data: bytes) -> None:
        self._packets(self.client_buf, data, "c")

    def _server(self, data: bytes) -> None:
        self._packets(self.server_buf, data, "s")

    def _packets(self, buf: ByteQueue, data: bytes, side: str) -> None:
        buf.feed(data)
        b = buf.snapshot()
        n = len(b)
        pos = 0
        handle = self._client_packet if side == "c" else self._server_packet
        try:
            while not self.quiet and n - pos >= 4:
                length = b[pos] | b[pos + 1] << 8 | b[pos + 2] << 16
                whole = self._needs_whole(side)
                if whole and length > HANDSHAKE_CAP:
                    raise MysqlDecodeError(f"MySQL handshake packet of {length} bytes")
                want = length if whole else min(length, PREFIX)
                if n - pos < 4 + want:
                    break
                seq = b[pos + 3]
                payload = b[pos + 4 : pos + 4 + want]
                pos += 4 + length
                continued = self._continued[side]
                self._continued[side] = length == MAX_PAYLOAD
                if not continued:
                    handle(seq, payload)
        finally:
            if not self.quiet:
                buf.discard(pos)

    def _needs_whole(self, side: str) -> bool:
        return (side == "s" and self._phase == _GREETING) or (
            side == "c" and self._phase == _HANDSHAKE
        )

    # server -> client

    def _server_packet(self, seq: int, payload: bytes) -> None:
        first = payload[0] if payload else -1
        if self._phase == _GREETING:
            if first == 0xFF:
                self._error(payload, sqlstate=False)
                self.go_quiet()
                return
            self._greeting(payload)
            self._phase = _HANDSHAKE
        elif self._phase == _HANDSHAKE:
            raise MysqlDecodeError("MySQL server packet before the client's handshake response")
        elif self._phase == _AUTH:
            if first == 0x00:
                self._phase = _COMMAND
                if self._client_caps & self._server_caps & CLIENT_COMPRESS:
                    # Compressed packets have another framing; not decoded.
                    self._emit("sessions_compressed", 1)
                    self.go_quiet()
            elif first == 0xFF:
                self._emit("login_failures", 1)
                self._error(payload)
            elif first == 0xFE:
                self._emit("auth_switch_request", 1)
        elif first == 0xFF:
            self._error(payload)

    def _greeting(self, payload: bytes) -> None:
        r = _Reader(payload)
        version = r.uint(1)
        if version != 10:
            raise MysqlDecodeError(f"MySQL handshake protocol {version}, not 10")
        server_version = r.cstring()
        connection_id = r.uint(4)
        r.take(8 + 1)  # auth-plugin-data part 1 (a nonce) and a filler
        caps = r.uint(2)
        if not r.at_end():
            r.take(1 + 2)  # character set, status flags
            caps |= r.uint(2) << 16
        self._server_caps = caps
        self._attributes.update(
            server_version=_text(server_version),
            connection_id=str(connection_id),
            capabilities=f"0x{caps:08x}",
        )

    def _error(self, payload: bytes, sqlstate: bool = True) -> None:
        self._count("errors")
        # ERR: 0xFF, code (2 bytes), then with CLIENT_PROTOCOL_41 '#' + SQLSTATE.
        if sqlstate and len(payload) >= 9 and payload[3:4] == b"#":
            state = payload[4:9].decode("ascii", "replace")
            if state.isalnum():
                self._count(f"errors.sqlstate_class.{bounded_name(state[:2])}")
                self._attributes["last_error"] = state

    # client -> server

    def _client_packet(self, seq: int, payload: bytes) -> None:
        if self._phase == _GREETING:
            raise MysqlDecodeError("MySQL client spoke before the server's greeting")
        if self._phase == _HANDSHAKE:
            self._handshake_response(payload)
        elif self._phase == _COMMAND and seq == 0 and payload:
            self._count("commands")
            self._count(_COMMAND_COUNTERS.get(payload[0], "command.unknown"))
            if payload[0] == COM_CHANGE_USER:
                self._count("login_attempts")
                self._phase = _AUTH
        # In the auth phase client packets are auth data; with seq > 0 in the
        # command phase they are LOCAL INFILE contents: nothing to count.

    def _handshake_response(self, payload: bytes) -> None:
        r = _Reader(payload)
        caps = r.uint(2)
        if not caps & CLIENT_PROTOCOL_41:
            raise MysqlDecodeError("MySQL pre-4.1 handshake response")
        caps |= r.uint(2) << 16
        self._client_caps = caps
        r.take(4 + 1 + 23)  # max packet size, character set, filler
        self._emit("sessions", 1)
        if caps & CLIENT_SSL:
            self._attributes["tls"] = "true"
            if r.at_end():  # the 32-byte SSLRequest: TLS starts now
                self._emit("upgraded_to_ssl", 1)
                self.go_quiet()
                return
        else:
            self._attributes["tls"] = "false"
        self._emit("login_attempts", 1)
        self._attributes["user"] = _text(r.cstring())
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            r.lenenc_str()
        elif caps & CLIENT_SECURE_CONNECTION:
            r.take(r.uint(1))
        else:
            r.cstring()
        if caps & CLIENT_CONNECT_WITH_DB and not r.at_end():
            self._attributes["database"] = _text(r.cstring())
        if caps & CLIENT_PLUGIN_AUTH and not r.at_end():
            r.cstring()
        if caps & CLIENT_CONNECT_ATTRS and not r.at_end():
            attrs = _Reader(r.lenenc_str())
            while not attrs.at_end():
                key, value = attrs.lenenc_str(), attrs.lenenc_str()
                if key == b"program_name":
                    self._attributes["app_name"] = _text(value)
                elif key == b"_client_name":
                    self._attributes["client"] = _text(value)
        self._phase = _AUTH

    def _release(self) -> None:
        super()._release()
        self._continued = {"c": False, "s": False}


__all__ = ["COMMANDS", "MysqlObserver"]


@implementer(IStreamObserverFactory)
class MysqlObserverFactory:
    """Counts MySQL logins, COM_* commands and ERR packets per connection."""

    name = "mysql"
    protocol = "mysql"
    istio_protocols = ("MYSQL",)
    port_name_prefixes = ("mysql", "mariadb")

    def new_observer(self, emit: Emit) -> IStreamObserver:
        return MysqlObserver(emit)
