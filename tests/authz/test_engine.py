"""The engine's matchers against the standard library's answers."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from tsgate.authz.engine import CidrSet, any_string, parse_ip, sni_check

v4 = st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i)))
v4_net = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
    lambda t: str(ipaddress.IPv4Network((t[0], t[1]), strict=False)))
v6_net = st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
    lambda t: str(ipaddress.IPv6Network((t[0], t[1]), strict=False)))


@given(st.lists(st.one_of(v4_net, v6_net), max_size=8), st.one_of(
    v4, st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i)))))
def test_cidr_set_agrees_with_ipaddress(blocks: list[str], address: str) -> None:
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return  # normalised to IPv4, tested below
    expected = any(ip in ipaddress.ip_network(b) for b in blocks)
    assert (parse_ip(address) in CidrSet(blocks)) == expected


def test_ipv4_mapped_and_bare_addresses() -> None:
    cidrs = CidrSet(["127.0.0.0/8", "::1", "::ffff:10.0.0.0/120"])
    assert parse_ip("::ffff:127.0.0.9") in cidrs
    assert parse_ip("::1") in cidrs
    assert parse_ip("10.0.0.200") in cidrs
    assert parse_ip("10.0.1.1") not in cidrs
    assert parse_ip("not-an-ip") is None and None not in cidrs
    assert parse_ip("fe80::1%eth0") == (6, int(ipaddress.ip_address("fe80::1")))


def test_istio_string_matching() -> None:
    m = any_string(["exact.example.com", "*.wild.example.com", "pre*", "*"][:3])
    assert m("exact.example.com") and m("a.wild.example.com") and m("prefix")
    assert not m("wild.example.com.evil") and not m("")
    assert any_string(["*"])("x") and not any_string(["*"])("")
    sni = sni_check(None, ["*.internal"])
    assert sni("a.example.com") and sni(None) and not sni("db.internal")
    assert sni_check(("A.Example.com".lower(),), None)("A.EXAMPLE.COM")
