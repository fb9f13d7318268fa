"""PROXY protocol: reading v1/v2 headers (Twisted's parsers) and encoding them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsgate.proxy_protocol import (
    NEED_MORE,
    Header,
    HeaderReader,
    ProxyHeaderError,
    ProxyProtocolIn,
    encode_v1,
    encode_v2,
    listener_setting,
    parse_cidrs,
    parse_mode,
)

# A v2 header written out by hand from the spec: PROXY over TCP4,
# 127.0.0.9:40000 -> 127.0.0.1:8443 (a real HAProxy sends them in tests/e2e).
V2_SAMPLE = bytes.fromhex("0d0a0d0a000d0a515549540a2111000c7f0000097f0000019c4020fb")


def feed_all(data: bytes, step: int = 1) -> object:
    r = HeaderReader()
    out: object = NEED_MORE
    for i in range(0, len(data), step):
        out = r.feed(data[i:i + step])
        if isinstance(out, Header):  # the bytes not fed yet follow the header too
            return Header(out.version, out.source, out.destination,
                          out.rest + data[i + step:])
        if out is not NEED_MORE:
            return out
    return out


def test_v1_tcp4_with_following_bytes() -> None:
    h = feed_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n\x16\x03\x01", step=5)
    assert h == Header(1, ("192.0.2.7", 51000), ("10.0.0.1", 443), b"\x16\x03\x01")


def test_v1_tcp6_and_unknown() -> None:
    h = feed_all(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n")
    assert isinstance(h, Header) and h.source == ("2001:db8::1", 1)
    assert feed_all(b"PROXY UNKNOWN\r\nx") == Header(1, None, None, b"x")
    assert feed_all(b"PROXY UNKNOWN ff 1 2 3\r\n") == Header(1, None, None, b"")


def test_v2_byte_by_byte() -> None:
    h = feed_all(V2_SAMPLE + b"hello")
    assert h == Header(2, ("127.0.0.9", 40000), ("127.0.0.1", 8443), b"hello")


def test_v2_local_command_has_no_address() -> None:
    local = bytes.fromhex("0d0a0d0a000d0a515549540a") + b"\x20\x00\x00\x00"
    assert feed_all(local + b"x") == Header(2, None, None, b"x")


def test_not_a_header() -> None:
    assert HeaderReader().feed(b"\x16\x03\x01\x02\x00") is None
    assert HeaderReader().feed(b"GET / HTTP/1.1\r\n") is None
    r = HeaderReader()
    assert r.feed(b"PRO") is NEED_MORE
    assert r.feed(b"BE") is None  # "PROBE": not PROXY


@pytest.mark.parametrize("data", [
    b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n",
    b"PROXY TCP4 ::1 10.0.0.1 1 2\r\n",  # family mismatch
    b"PROXY TCP4 1.2.3.4 10.0.0.1 1\r\n",
    b"PROXY TCP4 1.2.3.4 10.0.0.1 1 99999\r\n",
    b"PROXY SCTP 1.2.3.4 10.0.0.1 1 2\r\n",
    b"PROXY " + b"A" * 120,
    bytes.fromhex("0d0a0d0a000d0a515549540a") + b"\x31\x11\x00\x0c" + b"\0" * 12,  # version 3
    bytes.fromhex("0d0a0d0a000d0a515549540a") + b"\x21\x11\x00\x04" + b"\0" * 4,  # short
])
def test_malformed_headers_are_errors(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError) as info:
        feed_all(data)
    assert info.value.reason == "malformed"


@given(st.binary(max_size=200))
def test_any_bytes_give_an_answer_or_a_clean_error(data: bytes) -> None:
    try:
        feed_all(data, step=7)
    except ProxyHeaderError:
        pass


@given(st.ip_addresses(v=4), st.ip_addresses(v=4), st.integers(0, 65535),
       st.integers(0, 65535), st.sampled_from(["v1", "v2"]))
def test_encode_then_parse_round_trips(src, dst, sport, dport, version) -> None:  # type: ignore[no-untyped-def]
    encode = encode_v1 if version == "v1" else encode_v2
    h = feed_all(encode((str(src), sport), (str(dst), dport)) + b"z", step=3)
    assert h == Header(1 if version == "v1" else 2, (str(src), sport), (str(dst), dport), b"z")


def test_encode_ipv6_and_mixed_families() -> None:
    h = feed_all(encode_v2(("2001:db8::5", 7), ("::1", 8)))
    assert isinstance(h, Header) and h.source == ("2001:db8::5", 7)
    assert encode_v1(("::ffff:127.0.0.3", 1), ("127.0.0.1", 2)) == \
        b"PROXY TCP4 127.0.0.3 127.0.0.1 1 2\r\n"
    assert encode_v1(("::1", 1), ("127.0.0.1", 2)) == b"PROXY UNKNOWN\r\n"
    assert feed_all(encode_v2(("::1", 1), ("127.0.0.1", 2))) == Header(2, None, None, b"")


def test_settings_and_trust() -> None:
    assert parse_mode("Required") == "required"
    with pytest.raises(ValueError):
        parse_mode("always")
    with pytest.raises(ValueError, match="not an address or CIDR"):
        parse_cidrs("10.0.0.0/8,bogus")
    setting = listener_setting((("tsgate.io/proxy-protocol", "optional"),
                                ("tsgate.io/proxy-protocol-trusted-cidrs",
                                 "10.0.0.0/8, 127.0.0.1/32")))
    assert setting is not None and setting.mode == "optional"
    assert setting.trusts("127.0.0.1") and setting.trusts("10.2.3.4")
    assert setting.trusts("::ffff:127.0.0.1")
    assert not setting.trusts("127.0.0.2")
    assert ProxyProtocolIn("required").trusts("203.0.113.1")  # no list: any peer
    assert listener_setting(()) is None
