"""
Named ClientHello samples for the TLS hint parser's tests.

Real samples are files captured from real clients by
``tests/data/tls/capture.py`` (see ``samples.json`` there for the command
behind each). Derived samples are built here from real ones, each by a small
function that says what it changes, so a broken sample is never a typo in a
hex string. The helpers re-encode records and extensions with their own
minimal code (not the parser's), so a parser bug cannot hide in both.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "tls"

#: The real TLS samples (all ClientHellos) and the real not-TLS ones.
REAL_HELLOS = (
    "valid_sni_python",
    "no_sni",
    "alpn_h2",
    "python_tls12",
    "openssl_sni",
    "openssl_no_sni",
    "openssl_alpn",
    "openssl_tls12",
    "openssl_tls13",
    "openssl_trailing_dot",
    "valid_sni_curl",
    "curl_tls12",
)
REAL_NOT_TLS = ("not_tls_http", "not_tls_postgres_sslrequest", "not_tls_ssh")


def load(name: str) -> bytes:
    """A captured sample's bytes."""
    return (DATA / f"{name}.bin").read_bytes()


def manifest() -> dict[str, dict[str, object]]:
    """What ``capture.py`` recorded about each sample."""
    data: dict[str, dict[str, object]] = json.loads((DATA / "samples.json").read_text())
    return data


def trace(name: str) -> str:
    """OpenSSL's ``-trace`` decoding of an openssl sample's hello."""
    return (DATA / f"{name}.trace.txt").read_text()


# --- record and handshake surgery -------------------------------------------


def split_single_record(hello: bytes) -> tuple[bytes, bytes]:
    """
    (record header, handshake message) of a hello sent in one record, as
    every real client here does; asserts that it is so.
    """
    assert hello[0] == 22, "not a handshake record"
    length = struct.unpack(">H", hello[3:5])[0]
    assert len(hello) == 5 + length, "not exactly one record"
    return hello[:5], hello[5:]


def records(message: bytes, sizes: list[int], version: bytes = b"\x03\x01") -> bytes:
    """
    ``message`` (a handshake message) cut into consecutive records of type 22
    whose fragment sizes cycle through ``sizes``: the fragmentation RFC 8446
    §5.1 allows and a few clients (and middleboxes) do.
    """
    out = []
    pos = 0
    turn = 0
    while pos < len(message):
        size = sizes[turn % len(sizes)]
        turn += 1
        fragment = message[pos : pos + size]
        pos += size
        out.append(b"\x16" + version + struct.pack(">H", len(fragment)) + fragment)
    return b"".join(out)


def fragmented(name: str, sizes: list[int]) -> bytes:
    """A real sample re-sent as several records (see :func:`records`)."""
    header, message = split_single_record(load(name))
    return records(message, sizes, header[1:3])


def _hello_parts(message: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Split a ClientHello handshake message into (fixed part, extensions)."""
    body = message[4:]
    p = 34
    p += 1 + body[p]  # session id
    p += 2 + struct.unpack(">H", body[p : p + 2])[0]  # cipher suites
    p += 1 + body[p]  # compression methods
    fixed = body[:p]
    total = struct.unpack(">H", body[p : p + 2])[0]
    p += 2
    assert p + total == len(body)
    extensions = []
    while p < len(body):
        etype, elen = struct.unpack(">HH", body[p : p + 4])
        extensions.append((etype, body[p + 4 : p + 4 + elen]))
        p += 4 + elen
    return fixed, extensions


def _build_message(fixed: bytes, extensions: list[tuple[int, bytes]]) -> bytes:
    block = b"".join(struct.pack(">HH", t, len(d)) + d for t, d in extensions)
    body = fixed + struct.pack(">H", len(block)) + block
    return b"\x01" + len(body).to_bytes(3, "big") + body


def with_extensions(name: str, change) -> bytes:  # type: ignore[no-untyped-def]
    """
    A real sample re-encoded with ``change(extensions) -> extensions`` applied
    (a list of (type, data)); all enclosing lengths are recomputed, and the
    message is split into records of at most 2^14 bytes.
    """
    header, message = split_single_record(load(name))
    fixed, extensions = _hello_parts(message)
    return records(_build_message(fixed, change(list(extensions))), [16384], header[1:3])


def padded(name: str, total: int) -> bytes:
    """
    A real hello grown with an RFC 7685 padding extension (21) until its
    records take exactly ``total`` bytes (records of at most 2^14 bytes).
    """
    header, message = split_single_record(load(name))
    fixed, extensions = _hello_parts(message)
    for pad in range(total):
        message = _build_message(fixed, [*extensions, (21, bytes(pad))])
        wire = records(message, [16384], header[1:3])
        if len(wire) >= total:
            assert len(wire) == total, "no padding gives exactly that size"
            return wire
    raise AssertionError("total smaller than the sample")


def too_large(name: str = "openssl_sni", total: int = 17000) -> bytes:
    """A real hello padded past the 16 KiB cap (see :func:`padded`)."""
    return padded(name, total)


def sni_extension(*entries: tuple[int, bytes]) -> bytes:
    """An RFC 6066 server_name extension body with the given (type, name)s."""
    names = b"".join(bytes([t]) + struct.pack(">H", len(n)) + n for t, n in entries)
    return struct.pack(">H", len(names)) + names


def replace_extension(name: str, etype: int, data: bytes) -> bytes:
    """A real sample with extension ``etype``'s body replaced by ``data``."""
    return with_extensions(name, lambda exts: [(t, data if t == etype else d) for t, d in exts])


def duplicate_sni(name: str = "openssl_sni") -> bytes:
    """A real sample carrying a second server_name extension."""
    return with_extensions(name, lambda exts: [*exts, (0, sni_extension((0, b"other.test")))])


def bad_extension_length(name: str = "openssl_sni") -> bytes:
    """The first extension's length claims more bytes than the hello holds."""
    header, message = split_single_record(load(name))
    fixed, _ = _hello_parts(message)
    first_ext = 5 + 4 + len(fixed) + 2  # record + handshake header + fixed + ext total
    data = bytearray(load(name))
    data[first_ext + 2 : first_ext + 4] = b"\xff\xf0"
    return bytes(data)


def bad_extensions_total(name: str = "openssl_sni", delta: int = 1) -> bytes:
    """The extensions block length is off by ``delta`` from what follows it."""
    header, message = split_single_record(load(name))
    fixed, _ = _hello_parts(message)
    at = 5 + 4 + len(fixed)
    data = bytearray(load(name))
    total = struct.unpack(">H", data[at : at + 2])[0] + delta
    data[at : at + 2] = struct.pack(">H", total)
    return bytes(data)


def truncated_record(name: str = "openssl_sni", cut: int = 10) -> bytes:
    """
    The hello's last ``cut`` bytes dropped and the record and handshake
    lengths shrunk to match: a complete record whose hello is cut short
    inside (its extensions block claims more than remains).
    """
    header, message = split_single_record(load(name))
    message = message[:-cut]
    message = message[:1] + (len(message) - 4).to_bytes(3, "big") + message[4:]
    return records(message, [16384], header[1:3])


def truncated(name: str = "openssl_sni", cut: int = 10) -> bytes:
    """The stream simply stops ``cut`` bytes early (the client is slow)."""
    return load(name)[:-cut]


def sslv2_hello(name: str = "openssl_tls12") -> bytes:
    """
    An SSLv2-compatible CLIENT-HELLO (RFC 5246 appendix E.2) offering the
    real sample's cipher suites, as pre-2010 clients sent: 2-byte header with
    the high bit set, msg_type 1, version 3.1, 3-byte cipher specs.
    """
    _, message = split_single_record(load(name))
    body = message[4:]
    p = 35 + body[34]
    cs_len = struct.unpack(">H", body[p : p + 2])[0]
    suites = body[p + 2 : p + 2 + cs_len]
    specs = b"".join(b"\x00" + suites[i : i + 2] for i in range(0, len(suites), 2))
    challenge = bytes(range(16))
    hello = b"\x01\x03\x01" + struct.pack(">HHH", len(specs), 0, len(challenge)) + specs
    hello += challenge
    return struct.pack(">H", 0x8000 | len(hello)) + hello


def with_record_bytes(name: str, offset: int, value: bytes) -> bytes:
    """A real sample with ``value`` written at ``offset``."""
    data = bytearray(load(name))
    data[offset : offset + len(value)] = value
    return bytes(data)


def with_grease(name: str) -> bytes:
    """
    A real sample with GREASE values (RFC 8701) added where browsers put
    them: first cipher suite, an empty first extension, first supported
    group and first supported version. JA3/JA4 must not change.
    """
    header, message = split_single_record(load(name))
    fixed, extensions = _hello_parts(message)
    p = 35 + fixed[34]
    cs_len = struct.unpack(">H", fixed[p : p + 2])[0]
    fixed = fixed[:p] + struct.pack(">HH", cs_len + 2, 0x0A0A) + fixed[p + 2 :]
    changed: list[tuple[int, bytes]] = [(0x1A1A, b"")]
    for etype, data in extensions:
        if etype == 10:  # supported_groups: u16 length, u16 list
            data = struct.pack(">HH", len(data), 0x3A3A) + data[2:]
        elif etype == 43:  # supported_versions: u8 length, u16 list
            data = bytes([len(data) + 1]) + b"\x4a\x4a" + data[1:]
        changed.append((etype, data))
    return records(_build_message(fixed, changed), [16384], header[1:3])


# --- OpenSSL's -trace output, as an independent decoding -----------------------


def _hex_dump_bytes(lines: list[str]) -> bytes:
    """Bytes of OpenSSL BIO_dump lines (``0000 - 00 0b 00-...   ascii``)."""
    out = bytearray()
    for line in lines:
        hex_part = line[line.index(" - ") + 3 :].split("  ")[0]
        out += bytes.fromhex(hex_part.replace("-", " "))
    return bytes(out)


def decode_trace(text: str) -> dict[str, object]:
    """
    The ClientHello fields OpenSSL printed: legacy_version, cipher_suites,
    extensions (types in order), server_name, alpn, supported_versions,
    supported_groups, ec_point_formats, signature_algorithms.
    """
    import re

    fields: dict[str, object] = {"extensions": []}
    ext_lines: dict[int, list[str]] = {}
    current = None
    ciphers = []
    for line in text.splitlines():
        m = re.search(r"client_version=0x([0-9a-f]+)", line)
        if m:
            fields["legacy_version"] = int(m.group(1), 16)
            continue
        m = re.match(r"\s*\{0x([0-9A-F]{2}), 0x([0-9A-F]{2})\}", line)
        if m:
            ciphers.append(int(m.group(1) + m.group(2), 16))
            continue
        m = re.search(r"extension_type=.*\((\d+)\), length=\d+", line)
        if m:
            current = int(m.group(1))
            fields["extensions"].append(current)  # type: ignore[attr-defined]
            ext_lines[current] = []
            continue
        if current is not None and line.strip():
            ext_lines[current].append(line)
    fields["cipher_suites"] = tuple(ciphers)
    fields["extensions"] = tuple(fields["extensions"])  # type: ignore[arg-type]

    def numbers(etype: int) -> tuple[int, ...]:
        found = []
        for line in ext_lines.get(etype, []):
            m = re.search(r"\((0x[0-9a-f]+|\d+)\)\s*$", line)
            if m:
                found.append(int(m.group(1), 0))
        return tuple(found)

    if 0 in ext_lines:
        sni = _hex_dump_bytes(ext_lines[0])
        fields["server_name_raw"] = sni[5 : 5 + struct.unpack(">H", sni[3:5])[0]]
    fields["alpn"] = tuple(line.strip().encode() for line in ext_lines.get(16, []))
    fields["supported_versions"] = numbers(43) if 43 in ext_lines else None
    fields["supported_groups"] = numbers(10)
    fields["ec_point_formats"] = numbers(11)
    fields["signature_algorithms"] = numbers(13)
    return fields
