"""
The ClientHello body (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2) field by field:
hand-built hellos, each one length field at or one past its bound, read
through the public ``read_client_hello``. What is checked is what a client
or the access log sees: the fields read, or the exact parse-error message
(the message is what a parse error logs).
"""

from __future__ import annotations

import struct

import pytest

from tests.support.samples import client_hello
from tsgate.hints import tls
from tsgate.hints.tls import ClientHello, ClientHelloTooLarge, read_client_hello
from tsgate.interfaces import HintParseError

RANDOM = bytes(range(32))
#: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384
SUITES = b"\x00\x04\x13\x01\x13\x02"
NULL_COMPRESSION = b"\x01\x00"


def u16(value: int) -> bytes:
    return struct.pack(">H", value)


def ext(etype: int, data: bytes) -> bytes:
    return u16(etype) + u16(len(data)) + data


def extensions(*items: bytes) -> bytes:
    block = b"".join(items)
    return u16(len(block)) + block


def body(
    session_id: bytes = b"",
    suites: bytes = SUITES,
    compression: bytes = NULL_COMPRESSION,
    tail: bytes = b"",
) -> bytes:
    """A ClientHello body: version 3.3, the random, then the given fields as raw bytes."""
    head = b"\x03\x03" + RANDOM + bytes([len(session_id)]) + session_id
    return head + suites + compression + tail


def wire(hello_body: bytes) -> bytes:
    """``hello_body`` as a handshake message of type 1 in one record."""
    message = b"\x01" + len(hello_body).to_bytes(3, "big") + hello_body
    return b"\x16\x03\x01" + u16(len(message)) + message


def read(hello_body: bytes) -> ClientHello:
    found = read_client_hello(wire(hello_body))
    assert isinstance(found, ClientHello)
    return found


def error(hello_body: bytes) -> str:
    with pytest.raises(HintParseError) as raised:
        read_client_hello(wire(hello_body))
    assert not isinstance(raised.value, ClientHelloTooLarge)
    return str(raised.value)


# --- session id ----------------------------------------------------------------


def test_session_id_of_32_bytes_is_the_longest() -> None:
    hello = read(body(session_id=bytes(32)))
    assert hello.cipher_suites == (0x1301, 0x1302)
    assert error(body(session_id=bytes(33))) == "session id longer than 32 bytes"


def test_session_id_is_skipped_whatever_its_bytes() -> None:
    # A session id that looks like cipher suites must not be read as them.
    assert read(body(session_id=b"\x00\x02\xc0\x2f" * 8)).cipher_suites == (0x1301, 0x1302)


def test_session_id_running_past_the_end() -> None:
    truncated = b"\x03\x03" + RANDOM + b"\x20" + bytes(10)
    assert error(truncated) == "client hello truncated before cipher suites"


# --- cipher suites ---------------------------------------------------------------


@pytest.mark.parametrize("suites, message", [
    (b"", "client hello truncated before cipher suites"),
    (b"\x00", "client hello truncated before cipher suites"),
    (b"\x00\x00", "cipher suites length out of bounds"),  # a length but an empty list
    (b"\x00\x00\x01\x00", "cipher suites length out of bounds"),
    (b"\x00\x04\x13\x01\x13", "cipher suites length out of bounds"),  # 4 claimed, 3 there
    (b"\x00\x03\x13\x01\x13", "cipher suites list has an odd length"),
])
def test_cipher_suites_errors(suites: bytes, message: str) -> None:
    # ``compression=b""``: these hellos stop right after the given bytes.
    assert error(body(suites=suites, compression=b"")) == message


def test_one_cipher_suite_is_enough() -> None:
    hello = read(body(suites=b"\x00\x02\xc0\x2f"))
    assert hello.cipher_suites == (0xC02F,)


def test_cipher_suites_up_to_the_last_byte() -> None:
    # The list ends exactly at the end of the body: then compression is missing.
    assert error(body(compression=b"")) == "client hello truncated before compression methods"


def test_many_cipher_suites_in_wire_order() -> None:
    suites = tuple(range(0xC000, 0xC000 + 200))
    hello = read(body(suites=u16(400) + b"".join(map(u16, suites))))
    assert hello.cipher_suites == suites


# --- compression methods -----------------------------------------------------------


@pytest.mark.parametrize("compression, message", [
    (b"\x00", "compression methods length out of bounds"),  # an empty list
    (b"\x01", "compression methods length out of bounds"),  # one claimed, none there
    (b"\x02\x00", "compression methods length out of bounds"),
])
def test_compression_methods_errors(compression: bytes, message: str) -> None:
    assert error(body(compression=compression)) == message


def test_several_compression_methods_are_skipped() -> None:
    hello = read(body(compression=b"\x02\x01\x00", tail=extensions(ext(0x0017, b""))))
    assert hello.extensions == (0x0017,)


# --- extensions --------------------------------------------------------------------


def test_no_extensions_block_at_all() -> None:
    """RFC 5246: a hello may end after the compression methods (old TLS 1.2 clients)."""
    hello = read(body())
    assert hello.extensions == ()
    assert hello.server_name is None
    assert hello.alpn == ()
    assert hello.supported_versions is None
    assert hello.legacy_version == 0x0303


def test_empty_extensions_block() -> None:
    hello = read(body(tail=u16(0)))
    assert hello.extensions == () and hello.supported_versions is None


@pytest.mark.parametrize("tail, message", [
    (b"\x00", "extensions length truncated"),
    (b"\x00\x05" + ext(0x0017, b""), "extensions length does not match the client hello"),
    (b"\x00\x03" + ext(0x0017, b""), "extensions length does not match the client hello"),
    (extensions(b"\x00\x17\x00"), "extension header truncated"),
    (extensions(ext(0x0017, b""), b"\x00"), "extension header truncated"),
    (extensions(u16(0x0010) + u16(6) + b"\x00\x03\x02h2"), "extension 0x0010 length out of bounds"),
    (extensions(ext(0x0017, b""), u16(0xFE0D) + u16(3) + b"ab"),
     "extension 0xfe0d length out of bounds"),
    (extensions(ext(0x0017, b""), ext(0x0017, b"")), "duplicate extension 0x0017"),
    (extensions(ext(0x0000, b"\x00\x04\x00\x00\x01a"), ext(0x0000, b"\x00\x04\x00\x00\x01b")),
     "duplicate extension 0x0000"),
])
def test_extensions_errors(tail: bytes, message: str) -> None:
    assert error(body(tail=tail)) == message


def test_the_checking_walk_reads_two_byte_extension_lengths() -> None:
    """
    A 300-byte extension (length high byte 1) then a repeated type: the
    error names the repeat. The checking walk of ``_parse_body`` reads the
    length with ``body[p + 2] >> 8`` (mutant: it lands inside the padding and
    reports ``0x0000`` twice) or ``<< 9`` (mutant: "length out of bounds").
    """
    tail = extensions(ext(0x0015, bytes(300)), ext(0x0015, b""))
    assert error(body(tail=tail)) == "duplicate extension 0x0015"


def test_the_quick_walk_takes_an_empty_extension_last() -> None:
    """
    ``_walk_extensions`` (the walk for well-formed hellos) reads a final
    header with no data: the mutants ``p + 5 <= end`` and ``p + 4 < end``
    stop before it and hand a well-formed hello to the checking walk.
    """
    block = ext(0x0000, b"\x00\x04\x00\x00\x01a") + ext(0x0017, b"")
    assert tls._walk_extensions(block, 0, len(block)) == ([0x0000, 0x0017], [(0x0000, 4, 10)])
    assert tls._walk_extensions(ext(0x0017, b""), 0, 4) == ([0x0017], [])


def test_an_empty_extension_last() -> None:
    """A 4-byte extension header with no data, ending the hello exactly."""
    hello = read(body(tail=extensions(ext(0x0000, b"\x00\x04\x00\x00\x01a"), ext(0x0017, b""))))
    assert hello.extensions == (0x0000, 0x0017)
    assert hello.server_name == "a"


def test_an_extension_up_to_the_last_byte() -> None:
    hello = read(body(tail=extensions(ext(0x0017, b""), ext(0x0010, b"\x00\x03\x02h2"))))
    assert hello.alpn == (b"h2",)


def test_each_extension_lands_in_its_field_and_unknown_ones_are_listed() -> None:
    tail = extensions(
        ext(0xFF01, b"\x00"),  # renegotiation_info: listed, not parsed
        ext(0x0000, b"\x00\x0b\x00\x00\x08a.b.test"),
        ext(0x000A, b"\x00\x04\x00\x1d\x00\x17"),
        ext(0x000B, b"\x02\x00\x01"),
        ext(0x000D, b"\x00\x04\x04\x03\x08\x04"),
        ext(0x0010, b"\x00\x0c\x02h2\x08http/1.1"),
        ext(0x002B, b"\x04\x03\x04\x03\x03"),
        ext(0x0015, bytes(7)),  # padding
    )
    hello = read(body(session_id=bytes(32), tail=tail))
    assert hello == ClientHello(
        length=len(wire(body(session_id=bytes(32), tail=tail))),
        legacy_version=0x0303,
        cipher_suites=(0x1301, 0x1302),
        extensions=(0xFF01, 0x0000, 0x000A, 0x000B, 0x000D, 0x0010, 0x002B, 0x0015),
        server_name="a.b.test",
        alpn=(b"h2", b"http/1.1"),
        supported_versions=(0x0304, 0x0303),
        supported_groups=(0x001D, 0x0017),
        ec_point_formats=(0, 1),
        signature_algorithms=(0x0403, 0x0804),
    )


def test_a_bad_extension_after_good_ones_is_still_an_error() -> None:
    tail = extensions(ext(0x0000, b"\x00\x04\x00\x00\x01a"), ext(0x000A, b"\x00\x03\x00\x1d\x00"))
    assert error(body(tail=tail)) == "supported_groups list has an odd length"


def test_python_ssl_hello_fields() -> None:
    """A real hello from Python's ssl module (OpenSSL) with SNI and ALPN."""
    data = client_hello("Mixed.Example.Test", ("h2", "http/1.1"))
    hello = read_client_hello(data)
    assert isinstance(hello, ClientHello)
    assert hello.server_name == "mixed.example.test"
    assert hello.alpn == (b"h2", b"http/1.1")
    assert hello.length == len(data)
    assert hello.supported_versions is not None and 0x0304 in hello.supported_versions
    assert {0x0000, 0x0010, 0x002B} <= set(hello.extensions)
