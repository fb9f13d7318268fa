"""
The record layer under the ClientHello (RFC 8446 §5.1): every record's
header is checked, not only the first one's; a hello may be cut into
records anywhere, even inside its 4-byte handshake header; a record carries
at most 2^14 bytes; and a hello that cannot fit ``max_bytes`` is refused
as soon as a length field shows it, while one that fits is never refused.

Hellos are real ones (tests/data/tls, Python's ssl module) re-cut into
records by the test's own code; the answers are compared whole (the Hint,
or the exact error message: what a parse error logs).
"""

from __future__ import annotations

import struct
from typing import Union

import pytest

from tsgate.hints import tls
from tsgate.hints.tls import MAX_CLIENT_HELLO, parse_client_hello
from tsgate.interfaces import NEED_MORE, Hint, HintParseError, NeedMore, NotMine

from . import tls_samples as samples

Answer = Union[NeedMore, NotMine, Hint, tuple[str, str]]


def answer(data: bytes, max_bytes: int = MAX_CLIENT_HELLO) -> Answer:
    """parse_client_hello's answer, a parse error as (class name, message)."""
    try:
        return parse_client_hello(data, max_bytes)
    except HintParseError as e:
        return (type(e).__name__, str(e))


def bad(message: str) -> tuple[str, str]:
    return ("HintParseError", message)


TOO_LARGE = ("ClientHelloTooLarge", "client hello too large")


def message(name: str = "openssl_sni") -> bytes:
    """A real sample's handshake message (it came in one record)."""
    return samples.split_single_record(samples.load(name))[1]


def record(fragment: bytes, version: bytes = b"\x03\x01", length: int = -1) -> bytes:
    size = len(fragment) if length < 0 else length
    return b"\x16" + version + struct.pack(">H", size) + fragment


def handshake(body: bytes, msg_type: int = 1) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def grown(total: int, name: str = "openssl_sni") -> bytes:
    """A real hello's handshake message grown to ``total`` bytes with a padding extension."""
    wire = samples.with_extensions(
        name, lambda exts: [*exts, (21, bytes(total - len(message(name)) - 4))]
    )
    out, pos = b"", 0
    while pos < len(wire):  # join the fragments back into the message
        size = struct.unpack(">H", wire[pos + 3 : pos + 5])[0]
        out += wire[pos + 5 : pos + 5 + size]
        pos += 5 + size
    assert len(out) == total
    return out


# --- every record's header ------------------------------------------------------------

FIRST = 100  # the first record carries this many bytes of the hello


def second_record_with(header: bytes) -> bytes:
    """A real hello in two records, the second one's header replaced by ``header``."""
    msg = message()
    return record(msg[:FIRST]) + header + msg[FIRST:]


@pytest.mark.parametrize("header, needed, error", [
    (b"\x15\x03\x03\x00\x02", 1, "record of content type 21 before the client hello was complete"),
    (b"\x17\x03\x03\x00\x02", 1, "record of content type 23 before the client hello was complete"),
    (b"\x16\x02\x01\x00\x02", 2, "bad record version major 2"),
    (b"\x16\x04\x01\x00\x02", 2, "bad record version major 4"),
    (b"\x16\x03\x05\x00\x02", 3, "bad record version 0x0305"),
    (b"\x16\x03\xff\x00\x02", 3, "bad record version 0x03ff"),
    (b"\x16\x03\x03\x00\x00", 5, "empty handshake record"),
])
def test_a_later_record_header_is_checked(header: bytes, needed: int, error: str) -> None:
    data = second_record_with(header)
    assert answer(data) == bad(error)
    # Decided as soon as the byte at fault is there, not when the header is whole.
    start = 5 + FIRST
    assert answer(data[: start + needed - 1]) == NEED_MORE
    assert answer(data[: start + needed]) == bad(error)


@pytest.mark.parametrize("content_type", [0, 1, 2, 3, 21, 23])
@pytest.mark.parametrize("first", [1, 2, 3])
def test_another_record_inside_the_hello_header(first: int, content_type: int) -> None:
    """
    The hello's 4-byte header cut short by a record of another type: the
    error names that record, whatever the bytes that follow look like.
    """
    hello = sized_hello(200)  # its length, 0x0000c4, starts with zeros
    data = record(hello[:first]) + bytes([content_type]) + b"\x03\x03\x00\x02\x02\x28"
    assert answer(data) == bad(
        f"record of content type {content_type} before the client hello was complete"
    )


@pytest.mark.parametrize("cut", range(1, 5))
def test_a_partial_later_header_that_is_fine_needs_more(cut: int) -> None:
    data = second_record_with(b"\x16\x03\x04\x00\x01")
    assert answer(data[: 5 + FIRST + cut]) == NEED_MORE


@pytest.mark.parametrize("minor", range(5))
def test_record_versions_3_0_to_3_4_in_every_record(minor: int) -> None:
    version = bytes([3, minor])
    expected = parse_client_hello(samples.load("openssl_sni"))
    assert isinstance(expected, Hint)
    for data in (
        record(message(), version),  # one record
        samples.records(message(), [FIRST], version),  # several
        record(message()[:FIRST]) + record(message()[FIRST:], version),  # only a later one
    ):
        found = answer(data)
        assert isinstance(found, Hint)
        assert found.attributes == expected.attributes and found.length == len(data)


@pytest.mark.parametrize("minor", [5, 0x10, 0xFF])
def test_first_record_version_above_3_4(minor: int) -> None:
    error = bad(f"bad record version 0x03{minor:02x}")
    whole = record(message(), bytes([3, minor]))
    assert answer(whole) == error
    assert answer(whole[:3]) == error  # decided from the third byte
    assert answer(samples.records(message(), [FIRST], bytes([3, minor]))) == error


def test_a_later_record_over_2_14() -> None:
    msg = grown(20000)
    data = record(msg[:FIRST]) + record(msg[FIRST:], length=16385)
    assert answer(data, max_bytes=40000) == bad("record length 16385 exceeds 2^14")
    assert answer(data[: 5 + FIRST + 5], max_bytes=40000) == bad(
        "record length 16385 exceeds 2^14"
    )


# --- the 2^14 record limit and a larger max_bytes -------------------------------------


def test_a_hello_in_one_record_of_2_14_bytes_with_a_larger_cap() -> None:
    data = record(grown(16384))
    hint = answer(data, max_bytes=40000)
    assert isinstance(hint, Hint)
    assert hint.sni == "openssl.example.test" and hint.length == 16389


def test_a_hello_in_one_record_of_2_14_plus_one_bytes() -> None:
    data = record(grown(16385))
    assert answer(data, max_bytes=40000) == bad("record length 16385 exceeds 2^14")
    # Decided from the record header, before the hello is there.
    assert answer(data[:9], max_bytes=40000) == bad("record length 16385 exceeds 2^14")
    assert answer(data[:5], max_bytes=40000) == bad("record length 16385 exceeds 2^14")


def test_a_hello_of_20000_bytes_in_two_records_with_a_larger_cap() -> None:
    msg = grown(20000)
    data = record(msg[:16384]) + record(msg[16384:])
    hint = answer(data, max_bytes=len(data))
    assert isinstance(hint, Hint)
    assert hint.sni == "openssl.example.test" and hint.length == len(data) == 20010
    for cut in (9, 16389, 16394, len(data) - 1):
        assert answer(data[:cut], max_bytes=len(data)) == NEED_MORE
    # One byte less: the hello's header is enough to see that it will not fit.
    assert answer(data, max_bytes=len(data) - 1) == TOO_LARGE
    assert answer(data[:9], max_bytes=len(data) - 1) == TOO_LARGE


@pytest.mark.parametrize("first", [3, 1000])
def test_too_large_as_soon_as_a_record_length_is_read(first: int) -> None:
    """A record that alone runs past the cap is refused at its header."""
    msg = grown(2000)
    data = record(msg[:first]) + record(msg[first:])
    cap = 5 + first - 1
    assert answer(data[:4], max_bytes=cap) == NEED_MORE
    assert answer(data[:5], max_bytes=cap) == TOO_LARGE
    assert answer(data[:5], max_bytes=cap + 1) == NEED_MORE


# --- the handshake header across records ---------------------------------------------


@pytest.mark.parametrize("sizes", [[1], [2], [3, 1], [1, 3], [2, 1, 1], [4], [5], [9]])
def test_the_hello_length_is_read_across_records(sizes: list[int]) -> None:
    """The 3-byte handshake length, cut anywhere, is the same length."""
    data = samples.records(message(), sizes)
    hint = answer(data)
    assert isinstance(hint, Hint)
    assert hint.sni == "openssl.example.test" and hint.length == len(data)
    assert hint == answer(data + record(b"\x01\x00\x00\x00"))  # what follows is not its


def header_records(length: int, sizes: list[int]) -> tuple[bytes, int]:
    """
    The first records of a hello whose handshake header declares ``length``
    bytes, cut by ``sizes`` (the first ones covering the header); and how
    many wire bytes it takes for the header's last byte to arrive.
    """
    msg = handshake(bytes(length))[:300]  # what follows the first records does not matter
    data = samples.records(msg, sizes)
    covered, pos = 0, 0
    while covered < 4:
        size = struct.unpack(">H", data[pos + 3 : pos + 5])[0]
        covered += size
        pos += 5 + size
    header_done = pos - (covered - 4)  # the record that completes the header, up to its 4th byte
    return data, header_done


@pytest.mark.parametrize("sizes", [[1], [2], [3, 200], [1, 3, 200], [4, 200], [9], [200]])
@pytest.mark.parametrize("length", [20000, 0x010005, 0xFFFFFF])
def test_too_large_as_soon_as_the_hello_length_is_read(sizes: list[int], length: int) -> None:
    data, header_done = header_records(length, sizes)
    assert answer(data[: header_done - 1]) == NEED_MORE
    assert answer(data[:header_done]) == TOO_LARGE


@pytest.mark.parametrize("sizes", [[1], [2, 1, 1], [4, 3]])
def test_declared_length_within_the_cap_waits(sizes: list[int]) -> None:
    data, header_done = header_records(200, sizes)
    for cut in range(header_done, len(data)):
        assert answer(data[:cut]) == NEED_MORE


@pytest.mark.parametrize("sizes", [[1], [2], [3, 10], [100]])
def test_another_handshake_type_is_refused_at_its_first_byte(sizes: list[int]) -> None:
    data = samples.records(handshake(message()[4:], msg_type=2), sizes)
    assert answer(data[:6]) == bad("handshake type 2 is not a client hello")
    assert answer(data) == bad("handshake type 2 is not a client hello")


@pytest.mark.parametrize("split", [1, 2, 3, 4, 100])
def test_a_record_that_runs_past_the_hello(split: int) -> None:
    """The last record of the hello carries 4 more bytes: refused at its header."""
    msg = message()
    extra = msg[split:] + handshake(b"")
    data = record(msg[:split]) + record(extra)
    error = bad("handshake record continues after the client hello")
    assert answer(data) == error
    if split >= 4:  # the hello's length is known before the last record
        assert answer(data[: 5 + split + 5]) == error


def test_a_record_that_ends_the_hello_exactly_is_the_end() -> None:
    msg = message()
    data = record(msg[:4]) + record(msg[4:])
    hint = answer(data + b"\x16\x03")  # the next record has begun
    assert isinstance(hint, Hint) and hint.length == len(data)


# --- the cap, exactly ------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[1], [3], [4], [5, 1], [100], [16384]])
def test_a_hello_that_fits_exactly_is_never_refused(sizes: list[int]) -> None:
    data = samples.records(message("valid_sni_python"), sizes)
    for cut in range(len(data)):
        assert answer(data[:cut], max_bytes=len(data)) == NEED_MORE, cut
    hint = answer(data, max_bytes=len(data))
    assert isinstance(hint, Hint) and hint.sni == "valid.example.test"
    assert answer(data, max_bytes=len(data) - 1) == TOO_LARGE


@pytest.mark.parametrize("max_bytes", range(0, 6))
def test_a_cap_below_one_record_refuses_everything_tls(max_bytes: int) -> None:
    """A record takes a 5-byte header and at least one byte: no hello fits under 6."""
    assert answer(b"\x16\x03\x01", max_bytes) == TOO_LARGE
    assert answer(b"GET /", max_bytes) == NotMine("not tls: first byte 0x47")


def test_a_cap_of_one_record_with_one_byte() -> None:
    """
    A record with the hello's first byte: under 12 bytes there is no room for
    the next record (a header and a byte), so the hello cannot fit.
    """
    data = record(b"\x01")
    for cut in range(len(data)):
        assert answer(data[:cut], max_bytes=6) == NEED_MORE
    assert answer(data, max_bytes=6) == TOO_LARGE
    assert answer(data, max_bytes=11) == TOO_LARGE
    assert answer(data, max_bytes=12) == NEED_MORE


# --- record lengths against hello lengths ------------------------------------------------


def sized_hello(total: int) -> bytes:
    """A hand-built ClientHello message of exactly ``total`` bytes (SNI, then padding)."""
    name = b"sized.example.test"
    sni = struct.pack(">HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    fixed = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    pad = total - 4 - len(fixed) - 2 - len(sni) - 4
    assert pad >= 0
    block = sni + struct.pack(">HH", 21, pad) + bytes(pad)
    return handshake(fixed + struct.pack(">H", len(block)) + block)


@pytest.mark.parametrize("total", [513, 514, 517])
def test_every_cut_into_two_records(total: int) -> None:
    """
    Wherever the first record ends, the answer is the same hello: a record
    length that differs from the hello's length in only one byte (0x0200
    against 0x0201, say) is no whole hello.
    """
    msg = sized_hello(total)
    assert len(msg) == total
    for first in range(1, total):
        data = record(msg[:first]) + record(msg[first:])
        hint = answer(data)
        assert isinstance(hint, Hint), first
        assert hint.sni == "sized.example.test" and hint.length == total + 10, first


@pytest.mark.parametrize("extra", [1, 4, 255, 256, 257])
@pytest.mark.parametrize("total", [200, 513, 514, 517])
def test_a_record_longer_than_the_hello(total: int, extra: int) -> None:
    """One record carrying the hello and ``extra`` bytes more is refused."""
    data = record(sized_hello(total) + bytes(extra))
    assert answer(data) == bad("handshake record continues after the client hello")
    after = answer(record(sized_hello(total)) + bytes(extra))  # after its record: not its
    assert isinstance(after, Hint) and after.length == total + 5


def test_not_tls_from_the_second_byte() -> None:
    assert answer(b"\x16") == NEED_MORE
    assert answer(b"\x16\x01") == NotMine("not tls: record version major 0x01")
    assert answer(b"\x16\x03") == NEED_MORE


@pytest.mark.parametrize("error", [IndexError, ValueError, struct.error])
def test_a_parser_bug_is_still_a_parse_error(
    monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    """
    The one-error contract holds even if a bound check were missing: a
    lookup error inside the parser becomes a HintParseError naming it.
    """

    def broken(body: bytes, length: int) -> None:
        raise error("planted")

    monkeypatch.setattr(tls, "_parse_body", broken)
    assert answer(samples.load("openssl_sni")) == bad(f"malformed client hello ({error.__name__})")
