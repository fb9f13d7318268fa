"""
The TLS hint's attributes as a mapping (keys, length, membership, lazy
fingerprints computed once) and the exact messages of ALPN and size errors:
what the access log, ``explain`` and the parse-error counters read.
"""

from __future__ import annotations

import hashlib
import re

import attrs
import pytest

from tests.support.samples import client_hello
from tsgate.hints import tls
from tsgate.hints.tls import (
    ClientHello,
    ClientHelloTooLarge,
    TlsAttributes,
    hint_attributes,
    read_client_hello,
)
from tsgate.interfaces import HintParseError


def hello(sni: str | None = "a.example.test", alpn: tuple[str, ...] = ()) -> ClientHello:
    found = read_client_hello(client_hello(sni, alpn))
    assert isinstance(found, ClientHello)
    return found


def test_keys_in_order_fingerprints_last() -> None:
    attrs = TlsAttributes(hello(alpn=("h2", "http/1.1")))
    assert list(attrs) == ["sni", "alpn", "versions", "ja3", "ja3_hash", "ja4"]
    assert len(attrs) == 6
    assert attrs["sni"] == "a.example.test" and attrs["alpn"] == "h2,http/1.1"
    bare = TlsAttributes(hello(sni=None))
    assert list(bare) == ["versions", "ja3", "ja3_hash", "ja4"] and len(bare) == 4


def test_membership() -> None:
    attrs = TlsAttributes(hello())
    assert "sni" in attrs and "versions" in attrs
    assert "ja3" in attrs and "ja4" in attrs  # before they are computed
    assert "alpn" not in attrs and "nope" not in attrs


def test_fingerprints_computed_once_and_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = tls.ja3_string

    def counting(h: ClientHello) -> str:
        calls.append(h)
        return real(h)

    monkeypatch.setattr(tls, "ja3_string", counting)
    attrs = TlsAttributes(hello())
    assert attrs["sni"] == "a.example.test" and attrs["versions"]
    assert calls == []
    ja3 = attrs["ja3"]
    assert attrs["ja3_hash"] == hashlib.md5(ja3.encode()).hexdigest()
    assert re.fullmatch(r"t13d\d{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}", attrs["ja4"])
    assert attrs["ja3"] == ja3 and len(calls) == 1


def test_hint_attributes_and_repr() -> None:
    h = hello(alpn=("h2",))
    plain = hint_attributes(h)
    assert plain == dict(TlsAttributes(h))
    assert list(plain) == ["sni", "alpn", "versions", "ja3", "ja3_hash", "ja4"]
    assert repr(TlsAttributes(h)) == f"TlsAttributes({plain!r})"


def test_too_large_messages() -> None:
    assert str(ClientHelloTooLarge()) == "client hello too large"
    with pytest.raises(ClientHelloTooLarge) as raised:
        read_client_hello(client_hello("a.example.test"), max_bytes=100)
    assert str(raised.value) == "client hello too large"


@pytest.mark.parametrize("ext, message", [
    (b"", "alpn extension too short"),
    (b"\x00", "alpn extension too short"),
    (b"\x00\x00", "alpn list length does not match its extension"),
    (b"\x00\x02\x01", "alpn list length does not match its extension"),
    (b"\x00\x01\x00", "alpn protocol name length out of bounds"),
    (b"\x00\x02\x02h", "alpn protocol name length out of bounds"),
])
def test_alpn_errors(ext: bytes, message: str) -> None:
    with pytest.raises(HintParseError) as raised:
        tls._alpn(ext)
    assert str(raised.value) == message


def test_alpn_names() -> None:
    assert tls._alpn(b"\x00\x03\x02h2") == (b"h2",)
    assert tls._alpn(b"\x00\x07\x02h2\x03h3x") == (b"h2", b"h3x")


def test_ja4_hash_of_an_empty_list_is_twelve_zeros() -> None:
    """JA4: a hello with no ciphers (or no extensions) hashes to 000000000000, not sha256('')."""
    assert tls._sha256_12("") == "000000000000"
    assert tls._sha256_12("1301") == hashlib.sha256(b"1301").hexdigest()[:12]


def sni_ext(*entries: tuple[int, bytes]) -> bytes:
    """A server_name extension body: a u16 list of (type, u16-length name)."""
    body = b"".join(bytes([t]) + len(n).to_bytes(2, "big") + n for t, n in entries)
    return len(body).to_bytes(2, "big") + body


@pytest.mark.parametrize("ext, message", [
    (b"\x00", "server_name extension too short"),
    (b"\x00\x00", "server_name list length does not match its extension"),
    (b"\x00\x05\x00\x00\x01a", "server_name list length does not match its extension"),
    (b"\x00\x02\x00\x00", "server_name entry truncated"),
    (b"\x00\x03\x00\x00\x00", "server_name entry length out of bounds"),
    (b"\x00\x04\x00\x00\x02a", "server_name entry length out of bounds"),
    (sni_ext((0, b"a"), (0, b"b")), "more than one host_name in server_name"),
    (sni_ext((0, b"a" * 256)), "server name longer than 255 bytes"),
    (sni_ext((0, b"a b")), "server name is not an ASCII host name"),
])
def test_server_name_errors(ext: bytes, message: str) -> None:
    """The exact messages: they are what a parse error logs."""
    with pytest.raises(HintParseError) as raised:
        tls._server_name(ext)
    assert str(raised.value) == message


def test_server_name_bounds() -> None:
    assert tls._server_name(sni_ext((0, b"a"))) == "a"  # one letter is a name
    assert tls._server_name(sni_ext((0, b"A" * 255))) == "a" * 255  # the longest allowed
    assert tls._server_name(sni_ext((0, b"Host.Example."))) == "host.example"
    assert tls._server_name(sni_ext((1, b"xyz"), (0, b"b"))) == "b"  # other types skipped
    assert tls._server_name(sni_ext((1, b"xyz"))) is None


def test_length_prefixed_lists() -> None:
    """supported_groups / signature_algorithms (u16 length) and ec_point_formats (u8)."""
    assert tls._u16_prefixed(b"\x00\x00", "g") == (2, 0)  # empty list
    long_list = b"\x01\x00" + b"\x00" * 256
    assert tls._u16_prefixed(long_list, "g") == (2, 256)
    assert tls._u8_prefixed(b"\x00", "f") == (1, 0)
    assert tls._u8_prefixed(b"\x02\x00\x01", "f") == (1, 2)
    for bad in (b"", b"\x00", b"\x00\x05\x00\x01", b"\x01\x00\x00"):
        with pytest.raises(HintParseError) as raised:
            tls._u16_prefixed(bad, "supported_groups")
        assert str(raised.value) == "supported_groups length does not match its extension"
    for bad in (b"", b"\x05\x00", b"\x00\x00"):
        with pytest.raises(HintParseError) as raised:
            tls._u8_prefixed(bad, "ec_point_formats")
        assert str(raised.value) == "ec_point_formats length does not match its extension"


def test_ja4_unknown_version_and_counts_capped_at_99() -> None:
    base = hello()
    odd = attrs.evolve(base, legacy_version=0x7F12, supported_versions=None)
    assert tls.ja4_string(odd)[:3] == "t00"
    many = attrs.evolve(base, cipher_suites=tuple(range(0x1000, 0x1000 + 120)),
                        extensions=tuple(range(0x2000, 0x2000 + 130)) + (0,))
    assert tls.ja4_string(many)[:8] == "t13d9999"


RANDOM = b"\x00" * 32


@pytest.mark.parametrize("body, message", [
    (b"\x03\x03" + RANDOM, "client hello truncated"),  # 34 bytes: no session id length
    (b"\x03\x03" + RANDOM + b"\x00", "client hello truncated before cipher suites"),  # 35
    (b"\x02\x03" + RANDOM + b"\x00", "bad client hello version 0x0203"),
    (b"\x04\x03" + RANDOM + b"\x00", "bad client hello version 0x0403"),
])
def test_client_hello_body_errors(body: bytes, message: str) -> None:
    """The first bounds: 2 version bytes, 32 random bytes, a session id length."""
    with pytest.raises(HintParseError) as raised:
        tls._parse_body(body, len(body))
    assert str(raised.value) == message


def test_client_hello_version_checks_the_major_byte_only() -> None:
    body = b"\x03\x07" + RANDOM + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    assert tls._parse_body(body, 99).legacy_version == 0x0307


def u16s(*values: int) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


@pytest.mark.parametrize("etype, ext, message", [
    (43, b"\x00", "supported_versions is empty"),
    (43, b"\x01\x03", "supported_versions is empty"),
    (43, b"\x03\x03\x04\x03", "supported_versions list has an odd length"),
    (43, b"\x02\x03", "supported_versions length does not match its extension"),
    (10, b"\x00\x03" + b"\x00\x17\x00", "supported_groups list has an odd length"),
    (13, b"\x00\x03" + b"\x04\x03\x05", "signature_algorithms list has an odd length"),
    (10, b"\x00\x05\x00", "supported_groups length does not match its extension"),
    (13, b"\x00\x05\x00", "signature_algorithms length does not match its extension"),
])
def test_extension_errors_name_the_extension(etype: int, ext: bytes, message: str) -> None:
    with pytest.raises(HintParseError) as raised:
        tls._parse_extension(etype, ext)
    assert str(raised.value) == message


def test_extension_lists() -> None:
    assert tls._parse_extension(43, b"\x04" + u16s(0x0304, 0x0303)) == (0x0304, 0x0303)
    assert tls._parse_extension(10, b"\x00\x04" + u16s(0x001D, 0x0017)) == (0x001D, 0x0017)
    assert tls._parse_extension(13, b"\x00\x02" + u16s(0x0403)) == (0x0403,)
    assert tls._parse_extension(11, b"\x02\x00\x01") == (0, 1)


def test_ec_point_formats_error_names_the_extension() -> None:
    with pytest.raises(HintParseError) as raised:
        tls._parse_extension(11, b"\x03\x00")
    assert str(raised.value) == "ec_point_formats length does not match its extension"


def test_alpn_list_longer_than_255_bytes() -> None:
    """The list length is a u16: a client may offer names totalling more than 255 bytes."""
    names = tuple(bytes([0x61 + i]) * 60 for i in range(5))  # 5 x (1 + 60) = 305 bytes
    block = b"".join(bytes([len(n)]) + n for n in names)
    assert tls._alpn(len(block).to_bytes(2, "big") + block) == names


@pytest.mark.parametrize("name, expected", [
    (b"h2", "h2"),
    (b"a\x01", "61"),  # last byte not alphanumeric: first and last hex digits
    (b"\x01a", "01"),  # first byte not alphanumeric
    (b"\xab\xcd", "ad"),
    (b"\xabxy\xcd", "ad"),
])
def test_ja4_alpn_characters(name: bytes, expected: str) -> None:
    """
    FoxIO JA4: the first and last characters of the first ALPN, or the first
    and last of its hex when either byte is not alphanumeric.
    """
    h = attrs.evolve(hello(), alpn=(name, b"h2"))
    assert tls.ja4_string(h)[8:10] == expected


def test_ja4_without_signature_algorithms_hashes_the_extensions_alone() -> None:
    """FoxIO JA4: without signature algorithms part c hashes the sorted extensions, no ``_``."""
    h = attrs.evolve(hello(), extensions=(0x0000, 0x0010, 0x002B, 0x000A), signature_algorithms=())
    expected = hashlib.sha256(b"000a,002b").hexdigest()[:12]
    assert tls.ja4_string(h).split("_")[2] == expected
    with_sigs = attrs.evolve(h, signature_algorithms=(0x0403, 0x0804))
    expected = hashlib.sha256(b"000a,002b_0403,0804").hexdigest()[:12]
    assert tls.ja4_string(with_sigs).split("_")[2] == expected


def counting_version_names(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record each call of ``version_name``: one per version each time the values are made."""
    calls: list[int] = []
    real = tls.version_name

    def counting(version: int) -> str:
        calls.append(version)
        return real(version)

    monkeypatch.setattr(tls, "version_name", counting)
    return calls


def test_len_first_counts_the_values_not_yet_made() -> None:
    """``len`` before anything else: the mutant ``if self._described:`` (``__len__``) counts 4."""
    assert len(TlsAttributes(hello())) == 5  # sni, versions, ja3, ja3_hash, ja4
    assert len(TlsAttributes(hello(alpn=("h2",)))) == 6


def test_membership_after_the_values_are_made() -> None:
    """
    Once ``versions`` is made, a key that is not there is not a member (the
    mutant ``return True`` in ``__contains__`` says every key is).
    """
    attrs = TlsAttributes(hello())
    assert attrs["versions"]
    assert "nope" not in attrs and "alpn" not in attrs
    assert "versions" in attrs and "sni" in attrs and "ja4" in attrs


def test_alpn_is_a_member_before_it_is_made() -> None:
    """
    ``"alpn" in`` a fresh mapping for a hello with ALPN (the mutants
    ``key != "alpn"``, ``"XXalpnXX"``, ``"ALPN"`` and ``bool(None)`` in
    ``__contains__`` say no), and other keys still are not.
    """
    attrs = TlsAttributes(hello(alpn=("h2",)))
    assert "alpn" in attrs
    assert "nope" not in TlsAttributes(hello(alpn=("h2",)))
    assert "alpn" not in TlsAttributes(hello())


def test_values_made_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    ``alpn``/``versions`` are made once however often they are read (the
    mutants ``self._described = None``/``False`` in ``_describe`` make them
    again on every read).
    """
    calls = counting_version_names(monkeypatch)
    attrs = TlsAttributes(hello())
    assert len(attrs) == 5 and len(attrs) == 5
    assert list(attrs) == list(attrs)
    assert attrs["versions"] == attrs["versions"]
    assert calls == [0x0304, 0x0303]  # the sample hello offers TLS 1.3 and 1.2, once each


def test_a_missing_sni_makes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Routing asks for ``sni`` of a hello without one: a KeyError, and the other
    values are not made (the mutants ``key != "XXsniXX"``/``"SNI"`` in
    ``__getitem__`` make them first).
    """
    calls = counting_version_names(monkeypatch)
    attrs = TlsAttributes(hello(sni=None))
    with pytest.raises(KeyError):
        attrs["sni"]
    assert calls == []
