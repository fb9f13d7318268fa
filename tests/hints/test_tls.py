"""
Tests for tsgate.hints.tls: the ClientHello hint parser, driven by named
samples captured from real clients (tests/data/tls) and samples derived
from them (tests/hints/tls_samples.py).
"""

from __future__ import annotations

import hashlib
from typing import Union

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zope.interface.verify import verifyObject

from tsgate.hints.tls import (
    MAX_CLIENT_HELLO,
    ClientHello,
    ClientHelloTooLarge,
    TlsHintParser,
    is_grease,
    ja3_string,
    ja4_string,
    parse_client_hello,
    read_client_hello,
)
from tsgate.interfaces import NEED_MORE, Hint, HintParseError, IHintParser, NeedMore, NotMine

from . import tls_samples as samples

Outcome = Union[NeedMore, NotMine, Hint, tuple[str, str, str]]


def outcome(data: bytes, max_bytes: int = MAX_CLIENT_HELLO) -> Outcome:
    """parse_client_hello's answer, with its one error type as a value."""
    try:
        return parse_client_hello(data, max_bytes)
    except HintParseError as e:
        return ("error", type(e).__name__, str(e))


def decide_incrementally(
    data: bytes, cuts: list[int], max_bytes: int = MAX_CLIENT_HELLO
) -> Outcome:
    """
    What the data path sees when ``data`` arrives in pieces ending at
    ``cuts``: it calls the parser on the growing buffer and stops at the
    first answer that is not NEED_MORE.
    """
    for end in [*sorted(set(cuts)), len(data)]:
        result = outcome(data[:end], max_bytes)
        if result != NEED_MORE:
            return result
    return NEED_MORE


# --- the real samples --------------------------------------------------------

#: name -> (sni, alpn, versions): what each client was told to send (see
#: capture.py); versions are what that client offers by default.
EXPECTED: dict[str, tuple[Union[str, None], Union[str, None], str]] = {
    "valid_sni_python": ("valid.example.test", None, "TLSv1.3,TLSv1.2"),
    "no_sni": (None, None, "TLSv1.3,TLSv1.2"),
    "alpn_h2": ("alpn.example.test", "h2,http/1.1", "TLSv1.3,TLSv1.2"),
    "python_tls12": ("tls12.example.test", None, "TLSv1.2"),
    "openssl_sni": ("openssl.example.test", None, "TLSv1.3,TLSv1.2,TLSv1.1,TLSv1"),
    "openssl_no_sni": (None, None, "TLSv1.3,TLSv1.2,TLSv1.1,TLSv1"),
    "openssl_alpn": ("alpn.openssl.example.test", "h2,http/1.1", "TLSv1.3,TLSv1.2,TLSv1.1,TLSv1"),
    "openssl_tls12": ("tls12.openssl.example.test", None, "TLSv1.2"),
    "openssl_tls13": ("tls13.openssl.example.test", None, "TLSv1.3"),
    "openssl_trailing_dot": ("mixed.example.test", None, "TLSv1.3,TLSv1.2,TLSv1.1,TLSv1"),
    "valid_sni_curl": ("curl.example.test", "h2,http/1.1", "TLSv1.3,TLSv1.2,TLSv1.1,TLSv1"),
    "curl_tls12": ("curl12.example.test", "http/1.1", "TLSv1.2"),
}


def test_every_real_sample_has_an_expectation() -> None:
    assert set(EXPECTED) == set(samples.REAL_HELLOS)
    assert set(samples.manifest()) == set(samples.REAL_HELLOS) | set(samples.REAL_NOT_TLS)


@pytest.mark.parametrize("name", samples.REAL_HELLOS)
def test_real_client_hello(name: str) -> None:
    data = samples.load(name)
    sni, alpn, versions = EXPECTED[name]
    hint = parse_client_hello(data)
    assert isinstance(hint, Hint)
    assert hint.protocol == "tls"
    assert hint.length == len(data)
    assert hint.sni == sni
    assert hint.attributes.get("sni") == sni  # absent, not empty, without SNI
    assert hint.attributes.get("alpn") == alpn
    assert hint.attributes["versions"] == versions
    assert set(hint.attributes) <= {"sni", "alpn", "versions", "ja3", "ja3_hash", "ja4"}
    ja3 = hint.attributes["ja3"]
    assert hint.attributes["ja3_hash"] == hashlib.md5(ja3.encode()).hexdigest()
    assert ja3.startswith("771,")  # every client here sends legacy_version TLS 1.2
    ja4 = hint.attributes["ja4"]
    assert ja4[:4] == ("t13" if "TLSv1.3" in versions else "t12") + ("d" if sni else "i")
    assert ja4[8:10] == ({"h2,http/1.1": "h2", "http/1.1": "h1"}.get(alpn or "", "00"))


@pytest.mark.parametrize("name", samples.REAL_HELLOS)
def test_trailing_bytes_after_the_hello_are_not_part_of_it(name: str) -> None:
    data = samples.load(name)
    hint = parse_client_hello(data + b"\x17\x03\x03\x00\x05early")
    assert hint == parse_client_hello(data)


@pytest.mark.parametrize("name", [n for n in samples.REAL_HELLOS if n.startswith("openssl_")])
def test_fields_match_openssl_own_decoding(name: str) -> None:
    """OpenSSL's -trace of the same bytes is an independent decoder."""
    decoded = samples.decode_trace(samples.trace(name))
    hello = read_client_hello(samples.load(name))
    assert isinstance(hello, ClientHello)
    assert hello.legacy_version == decoded["legacy_version"]
    assert hello.cipher_suites == decoded["cipher_suites"]
    assert hello.extensions == decoded["extensions"]
    assert hello.alpn == decoded["alpn"]
    assert hello.supported_versions == decoded["supported_versions"]
    assert hello.supported_groups == decoded["supported_groups"]
    assert hello.ec_point_formats == decoded["ec_point_formats"]
    assert hello.signature_algorithms == decoded["signature_algorithms"]
    raw = decoded.get("server_name_raw")
    if raw is None:
        assert hello.server_name is None
    else:
        assert isinstance(raw, bytes)
        assert hello.server_name == raw.decode("ascii").lower().rstrip(".")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("not_tls_http", "not tls: first byte 0x47"),
        ("not_tls_postgres_sslrequest", "not tls: first byte 0x00"),
        ("not_tls_ssh", "not tls: first byte 0x53"),
    ],
)
def test_real_not_tls(name: str, reason: str) -> None:
    data = samples.load(name)
    assert parse_client_hello(data) == NotMine(reason)
    assert parse_client_hello(data[:1]) == NotMine(reason)  # decided from the first byte


def test_sslv2_hello_is_not_mine() -> None:
    data = samples.sslv2_hello()
    assert parse_client_hello(data) == NotMine("sslv2 hello")
    # The reason does not depend on the split: wait for the message type.
    assert parse_client_hello(data[:1]) == NEED_MORE
    assert parse_client_hello(data[:2]) == NEED_MORE
    assert parse_client_hello(data[:3]) == NotMine("sslv2 hello")


def test_high_bit_first_byte_that_is_no_sslv2_hello() -> None:
    assert parse_client_hello(b"\x80\x10\x02") == NotMine("not tls: first byte 0x80")


def test_handshake_type_byte_without_tls_version() -> None:
    assert parse_client_hello(b"\x16") == NEED_MORE
    assert parse_client_hello(b"\x16\x01\x00") == NotMine("not tls: record version major 0x01")


def test_empty_input_needs_more() -> None:
    assert parse_client_hello(b"") == NEED_MORE


# --- splits and fragmentation --------------------------------------------------


@pytest.mark.parametrize("name", samples.REAL_HELLOS)
def test_every_split_point(name: str) -> None:
    data = samples.load(name)
    whole = parse_client_hello(data)
    for cut in range(len(data)):
        assert parse_client_hello(data[:cut]) == NEED_MORE, cut
        assert decide_incrementally(data, [cut]) == whole


@pytest.mark.parametrize("sizes", [[1], [2], [3], [4], [5, 1], [7], [100, 3], [64, 200, 1]])
@pytest.mark.parametrize("name", ["valid_sni_python", "openssl_alpn", "curl_tls12"])
def test_fragmented_across_records(name: str, sizes: list[int]) -> None:
    data = samples.fragmented(name, sizes)
    hint = parse_client_hello(data)
    assert isinstance(hint, Hint)
    assert hint.length == len(data)
    assert hint.attributes == parse_client_hello(samples.load(name)).attributes  # type: ignore[union-attr]


def test_fragmented_every_split_point() -> None:
    data = samples.fragmented("alpn_h2", [37, 5, 200])
    whole = parse_client_hello(data)
    assert isinstance(whole, Hint)
    for cut in range(len(data)):
        assert parse_client_hello(data[:cut]) == NEED_MORE, cut


def test_fragments_with_another_content_type_in_between() -> None:
    data = samples.fragmented("openssl_sni", [100])
    alert = b"\x15\x03\x03\x00\x02\x02\x28"
    with pytest.raises(HintParseError, match="content type 21"):
        parse_client_hello(data[:105] + alert + data[105:])


# --- the size cap --------------------------------------------------------------


def test_exactly_at_the_cap_is_accepted() -> None:
    data = samples.padded("openssl_sni", MAX_CLIENT_HELLO)
    hint = parse_client_hello(data)
    assert isinstance(hint, Hint)
    assert hint.length == MAX_CLIENT_HELLO
    assert hint.sni == "openssl.example.test"


@pytest.mark.parametrize("total", [MAX_CLIENT_HELLO + 1, 17000, 40000])
def test_too_large(total: int) -> None:
    data = samples.too_large("openssl_sni", total)
    with pytest.raises(ClientHelloTooLarge, match="client hello too large"):
        parse_client_hello(data)
    # Decided from the lengths, long before 16 KiB are buffered.
    with pytest.raises(ClientHelloTooLarge):
        parse_client_hello(data[:9])


def test_too_large_is_the_parse_error() -> None:
    assert issubclass(ClientHelloTooLarge, HintParseError)


def test_record_overhead_counts_toward_the_cap() -> None:
    data = samples.fragmented("valid_sni_python", [1])  # 517 bytes in 512 records
    assert isinstance(parse_client_hello(data, max_bytes=len(data)), Hint)
    with pytest.raises(ClientHelloTooLarge):
        parse_client_hello(data, max_bytes=len(data) - 1)


@pytest.mark.parametrize("max_bytes", [6, 9, 100, 516])
def test_need_more_only_below_max_bytes(max_bytes: int) -> None:
    parser = TlsHintParser(max_bytes=max_bytes)
    data = samples.load("valid_sni_python")
    for cut in range(len(data) + 1):
        try:
            result = parser.parse(data[:cut])
        except ClientHelloTooLarge:
            continue
        assert result == NEED_MORE
        assert cut < max_bytes


# --- malformed hellos ------------------------------------------------------------


def _sni_entry_overflow() -> bytes:
    body = b"\x00\x0d" + b"\x00\x00\x20" + b"short.test"  # name length 32, 10 bytes follow
    return samples.replace_extension("openssl_sni", 0, body)


MALFORMED = {
    "truncated_record": (samples.truncated_record, "extensions length"),
    "bad_extension_length": (samples.bad_extension_length, "length out of bounds"),
    "extensions_total_plus_one": (lambda: samples.bad_extensions_total(delta=1), "extensions"),
    "extensions_total_minus_one": (lambda: samples.bad_extensions_total(delta=-1), "extensions"),
    "duplicate_sni_extension": (samples.duplicate_sni, "duplicate extension 0x0000"),
    "two_host_names": (
        lambda: samples.replace_extension(
            "openssl_sni", 0, samples.sni_extension((0, b"a.test"), (0, b"b.test"))
        ),
        "more than one host_name",
    ),
    "sni_entry_length_overflow": (_sni_entry_overflow, "server_name entry length"),
    "sni_list_length_mismatch": (
        lambda: samples.replace_extension("openssl_sni", 0, b"\x00\x05\x00\x00\x01a"),
        "server_name list length",
    ),
    "sni_empty_list": (
        lambda: samples.replace_extension("openssl_sni", 0, b"\x00\x00"),
        "server_name list length",
    ),
    "sni_non_ascii": (
        lambda: samples.replace_extension(
            "openssl_sni", 0, samples.sni_extension((0, "bücher.test".encode()))
        ),
        "not an ASCII host name",
    ),
    "sni_with_space": (
        lambda: samples.replace_extension(
            "openssl_sni", 0, samples.sni_extension((0, b"a b.test"))
        ),
        "not an ASCII host name",
    ),
    "sni_empty_label": (
        lambda: samples.replace_extension("openssl_sni", 0, samples.sni_extension((0, b"a..test"))),
        "not an ASCII host name",
    ),
    "sni_too_long": (
        lambda: samples.replace_extension(
            "openssl_sni", 0, samples.sni_extension((0, b"a." * 128 + b"test"))
        ),
        "longer than 255",
    ),
    "alpn_empty_name": (
        lambda: samples.replace_extension("openssl_alpn", 16, b"\x00\x03\x00\x01h"),
        "alpn protocol name length",
    ),
    "alpn_list_length_mismatch": (
        lambda: samples.replace_extension("openssl_alpn", 16, b"\x00\x09\x02h2"),
        "alpn list length",
    ),
    "supported_versions_odd": (
        lambda: samples.replace_extension("openssl_sni", 43, b"\x03\x03\x04\x03"),
        "odd length",
    ),
    "record_type_alert": (lambda: samples.with_record_bytes("openssl_sni", 5, b"\x02"), "type 2"),
    "record_version_3_5": (
        lambda: samples.with_record_bytes("openssl_sni", 2, b"\x05"),
        "record version",
    ),
    "empty_record": (
        lambda: b"\x16\x03\x01\x00\x00" + samples.load("openssl_sni"),
        "empty handshake record",
    ),
    "record_over_2_14": (
        lambda: samples.with_record_bytes("openssl_sni", 3, b"\x40\x01"),
        r"exceeds 2\^14",
    ),
    "server_hello_type": (
        lambda: samples.with_record_bytes("openssl_sni", 5, b"\x02"),
        "not a client hello",
    ),
    "record_continues_after_hello": (
        lambda: samples.records(
            samples.split_single_record(samples.load("openssl_sni"))[1] + b"\x00\x00\x00\x00",
            [16384],
        ),
        "continues after the client hello",
    ),
    "session_id_too_long": (
        lambda: samples.with_record_bytes("openssl_sni", 5 + 4 + 34, b"\x21"),
        "session id",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed(case: str) -> None:
    build, message = MALFORMED[case]
    data = build()
    with pytest.raises(HintParseError, match=message) as caught:
        parse_client_hello(data)
    assert not isinstance(caught.value, ClientHelloTooLarge)


def test_truncated_stream_needs_more() -> None:
    assert parse_client_hello(samples.truncated("openssl_sni", 10)) == NEED_MORE


def test_unknown_server_name_types_are_skipped() -> None:
    ext = samples.sni_extension((1, b"opaque"), (0, b"Host.Test"))
    hint = parse_client_hello(samples.replace_extension("openssl_sni", 0, ext))
    assert isinstance(hint, Hint)
    assert hint.sni == "host.test"


def test_non_printable_alpn_is_logged_as_hex() -> None:
    data = samples.replace_extension("openssl_alpn", 16, b"\x00\x06\x02h2\x02\x00,")
    hint = parse_client_hello(data)
    assert isinstance(hint, Hint)
    assert hint.attributes["alpn"] == "h2,0x002c"


def test_accepts_bytearray_and_memoryview() -> None:
    data = samples.load("alpn_h2")
    expected = parse_client_hello(data)
    assert parse_client_hello(bytearray(data)) == expected  # type: ignore[arg-type]
    assert parse_client_hello(memoryview(data)) == expected  # type: ignore[arg-type]


# --- fingerprints ----------------------------------------------------------------


def test_grease_values_are_left_out_of_fingerprints() -> None:
    plain = parse_client_hello(samples.load("alpn_h2"))
    greased_bytes = samples.with_grease("alpn_h2")
    greased = parse_client_hello(greased_bytes)
    hello = read_client_hello(greased_bytes)
    assert isinstance(hello, ClientHello)
    assert any(is_grease(c) for c in hello.cipher_suites)
    assert any(is_grease(e) for e in hello.extensions)
    assert hello.supported_versions is not None
    assert any(is_grease(v) for v in hello.supported_versions)
    assert isinstance(plain, Hint) and isinstance(greased, Hint)
    assert greased.attributes == plain.attributes


def test_is_grease() -> None:
    grease = {0x0A0A + 0x1010 * i for i in range(16)}
    assert all(is_grease(v) for v in grease)
    assert not any(is_grease(v) for v in range(0x10000) if v not in grease)


def test_published_chrome_fingerprints() -> None:
    """
    A published Chrome 143 hello (browserleaks.com output, kept in the
    public repository service0427/v2_cp_app, tls.md): its JA4_ro field
    lists the cipher suites, extensions and signature algorithms in wire
    order; its JA4 and JA3 were computed by browserleaks, not by us.
    """
    ja4_ro = (
        "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,"
        "0035_002d,0033,0010,fe0d,0017,44cd,0000,000b,000a,002b,ff01,0023,0012,0005,000d,"
        "001b_0403,0804,0401,0503,0805,0501,0806,0601"
    )
    _, ciphers, extensions, sigs = ja4_ro.split("_")

    def hexes(text: str) -> tuple[int, ...]:
        return tuple(int(v, 16) for v in text.split(","))

    hello = ClientHello(
        length=0,
        legacy_version=0x0303,
        cipher_suites=hexes(ciphers),
        extensions=hexes(extensions),
        server_name="tls.browserleaks.com",
        alpn=(b"h2", b"http/1.1"),
        supported_versions=(0x0304, 0x0303),
        supported_groups=(4588, 29, 23, 24),
        ec_point_formats=(0,),
        signature_algorithms=hexes(sigs),
    )
    assert ja4_string(hello) == "t13d1516h2_8daaf6152771_d8a2da3f94cd"
    ja3 = ja3_string(hello)
    assert hashlib.md5(ja3.encode()).hexdigest() == "98487aa16281980e7d1120d399efb6a4"


def test_published_curl_openssl3_ja3() -> None:
    """
    curl on OpenSSL 3 sends the same ClientHello shape across versions; the
    fingerproxy project's README (wi1dcard/fingerproxy,
    example/ja3-sorted-extensions) shows its JA3 hash as computed by
    fingerproxy: 0149f47eabf9a20d0893e2a44e5a6323, JA4 prefix
    t13d3112h2_e8f1e7e78f70 (its JA4 c part differs: another OpenSSL's
    signature algorithms, which JA3 does not include).
    """
    hint = parse_client_hello(samples.load("valid_sni_curl"))
    assert isinstance(hint, Hint)
    assert hint.attributes["ja3_hash"] == "0149f47eabf9a20d0893e2a44e5a6323"
    assert hint.attributes["ja4"].startswith("t13d3112h2_e8f1e7e78f70_")


def test_ja4_alpn_non_alphanumeric_uses_hex() -> None:
    hello = read_client_hello(samples.load("openssl_alpn"))
    assert isinstance(hello, ClientHello)
    assert ja4_string(hello)[8:10] == "h2"
    assert ja4_string(attrs.evolve(hello, alpn=(b"\x00ab\xff",)))[8:10] == "0f"
    assert ja4_string(attrs.evolve(hello, alpn=(b"x",)))[8:10] == "xx"
    assert ja4_string(attrs.evolve(hello, alpn=()))[8:10] == "00"


# --- the plugin-facing object ------------------------------------------------------


def test_parser_provides_the_interface() -> None:
    parser = TlsHintParser()
    assert verifyObject(IHintParser, parser)
    assert (parser.name, parser.protocol, parser.max_bytes) == ("tls", "tls", 16384)
    assert parser.parse(samples.load("openssl_sni")) == parse_client_hello(
        samples.load("openssl_sni")
    )


# --- properties ------------------------------------------------------------------

_REAL = st.sampled_from(samples.REAL_HELLOS).map(samples.load)
_PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _allowed(result: Outcome, data: bytes, max_bytes: int = MAX_CLIENT_HELLO) -> None:
    if result == NEED_MORE:
        assert len(data) < max_bytes
    elif isinstance(result, tuple):
        assert result[0] == "error"
    else:
        assert isinstance(result, (NotMine, Hint))


@_PROPERTY_SETTINGS
@given(hello=_REAL, cut=st.integers(min_value=0, max_value=600), garbage=st.binary(max_size=600))
def test_truncation_plus_garbage(hello: bytes, cut: int, garbage: bytes) -> None:
    data = hello[:cut] + garbage
    _allowed(outcome(data), data)


@_PROPERTY_SETTINGS
@given(
    hello=_REAL,
    flips=st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=4),
    cut=st.integers(min_value=0, max_value=600),
    garbage=st.binary(max_size=64),
    splits=st.lists(st.integers(min_value=0, max_value=1300), max_size=6),
    max_bytes=st.sampled_from([MAX_CLIENT_HELLO, 300, 64]),
)
def test_any_split_of_damaged_hellos_gives_the_same_answer(
    hello: bytes,
    flips: list[tuple[int, int]],
    cut: int,
    garbage: bytes,
    splits: list[int],
    max_bytes: int,
) -> None:
    damaged = bytearray(hello)
    for at, value in flips:
        if at < len(damaged):
            damaged[at] = value
    data = bytes(damaged[:cut]) + garbage if cut < len(damaged) else bytes(damaged) + garbage
    whole = outcome(data, max_bytes)
    _allowed(whole, data, max_bytes)
    assert decide_incrementally(data, [s for s in splits if s < len(data)], max_bytes) == whole


@_PROPERTY_SETTINGS
@given(
    name=st.sampled_from(samples.REAL_HELLOS),
    sizes=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=4),
    splits=st.lists(st.integers(min_value=0, max_value=4000), max_size=8),
)
def test_any_fragmentation_and_split_gives_the_same_hint(
    name: str, sizes: list[int], splits: list[int]
) -> None:
    data = samples.fragmented(name, sizes)
    expected = parse_client_hello(samples.load(name))
    assert isinstance(expected, Hint)
    result = decide_incrementally(data, [s for s in splits if s < len(data)])
    assert isinstance(result, Hint)
    assert result.attributes == expected.attributes
    assert result.length == len(data)
