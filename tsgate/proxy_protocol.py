"""
HAProxy's PROXY protocol, both ways.

*In* (a listener stage before inspection): ``tsgate.io/proxy-protocol:
"required" | "optional"`` on a Gateway makes its listeners read a v1 or v2
header first; ``tsgate.io/proxy-protocol-trusted-cidrs`` lists the peers
allowed to send one. :class:`HeaderReader` is fed the first client bytes and
answers :data:`NEED_MORE`, a :class:`Header` (with the bytes after it), or
raises :class:`ProxyHeaderError`; parsing is Twisted's
``twisted.protocols.haproxy`` V1Parser/V2Parser, with the address checks they
leave out (a v1 address must be an IP literal of its family).

*Out*: :func:`encode_v1` / :func:`encode_v2` build the header sent to an
upstream whose DestinationRule sets ``trafficPolicy.proxyProtocol``.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Sequence
from typing import Any, Optional, Union

import attrs
from twisted.logger import Logger
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser

MODE = "tsgate.io/proxy-protocol"
TRUSTED_CIDRS = "tsgate.io/proxy-protocol-trusted-cidrs"
REQUIRED = "required"
OPTIONAL = "optional"

log = Logger(namespace="tsgate.proxy_protocol")

V1_PREFIX = b"PROXY "
V2_PREFIX = V2Parser.PREFIX
#: a v1 header is at most 107 bytes with its CRLF
V1_MAX = 107
#: v2: 16 fixed bytes plus at most 65535 of addresses and TLVs; we accept TLVs
#: up to this much (HAProxy sends a few dozen bytes)
V2_MAX = 16 + 4096


class ProxyHeaderError(Exception):
    """Why a PROXY header was refused (the connection is closed, counted, logged)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        #: a short token for counters and the access log
        self.reason = reason


@attrs.frozen
class Header:
    """A parsed header: ``source``/``destination`` are (ip, port), None for LOCAL/UNKNOWN."""

    version: int
    source: Optional[tuple[str, int]]
    destination: Optional[tuple[str, int]]
    #: client bytes that followed the header
    rest: bytes = b""


class _NeedMore:
    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE = _NeedMore()


def parse_mode(value: str) -> str:
    """``required`` or ``optional`` (``true`` is taken as ``required``)."""
    mode = value.strip().lower()
    if mode == "true":
        return REQUIRED
    if mode not in (REQUIRED, OPTIONAL):
        raise ValueError(f"{value!r} must be \"required\" or \"optional\"")
    return mode


def parse_cidrs(value: str) -> tuple[Union[ipaddress.IPv4Network, ipaddress.IPv6Network], ...]:
    networks = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an address or CIDR (e.g. 10.0.0.0/8)") from None
    if not networks:
        raise ValueError("empty: give CIDRs separated by commas, e.g. 10.0.0.0/8,127.0.0.1/32")
    return tuple(networks)


@attrs.frozen
class ProxyProtocolIn:
    """A listener's PROXY-in settings; ``trusted`` empty = any peer may send a header."""

    mode: str
    trusted: tuple[Union[ipaddress.IPv4Network, ipaddress.IPv6Network], ...] = ()

    def trusts(self, peer_ip: str) -> bool:
        if not self.trusted:
            return True
        try:
            address = ipaddress.ip_address(peer_ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.trusted)


def listener_setting(annotations: Sequence[tuple[str, str]]) -> Optional[ProxyProtocolIn]:
    """The PROXY-in settings of a listener's tsgate.io/ annotations (None: off)."""
    values = dict(annotations)
    if MODE not in values:
        return None
    try:
        mode = parse_mode(values[MODE])
        trusted = parse_cidrs(values[TRUSTED_CIDRS]) if TRUSTED_CIDRS in values else ()
    except ValueError:
        return None  # refused at load time
    return ProxyProtocolIn(mode, trusted)


def _address(addr: Any, family: str) -> tuple[str, int]:
    host = str(addr.host)
    port = int(addr.port)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ProxyHeaderError("malformed", f"address {host!r} is not an IP literal") from None
    if (family == "TCP4") != (ip.version == 4):
        raise ProxyHeaderError("malformed", f"address {host} is not {family}")
    if not 0 <= port <= 65535:
        raise ProxyHeaderError("malformed", f"port {port} out of range")
    return (str(ip), port)


class HeaderReader:
    """Sans-IO reader of one PROXY header at the start of a connection."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> Union[_NeedMore, Header, None]:
        """
        Add client bytes. Returns NEED_MORE, a Header, or None when the bytes
        cannot be the start of a PROXY header (no header; the caller decides
        whether that is allowed, and replays ``self.buffer``).
        """
        self.buffer += data
        buf = self.buffer
        if len(buf) < len(V2_PREFIX) and V2_PREFIX.startswith(buf):
            return NEED_MORE
        if buf.startswith(V2_PREFIX):
            return self._v2(buf)
        if len(buf) < len(V1_PREFIX) and V1_PREFIX.startswith(buf):
            return NEED_MORE
        if buf.startswith(V1_PREFIX):
            return self._v1(buf)
        return None

    def _v1(self, buf: bytes) -> Union[_NeedMore, Header]:
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) >= V1_MAX:
                raise ProxyHeaderError("malformed", "PROXY v1 header longer than 107 bytes")
            return NEED_MORE
        if end + 2 > V1_MAX:
            raise ProxyHeaderError("malformed", "PROXY v1 header longer than 107 bytes")
        line, rest = buf[:end], buf[end + 2:]
        if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
            return Header(1, None, None, rest)
        try:
            info = V1Parser.parse(line)
        except (InvalidProxyHeader, ValueError) as exc:
            raise ProxyHeaderError("malformed", f"bad PROXY v1 header {line[:60]!r}: "
                                   f"{type(exc).__name__}") from None
        if info.source is None:  # PROXY UNKNOWN
            return Header(1, None, None, rest)
        family = line.split(b" ")[1].decode()
        return Header(1, _address(info.source, family), _address(info.destination, family),
                      rest)

    def _v2(self, buf: bytes) -> Union[_NeedMore, Header]:
        if len(buf) < 16:
            return NEED_MORE
        size = 16 + struct.unpack("!H", buf[14:16])[0]
        if size > V2_MAX:
            raise ProxyHeaderError("malformed", f"PROXY v2 header of {size} bytes is too long")
        if len(buf) < size:
            return NEED_MORE
        header, rest = buf[:size], buf[size:]
        if header[12] >> 4 != 2:
            raise ProxyHeaderError("malformed", f"PROXY v2 version {header[12] >> 4}")
        try:
            info = V2Parser.parse(header)
        except (InvalidProxyHeader, ValueError, KeyError, struct.error) as exc:
            raise ProxyHeaderError("malformed", "bad PROXY v2 header: "
                                   f"{type(exc).__name__}") from None
        source, destination = info.source, info.destination
        if source is None or not hasattr(source, "port"):  # LOCAL, UNSPEC or UNIX
            return Header(2, None, None, rest)
        family = "TCP4" if header[13] >> 4 == 1 else "TCP6"
        return Header(2, _address(source, family), _address(destination, family), rest)


# -------------------------------------------------------------------- out


def _family(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def encode_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """``PROXY TCP4 src dst sport dport\\r\\n`` (``PROXY UNKNOWN`` if the families differ)."""
    src, dst = _unmap(source[0]), _unmap(destination[0])
    if _family(src) != _family(dst):
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP4" if _family(src) == 4 else "TCP6"
    return f"PROXY {proto} {src} {dst} {source[1]} {destination[1]}\r\n".encode("ascii")


def encode_v2(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """The binary v2 header, command PROXY over TCP (LOCAL if the families differ)."""
    src, dst = _unmap(source[0]), _unmap(destination[0])
    if _family(src) != _family(dst):
        return V2_PREFIX + b"\x20\x00\x00\x00"
    if _family(src) == 4:
        body = socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
        fam = 0x11
    else:
        body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        fam = 0x21
    body += struct.pack("!HH", source[1], destination[1])
    return V2_PREFIX + bytes((0x21, fam)) + struct.pack("!H", len(body)) + body


def encode(version: str, source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    return encode_v2(source, destination) if version == "V2" else encode_v1(source, destination)


def _unmap(ip: str) -> str:
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


# ------------------------------------------------------------ pipeline stages


def _host_port(text: str) -> Optional[tuple[str, int]]:
    """``1.2.3.4:5`` / ``[::1]:5`` -> (host, port); None for anything else."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _format(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ProxyHeaderStage:
    """
    The listener stage of ``tsgate.io/proxy-protocol`` (tsgate.proxy.stages.
    ListenerStage): one per listener, nothing kept between connections. The
    header's source becomes ``conn.remote_address`` (the access log's
    downstream_remote_address, consistent hashing, PROXY out), its
    destination the downstream_local_address; the socket peer stays
    ``conn.peer_address``.
    """

    name = "proxy_protocol"

    def __init__(self, setting: ProxyProtocolIn) -> None:
        self.setting = setting

    def _peer_ip(self, conn: Any) -> str:
        peer = _host_port(conn.peer_address)
        return peer[0] if peer is not None else ""

    def accepted(self, conn: Any) -> Any:
        """An untrusted peer on a ``required`` listener is refused at once."""
        if self.setting.mode == REQUIRED and not self.setting.trusts(self._peer_ip(conn)):
            return self._refuse(conn, "untrusted",
                                "peer not in tsgate.io/proxy-protocol-trusted-cidrs")
        return None

    def feed(self, conn: Any, data: bytes) -> Any:
        from tsgate.proxy.stages import NEED_MORE as STAGE_NEED_MORE

        reader = HeaderReader()
        try:
            result = reader.feed(data)
        except ProxyHeaderError as exc:
            return self._refuse(conn, exc.reason, str(exc))
        if result is NEED_MORE:
            return STAGE_NEED_MORE
        key = conn.runtime.stats_key
        if result is None:
            if self.setting.mode == REQUIRED:
                return self._refuse(conn, "not_found_disallowed", "no PROXY header")
            conn.ctx.stats.inc_key("listener.proxy_proto.not_found_allowed", key)
            return 0
        assert isinstance(result, Header)
        if not self.setting.trusts(self._peer_ip(conn)):
            return self._refuse(conn, "untrusted", "PROXY header from a peer not in "
                                "tsgate.io/proxy-protocol-trusted-cidrs")
        conn.ctx.stats.inc_key(f"listener.proxy_proto.versions.v{result.version}.found", key)
        if result.source is not None and result.destination is not None:
            conn.remote_address = _format(result.source)  # the record writes it at close
            conn.record.downstream_local_address = _format(result.destination)
        return len(data) - len(result.rest)

    def timed_out(self, conn: Any) -> Any:
        """No complete header in time: refused, unless optional and the client sent nothing."""
        if self.setting.mode == REQUIRED or conn.buffer:
            return self._refuse(conn, "timeout", "no complete PROXY header in time")
        conn.ctx.stats.inc_key("listener.proxy_proto.not_found_allowed", conn.runtime.stats_key)
        return None

    def _refuse(self, conn: Any, reason: str, detail: str) -> Any:
        from tsgate.proxy.stages import Ending

        message = (f"listener {conn.listener.name}: PROXY protocol refused from "
                   f"{conn.peer_address}: {detail}")
        log.warn("{message}", message=message)
        conn.ctx.error(message)
        conn.ctx.stats.inc_key("listener.downstream_cx_proxy_proto_error", conn.runtime.stats_key)
        return Ending(termination=f"proxy_protocol_{reason}", why=f"PROXY protocol {reason}",
                      counter=(f"listener.proxy_proto.{reason}", conn.runtime.stats_key))


def proxy_header_out(conn: Any, transport: Any) -> None:
    """
    The upstream stage of ``trafficPolicy.proxyProtocol`` (and of
    ``tcpKeepalive``, which also acts on the fresh upstream socket): send the
    header with the client (``conn.remote_address``) and the address it
    reached (the PROXY-in destination, else our listening socket).
    """
    cluster = conn.cluster
    policy = getattr(cluster, "policy", None)
    if policy is None:
        return None
    if policy.keepalive is not None:
        set_keepalive(transport, policy.keepalive)
    version = policy.proxy_protocol
    if not version:
        return None
    client = _host_port(conn.remote_address)
    local = _host_port(conn.record.downstream_local_address)
    if local is None:
        host = conn.transport.getHost()
        local = (getattr(host, "host", ""), getattr(host, "port", 0))
    try:
        assert client is not None
        header = encode(version, client, local)
    except (AssertionError, ValueError):  # not an IP socket (unix): LOCAL / UNKNOWN
        header = V2_PREFIX + b"\x20\x00\x00\x00" if version == "V2" else b"PROXY UNKNOWN\r\n"
    transport.write(header)
    return None


def set_keepalive(transport: Any, keepalive: Any) -> None:
    """SO_KEEPALIVE and Linux's TCP_KEEPIDLE/INTVL/CNT on an upstream socket (``ss -o``)."""
    sock = getattr(transport, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in ((getattr(socket, "TCP_KEEPIDLE", None), keepalive.time),
                              (getattr(socket, "TCP_KEEPINTVL", None), keepalive.interval),
                              (getattr(socket, "TCP_KEEPCNT", None), keepalive.probes)):
            if option is not None and value is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, max(1, int(value)))
    except OSError:
        pass


def stage_provider(listener: Any) -> Any:
    """The StageProvider (tsgate.proxy.stages) of PROXY in, PROXY out and keepalive."""
    from tsgate.proxy.stages import Stages

    setting = listener_setting(listener.annotations)
    listener_stages = (ProxyHeaderStage(setting),) if setting is not None else ()
    return Stages(listener=listener_stages, upstream=(proxy_header_out,))
