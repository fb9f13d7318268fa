"""
The TLS ClientHello hint parser: peek at a passthrough connection's first
bytes and learn the SNI (for routing) and ALPN, versions and fingerprints
(for logs) without consuming or decrypting anything.

Sans-IO and stateless, as ``IHintParser`` requires: the data path calls
:func:`parse_client_hello` with everything the client has sent so far, after
every read, until it stops answering ``NEED_MORE``. So the answer must be a
function of the bytes alone (any TCP split gives the same result), the
common case (a whole ~500-byte hello in one read) must be cheap, and the
only exception that may escape is :class:`~tsgate.interfaces.HintParseError`.

The hello is reassembled across records (RFC 8446 §5.1 allows a handshake
message to be fragmented over several records of type 22) and capped at
:data:`MAX_CLIENT_HELLO` bytes of records: a hello that provably needs more
raises :class:`ClientHelloTooLarge` as soon as a length field says so, not
after buffering 16 KiB. Envoy's ``tls_inspector`` caps at 64 KiB; 16 KiB is
one maximum-size record and fits every real client, including post-quantum
key shares (~1.8 KiB).
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterator, Mapping
from typing import Optional, Union

import attrs
from zope.interface import implementer

from tsgate.interfaces import (
    NEED_MORE,
    Hint,
    HintParseError,
    HintTooLarge,
    IHintParser,
    NeedMore,
    NotMine,
)

__all__ = [
    "MAX_CLIENT_HELLO",
    "ClientHello",
    "ClientHelloTooLarge",
    "TlsHintParser",
    "hint_attributes",
    "is_grease",
    "ja3_string",
    "ja4_string",
    "parse_client_hello",
    "read_client_hello",
    "version_name",
]

#: Largest ClientHello, in bytes of the records that carry it, we buffer.
MAX_CLIENT_HELLO = 16384

_RECORD_HEADER = 5
_HANDSHAKE_HEADER = 4
_CONTENT_HANDSHAKE = 22
_HANDSHAKE_CLIENT_HELLO = 1
#: RFC 8446 §5.1: a plaintext record carries at most 2^14 bytes.
_MAX_RECORD = 16384

_EXT_SERVER_NAME = 0x0000
_EXT_SUPPORTED_GROUPS = 0x000A
_EXT_EC_POINT_FORMATS = 0x000B
_EXT_SIGNATURE_ALGORITHMS = 0x000D
_EXT_ALPN = 0x0010
_EXT_SUPPORTED_VERSIONS = 0x002B

_VERSION_NAMES = {
    0x0300: "SSLv3",
    0x0301: "TLSv1",
    0x0302: "TLSv1.1",
    0x0303: "TLSv1.2",
    0x0304: "TLSv1.3",
}
_JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2"}

#: Host names as they appear in certificates and Istio ``hosts``: LDH labels
#: (underscore tolerated, as resolvers do), an optional trailing dot.
_HOST_NAME = re.compile(rb"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")
_PRINTABLE_TOKEN = re.compile(rb"[\x21-\x2b\x2d-\x7e]+")  # printable ASCII but no comma
_ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class ClientHelloTooLarge(HintTooLarge):
    """
    The ClientHello needs more than the cap. A subclass so the data path can
    count ``client_hello_too_large`` apart from malformed hellos.
    """

    def __init__(self, message: str = "client hello too large") -> None:
        super().__init__(message)


@attrs.frozen
class ClientHello:
    """
    The fields of a ClientHello that routing, logs and fingerprints use, in
    the order the client sent them (GREASE values included: the fingerprint
    functions drop them, the record keeps what was on the wire).
    """

    #: Bytes of the records that carry the hello (the Hint's ``length``).
    length: int
    legacy_version: int
    cipher_suites: tuple[int, ...]
    #: Extension types in wire order.
    extensions: tuple[int, ...]
    #: Lower-cased, trailing dot stripped; None without a host_name entry.
    server_name: Optional[str] = None
    alpn: tuple[bytes, ...] = ()
    #: None when the extension is absent (distinct from present but empty).
    supported_versions: Optional[tuple[int, ...]] = None
    supported_groups: tuple[int, ...] = ()
    ec_point_formats: tuple[int, ...] = ()
    signature_algorithms: tuple[int, ...] = ()


#: RFC 8701 GREASE values: 0x0a0a, 0x1a1a ... 0xfafa.
_GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE values: 0x0a0a, 0x1a1a ... 0xfafa."""
    return value in _GREASE


def _no_grease(values: tuple[int, ...]) -> list[int]:
    return [v for v in values if v not in _GREASE]


def version_name(version: int) -> str:
    """``TLSv1.3`` for 0x0304 (OpenSSL's and Envoy's spelling); hex if unknown."""
    return _VERSION_NAMES.get(version) or f"0x{version:04x}"


def _too_large() -> ClientHelloTooLarge:
    return ClientHelloTooLarge("client hello too large")


def _check_record_header(data: bytes, pos: int, end: int) -> None:
    """Validate the record-header bytes at ``data[pos:end]`` (maybe partial)."""
    if data[pos] != _CONTENT_HANDSHAKE:
        raise HintParseError(
            f"record of content type {data[pos]} before the client hello was complete"
        )
    if pos + 1 < end and data[pos + 1] != 3:
        raise HintParseError(f"bad record version major {data[pos + 1]}")
    if pos + 2 < end and data[pos + 2] > 4:
        raise HintParseError(f"bad record version 0x03{data[pos + 2]:02x}")


def _reassemble(data: bytes, max_bytes: int) -> Union[NeedMore, NotMine, tuple[bytes, int]]:
    """
    Walk the records and return (handshake body, record bytes) once the
    whole ClientHello is there. Every check depends only on bytes already
    walked, in a fixed order, so a prefix never answers differently from
    the whole (except NEED_MORE).
    """
    n = len(data)
    if n == 0:
        return NEED_MORE
    first = data[0]
    if first != _CONTENT_HANDSHAKE:
        if first & 0x80:
            # SSLv2 record: 2-byte length with the high bit set, then the
            # message type (1 = CLIENT-HELLO). Wait for it so that the reason
            # does not depend on how the bytes were split.
            if n < 3:
                return NEED_MORE
            if data[2] == 1:
                return NotMine("sslv2 hello")
        return NotMine(f"not tls: first byte 0x{first:02x}")
    if n < 2:
        return NEED_MORE
    if data[1] != 3:
        return NotMine(f"not tls: record version major 0x{data[1]:02x}")

    # Fast path: the whole hello in the first record (nearly every client).
    if n >= _RECORD_HEADER + _HANDSHAKE_HEADER:
        rlen = (data[3] << 8) | data[4]
        hs_total = _HANDSHAKE_HEADER + ((data[6] << 16) | (data[7] << 8) | data[8])
        if (
            data[2] <= 4
            and data[5] == _HANDSHAKE_CLIENT_HELLO
            and rlen == hs_total
            and rlen <= _MAX_RECORD
            and _RECORD_HEADER + rlen <= max_bytes
        ):
            end = _RECORD_HEADER + rlen
            if n >= end:
                return data[_RECORD_HEADER + _HANDSHAKE_HEADER : end], end
            return NEED_MORE

    fragments: list[bytes] = []
    have = 0  # handshake bytes collected
    hs_total = -1  # handshake message length incl. its header, once known
    pos = 0
    while True:
        # Another record is needed: it takes at least a header and one byte.
        if pos + _RECORD_HEADER + 1 > max_bytes:
            raise _too_large()
        header_end = pos + _RECORD_HEADER
        if header_end > n:
            if pos < n:
                _check_record_header(data, pos, n)
            return NEED_MORE
        _check_record_header(data, pos, header_end)
        rlen = (data[pos + 3] << 8) | data[pos + 4]
        if rlen == 0:
            raise HintParseError("empty handshake record")
        if rlen > _MAX_RECORD:
            raise HintParseError(f"record length {rlen} exceeds 2^14")
        rec_end = header_end + rlen
        if rec_end > max_bytes:
            raise _too_large()
        fragment = data[header_end : min(rec_end, n)]
        fragments.append(fragment)
        have += len(fragment)
        if hs_total < 0 and have >= 1:
            hs_type = fragments[0][0]
            if hs_type != _HANDSHAKE_CLIENT_HELLO:
                raise HintParseError(f"handshake type {hs_type} is not a client hello")
            if have >= _HANDSHAKE_HEADER:
                head = b"".join(fragments)[:_HANDSHAKE_HEADER]
                hs_total = _HANDSHAKE_HEADER + int.from_bytes(head[1:4], "big")
        if hs_total >= 0:
            declared = have - len(fragment) + rlen  # handshake bytes this record brings
            if declared > hs_total:
                raise HintParseError("handshake record continues after the client hello")
            remaining = hs_total - declared
            if rec_end + (_RECORD_HEADER + remaining if remaining else 0) > max_bytes:
                raise _too_large()
        if rec_end > n:
            return NEED_MORE
        if hs_total >= 0 and have == hs_total:
            return b"".join(fragments)[_HANDSHAKE_HEADER:], rec_end
        pos = rec_end


def _u16_list(data: bytes, start: int, length: int, what: str) -> tuple[int, ...]:
    if length & 1:
        raise HintParseError(f"{what} list has an odd length")
    return struct.unpack_from(f">{length >> 1}H", data, start)


def _server_name(ext: bytes) -> Optional[str]:
    """RFC 6066 §3 ServerNameList; returns the host_name entry."""
    if len(ext) < 2:
        raise HintParseError("server_name extension too short")
    list_len = (ext[0] << 8) | ext[1]
    if list_len == 0 or list_len + 2 != len(ext):
        raise HintParseError("server_name list length does not match its extension")
    p = 2
    end = len(ext)
    host: Optional[bytes] = None
    while p < end:
        if p + 3 > end:
            raise HintParseError("server_name entry truncated")
        name_type = ext[p]
        name_len = (ext[p + 1] << 8) | ext[p + 2]
        p += 3
        if name_len == 0 or p + name_len > end:
            raise HintParseError("server_name entry length out of bounds")
        if name_type == 0:
            if host is not None:
                raise HintParseError("more than one host_name in server_name")
            host = ext[p : p + name_len]
        p += name_len
    if host is None:
        return None
    if len(host) > 255:
        raise HintParseError("server name longer than 255 bytes")
    if not _HOST_NAME.fullmatch(host):
        raise HintParseError("server name is not an ASCII host name")
    name = host.decode("ascii").lower()
    return name[:-1] if name.endswith(".") else name


def _alpn(ext: bytes) -> tuple[bytes, ...]:
    """RFC 7301 §3.1 ProtocolNameList: non-empty, names of 1..255 bytes."""
    if len(ext) < 2:
        raise HintParseError("alpn extension too short")
    list_len = (ext[0] << 8) | ext[1]
    if list_len == 0 or list_len + 2 != len(ext):
        raise HintParseError("alpn list length does not match its extension")
    names = []
    p = 2
    end = len(ext)
    while p < end:
        name_len = ext[p]
        p += 1
        if name_len == 0 or p + name_len > end:
            raise HintParseError("alpn protocol name length out of bounds")
        names.append(ext[p : p + name_len])
        p += name_len
    return tuple(names)


def _u8_prefixed(ext: bytes, what: str) -> tuple[int, int]:
    if len(ext) < 1 or ext[0] + 1 != len(ext):
        raise HintParseError(f"{what} length does not match its extension")
    return 1, ext[0]


def _u16_prefixed(ext: bytes, what: str) -> tuple[int, int]:
    if len(ext) < 2 or ((ext[0] << 8) | ext[1]) + 2 != len(ext):
        raise HintParseError(f"{what} length does not match its extension")
    return 2, len(ext) - 2


def _parse_body(body: bytes, length: int) -> ClientHello:
    """RFC 8446 §4.1.2 (and RFC 5246 §7.4.1.2, where extensions may be absent)."""
    end = len(body)
    if end < 2 + 32 + 1:
        raise HintParseError("client hello truncated")
    if body[0] != 3:
        raise HintParseError(f"bad client hello version 0x{body[0]:02x}{body[1]:02x}")
    legacy_version = (body[0] << 8) | body[1]
    p = 34
    sid_len = body[p]
    p += 1
    if sid_len > 32:
        raise HintParseError("session id longer than 32 bytes")
    p += sid_len
    if p + 2 > end:
        raise HintParseError("client hello truncated before cipher suites")
    cs_len = (body[p] << 8) | body[p + 1]
    p += 2
    if cs_len < 2 or p + cs_len > end:
        raise HintParseError("cipher suites length out of bounds")
    ciphers = _u16_list(body, p, cs_len, "cipher suites")
    p += cs_len
    if p + 1 > end:
        raise HintParseError("client hello truncated before compression methods")
    cm_len = body[p]
    p += 1
    if cm_len < 1 or p + cm_len > end:
        raise HintParseError("compression methods length out of bounds")
    p += cm_len

    fields: dict[str, object] = {}
    types: list[int] = []
    if p < end:
        if p + 2 > end:
            raise HintParseError("extensions length truncated")
        if ((body[p] << 8) | body[p + 1]) != end - p - 2:
            raise HintParseError("extensions length does not match the client hello")
        p += 2
        walked = _walk_extensions(body, p, end)
        if walked is not None:  # well formed (nearly every hello): parse what is used
            types = walked[0]
            for etype, start, stop in walked[1]:
                fields[_EXTENSION_PARSERS[etype]] = _parse_extension(etype, body[start:stop])
            p = end
        seen: set[int] = set()
        while p < end:  # else: the same walk, checking as it goes (the first error wins)
            if p + 4 > end:
                raise HintParseError("extension header truncated")
            etype = (body[p] << 8) | body[p + 1]
            elen = (body[p + 2] << 8) | body[p + 3]
            p += 4
            if p + elen > end:
                raise HintParseError(f"extension 0x{etype:04x} length out of bounds")
            if etype in seen:
                raise HintParseError(f"duplicate extension 0x{etype:04x}")
            seen.add(etype)
            types.append(etype)
            if etype in _EXTENSION_PARSERS:
                fields[_EXTENSION_PARSERS[etype]] = _parse_extension(etype, body[p : p + elen])
            p += elen
    return ClientHello(
        length=length,
        legacy_version=legacy_version,
        cipher_suites=ciphers,
        extensions=tuple(types),
        **fields,  # type: ignore[arg-type]
    )


_EXTENSION_HEADER = struct.Struct(">HH")


def _walk_extensions(
    body: bytes, p: int, end: int
) -> Optional[tuple[list[int], list[tuple[int, int, int]]]]:
    """
    The extension types in order and (type, start, stop) of those parsed, or
    None when a header runs past the end or a type repeats: then the checking
    walk in :func:`_parse_body` says which error comes first.
    """
    unpack = _EXTENSION_HEADER.unpack_from
    parsed = _EXTENSION_PARSERS
    types: list[int] = []
    wanted: list[tuple[int, int, int]] = []
    while p + 4 <= end:
        etype, elen = unpack(body, p)
        p += 4 + elen
        types.append(etype)
        if etype in parsed:
            wanted.append((etype, p - elen, p))
    if p != end or len(set(types)) != len(types):
        return None
    return types, wanted


_EXTENSION_PARSERS = {
    _EXT_SERVER_NAME: "server_name",
    _EXT_ALPN: "alpn",
    _EXT_SUPPORTED_VERSIONS: "supported_versions",
    _EXT_SUPPORTED_GROUPS: "supported_groups",
    _EXT_EC_POINT_FORMATS: "ec_point_formats",
    _EXT_SIGNATURE_ALGORITHMS: "signature_algorithms",
}


def _parse_extension(etype: int, ext: bytes) -> object:
    if etype == _EXT_SERVER_NAME:
        return _server_name(ext)
    if etype == _EXT_ALPN:
        return _alpn(ext)
    if etype == _EXT_SUPPORTED_VERSIONS:
        start, length = _u8_prefixed(ext, "supported_versions")
        if length < 2:
            raise HintParseError("supported_versions is empty")
        return _u16_list(ext, start, length, "supported_versions")
    if etype == _EXT_EC_POINT_FORMATS:
        start, length = _u8_prefixed(ext, "ec_point_formats")
        return tuple(ext[start:])
    what = "supported_groups" if etype == _EXT_SUPPORTED_GROUPS else "signature_algorithms"
    start, length = _u16_prefixed(ext, what)
    return _u16_list(ext, start, length, what)


def read_client_hello(
    data: bytes, max_bytes: int = MAX_CLIENT_HELLO
) -> Union[NeedMore, NotMine, ClientHello]:
    """
    The structured form of :func:`parse_client_hello`: ``NEED_MORE``,
    ``NotMine`` or the :class:`ClientHello`; raises only HintParseError
    (:class:`ClientHelloTooLarge` past ``max_bytes``).
    """
    data = bytes(data)
    try:
        found = _reassemble(data, max_bytes)
        if isinstance(found, (NeedMore, NotMine)):
            return found
        body, length = found
        return _parse_body(body, length)
    except HintParseError:
        raise
    except (IndexError, ValueError, struct.error) as e:  # pragma: no cover - a bug
        # Every bound is checked above; this keeps the one-error contract
        # even if a check is missing.
        raise HintParseError(f"malformed client hello ({type(e).__name__})") from e


def ja3_string(hello: ClientHello) -> str:
    """
    The JA3 string (salesforce/ja3): ``version,ciphers,extensions,groups,
    point_formats``, decimal values joined by ``-``, GREASE dropped, wire order.
    """
    return ",".join(
        (
            str(hello.legacy_version),
            "-".join(map(str, _no_grease(hello.cipher_suites))),
            "-".join(map(str, _no_grease(hello.extensions))),
            "-".join(map(str, _no_grease(hello.supported_groups))),
            "-".join(map(str, hello.ec_point_formats)),
        )
    )


def _sha256_12(text: str) -> str:
    if not text:
        return "000000000000"
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def _ja4_alpn(alpn: tuple[bytes, ...]) -> str:
    if not alpn:
        return "00"
    first = alpn[0]
    if first[0] in _ALNUM and first[-1] in _ALNUM:
        return chr(first[0]) + chr(first[-1])
    hexed = first.hex()
    return hexed[0] + hexed[-1]


def ja4_string(hello: ClientHello, transport: str = "t") -> str:
    """
    The JA4 fingerprint (FoxIO JA4 spec): ``t13d1516h2_<ciphers>_<extensions>``.
    ``transport`` is ``t`` for TLS over TCP, the only case tsgate sees.
    """
    ciphers = _no_grease(hello.cipher_suites)
    extensions = _no_grease(hello.extensions)
    versions = _no_grease(hello.supported_versions or ())
    version = max(versions) if versions else hello.legacy_version
    part_a = "".join(
        (
            transport,
            _JA4_VERSIONS.get(version, "00"),
            "d" if _EXT_SERVER_NAME in extensions else "i",
            f"{min(len(ciphers), 99):02d}",
            f"{min(len(extensions), 99):02d}",
            _ja4_alpn(hello.alpn),
        )
    )
    hex4 = "{:04x}".format
    part_b = _sha256_12(",".join(map(hex4, sorted(ciphers))))
    ext_list = ",".join(
        map(hex4, sorted(e for e in extensions if e != _EXT_SERVER_NAME and e != _EXT_ALPN))
    )
    sigs = ",".join(map(hex4, _no_grease(hello.signature_algorithms)))
    part_c = _sha256_12(f"{ext_list}_{sigs}" if sigs else ext_list)
    return f"{part_a}_{part_b}_{part_c}"


def _token(value: bytes) -> str:
    """An ALPN name as a log-safe token: itself if printable, else ``0x<hex>``."""
    if _PRINTABLE_TOKEN.fullmatch(value):
        return value.decode("ascii")
    return "0x" + value.hex()


_FINGERPRINTS = ("ja3", "ja3_hash", "ja4")


class TlsAttributes(Mapping[str, str]):
    """
    A ClientHello's Hint attributes, with the fingerprints made on first use.

    Routing needs only ``sni``; JA3/JA4 are for logs and cost about 30 µs of
    the 45 µs a hello takes to read, so they are computed when something
    (the access log, ``explain``) first asks for them, and never on a
    gateway that logs nothing.
    """

    __slots__ = ("_hello", "_values", "_described", "_fingerprinted")

    def __init__(self, hello: ClientHello) -> None:
        self._hello = hello
        # Routing reads ``sni`` (and asks whether there is an ``alpn``): the
        # other values are made on first use, as the fingerprints are.
        name = hello.server_name
        self._values: dict[str, str] = {"sni": name} if name is not None else {}
        self._described = False
        self._fingerprinted = False

    def _describe(self) -> None:
        hello = self._hello
        values = self._values
        if hello.alpn:
            values["alpn"] = ",".join(_token(name) for name in hello.alpn)
        versions = _no_grease(hello.supported_versions or ())
        values["versions"] = ",".join(
            version_name(v) for v in versions or [hello.legacy_version]
        )
        self._described = True

    def _fingerprint(self) -> None:
        ja3 = ja3_string(self._hello)
        self._values["ja3"] = ja3
        self._values["ja3_hash"] = hashlib.md5(
            ja3.encode("ascii"), usedforsecurity=False
        ).hexdigest()
        self._values["ja4"] = ja4_string(self._hello)
        self._fingerprinted = True

    def __getitem__(self, key: str) -> str:
        values = self._values
        if key in values:
            return values[key]
        if key != "sni":
            if not self._described:
                self._describe()
            if key in _FINGERPRINTS and not self._fingerprinted:
                self._fingerprint()
        return values[key]

    def __iter__(self) -> Iterator[str]:
        if not self._described:
            self._describe()
        yield from [k for k in self._values if k not in _FINGERPRINTS]
        yield from _FINGERPRINTS

    def __len__(self) -> int:
        if not self._described:
            self._describe()
        return len([k for k in self._values if k not in _FINGERPRINTS]) + len(_FINGERPRINTS)

    def __contains__(self, key: object) -> bool:
        if key in _FINGERPRINTS or key in self._values:
            return True
        if self._described:
            return False
        return key == "versions" or (key == "alpn" and bool(self._hello.alpn))

    def __repr__(self) -> str:
        return f"TlsAttributes({dict(self)!r})"


def hint_attributes(hello: ClientHello) -> dict[str, str]:
    """
    The Hint attributes: ``sni`` (only with a host_name), ``alpn`` (only with
    the extension; comma-joined), ``versions`` (comma-joined, from
    supported_versions, else the legacy version), ``ja3``, ``ja3_hash``,
    ``ja4``.
    """
    return dict(TlsAttributes(hello))


def parse_client_hello(
    data: bytes, max_bytes: int = MAX_CLIENT_HELLO
) -> Union[NeedMore, NotMine, Hint]:
    """
    Decide from a connection's first bytes: ``NEED_MORE``, ``NotMine`` (not
    TLS, or an SSLv2-style hello: reason ``"sslv2 hello"``) or a
    ``Hint(protocol="tls", attributes=..., length=<record bytes>)``.
    Raises only HintParseError (ClientHelloTooLarge past ``max_bytes``).
    """
    found = read_client_hello(data, max_bytes)
    if isinstance(found, ClientHello):
        return Hint(protocol="tls", attributes=TlsAttributes(found), length=found.length)
    return found


@implementer(IHintParser)
class TlsHintParser:
    """The ``tls`` hint parser, for registration as a plugin instance."""

    name = "tls"
    protocol = "tls"

    def __init__(self, max_bytes: int = MAX_CLIENT_HELLO) -> None:
        self.max_bytes = max_bytes

    def parse(self, data: bytes) -> Union[NeedMore, NotMine, Hint]:
        return parse_client_hello(data, self.max_bytes)
