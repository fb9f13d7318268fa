"""tsgate.config.hosts: the host rules validate and the compiler share."""

from __future__ import annotations

import pytest

from tsgate.config import hosts


@pytest.mark.parametrize("text,ok", [
    ("echo", True), ("a-b-1", True), ("a" * 63, True),
    ("", False), ("a" * 64, False), ("Echo", False), ("-a", False), ("a-", False), ("a.b", False),
])
def test_label_error(text: str, ok: bool) -> None:
    assert (hosts.label_error(text) is None) is ok


@pytest.mark.parametrize("text,ok", [
    ("echo.default", True), ("a", True), ("", False), ("a..b", False), ("A.b", False),
    ("a." * 126 + "ab", False),  # 254 characters
])
def test_subdomain_error(text: str, ok: bool) -> None:
    assert (hosts.subdomain_error(text) is None) is ok


def test_ip_and_subnet() -> None:
    assert hosts.is_ip("10.0.0.1") and hosts.is_ip("::1")
    assert not hosts.is_ip("10.0.0.0/8") and not hosts.is_ip("echo")
    assert hosts.subnet_error("10.0.0.0/8") is None
    assert hosts.subnet_error("10.0.0.1") is None
    assert hosts.subnet_error("10.0.0.1/8") is None  # host bits allowed (strict=False)
    assert "not an IP address or CIDR" in (hosts.subnet_error("10.0.0.0/33") or "")


@pytest.mark.parametrize("text,ok", [
    ("*", True), ("*.example.com", True), ("a.example.com", True), ("A.Example.com", True),
    ("", False), ("*w.example.com", False), ("a.*.com", False), ("a_b.com", False),
    ("x" * 256, False),
])
def test_domain_error(text: str, ok: bool) -> None:
    assert (hosts.domain_error(text) is None) is ok


def test_domain_error_wildcard_switches() -> None:
    assert "not allowed here" in (hosts.domain_error("*", star=False) or "")
    assert "not allowed here" in (hosts.domain_error("*.a.com", wildcard=False) or "")
    assert hosts.domain_error("a.com", wildcard=False, star=False) is None


@pytest.mark.parametrize("host,ns,expected", [
    ("echo", "prod", "echo.prod.svc.cluster.local"),
    ("Echo.", "prod", "echo.prod.svc.cluster.local"),
    ("echo.other", "prod", "echo.other"),
    ("*", "prod", "*"),
    ("*.example.com", "prod", "*.example.com"),
    ("10.0.0.1", "prod", "10.0.0.1"),
])
def test_fqdn_is_istio_short_name_resolution(host: str, ns: str, expected: str) -> None:
    assert hosts.fqdn(host, ns) == expected


@pytest.mark.parametrize("a,b,expected", [
    ("a.com", "a.com", True), ("A.com", "a.COM", True), ("*", "x.y", True), ("x.y", "*", True),
    ("*.a.com", "x.a.com", True), ("x.a.com", "*.a.com", True),
    ("*.a.com", "*.x.a.com", True), ("*.x.a.com", "*.a.com", True),
    ("*.a.com", "a.com", False), ("a.com", "b.com", False), ("*.a.com", "*.b.com", False),
])
def test_matches_is_symmetric_overlap(a: str, b: str, expected: bool) -> None:
    assert hosts.matches(a, b) is expected
    assert hosts.matches(b, a) is expected


@pytest.mark.parametrize("a,b,expected", [
    ("x.a.com", "*.a.com", True), ("*.x.a.com", "*.a.com", True), ("*.a.com", "*.a.com", True),
    ("a.com", "a.com", True), ("anything", "*", True),
    ("*.a.com", "x.a.com", False), ("*", "*.a.com", False), ("a.com", "*.a.com", False),
    ("xa.com", "*.a.com", False),
])
def test_subset_of(a: str, b: str, expected: bool) -> None:
    assert hosts.subset_of(a, b) is expected


@pytest.mark.parametrize("domain,ok", [
    ("*", True), ("*.a.com", True), ("*x.a.com", True), ("*-x.a.com", True), ("a.com", True),
    ("a.com.", True), ("A.com", True),  # Istio's labels allow upper case
    ("a.b.123", False), ("a.*.com", False), ("a_b.com", False), ("", False),
])
def test_istio_wildcard_domain_error(domain: str, ok: bool) -> None:
    assert (hosts.istio_wildcard_domain_error(domain) is None) is ok


def test_istio_fqdn_error_refuses_any_wildcard() -> None:
    assert hosts.istio_fqdn_error("a.example.com") is None
    assert hosts.istio_fqdn_error("*.example.com") is not None
    assert "too long" in (hosts.istio_fqdn_error("a" * 256) or "")
    assert "all-numeric" in (hosts.istio_labels_error("a.b.42") or "")


def test_partial_wildcard() -> None:
    assert hosts.partial_wildcard("*x.com") and hosts.partial_wildcard("*x")
    assert not hosts.partial_wildcard("*") and not hosts.partial_wildcard("*.x.com")
    assert not hosts.partial_wildcard("x.com")


def test_auto_sni_parse_and_check() -> None:
    name = "outbound_.15010_._.istiod.istio-system.svc.cluster.local"
    assert hosts.parse_auto_sni(name) == (15010, "", "istiod.istio-system.svc.cluster.local")
    assert hosts.parse_auto_sni("outbound_.80_.v1_.echo.ns.svc.cluster.local") == (
        80, "v1", "echo.ns.svc.cluster.local")
    assert hosts.parse_auto_sni("echo.example.com") is None
    assert hosts.parse_auto_sni("outbound_.x_._.echo") is None
    assert hosts.auto_sni_error(name) is None
    assert "should follow" in (hosts.auto_sni_error("outbound_.80") or "")
    assert "invalid" in (hosts.auto_sni_error("outbound_.http_._.echo") or "")
    assert "invalid" in (hosts.auto_sni_error("outbound_.80_._.123") or "")


@pytest.mark.parametrize("addr,ok", [
    ("/run/gw.sock", True), ("@abstract", True), ("", False), ("relative.sock", False),
    ("/run/dir/", False),
])
def test_unix_address_error(addr: str, ok: bool) -> None:
    assert (hosts.unix_address_error(addr) is None) is ok
