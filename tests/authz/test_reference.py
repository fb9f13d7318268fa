"""
The compiled engine against a direct reading of Istio's rules (ISTIO-L4.md §6)
on random policies: IP blocks, ports, SNI conditions, HTTP-only fields,
DENY/ALLOW, dry-run; at accept (SNI unknown) and after the ClientHello.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from tsgate.authz.compile import compile_listener, policy_id
from tsgate.authz.engine import UNKNOWN, Facts
from tsgate.config.model import (
    AuthorizationPolicy,
    AuthzCondition,
    AuthzOperation,
    AuthzRule,
    AuthzSource,
    Meta,
)
from tsgate.routing import Listener

PORT = 8443
BLOCKS = ["127.0.0.0/30", "127.0.0.4/31", "127.0.0.7", "10.0.0.0/8", "::1"]
SNIS = ["a.example.com", "*.example.com", "b.*", "*"]
ADDRESSES = ["127.0.0.1", "127.0.0.5", "127.0.0.7", "10.1.2.3", "192.0.2.1", "::1"]

values = st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=2, unique=True).map(tuple)
ports = st.lists(st.sampled_from(["8443", "31400", "80"]), min_size=1, max_size=2,
                 unique=True).map(tuple)


@st.composite
def sources(draw: Any) -> AuthzSource:
    fields = []
    for name in draw(st.lists(st.sampled_from(["ipBlocks", "notIpBlocks", "remoteIpBlocks",
                                               "notRemoteIpBlocks", "requestPrincipals"]),
                              min_size=1, max_size=2, unique=True)):
        fields.append((name, ("*",) if name == "requestPrincipals" else draw(values)))
    return AuthzSource(tuple(fields))


@st.composite
def operations(draw: Any) -> AuthzOperation:
    fields = []
    for name in draw(st.lists(st.sampled_from(["ports", "notPorts", "methods"]),
                              min_size=1, max_size=2, unique=True)):
        fields.append((name, ("GET",) if name == "methods" else draw(ports)))
    return AuthzOperation(tuple(fields))


@st.composite
def conditions(draw: Any) -> AuthzCondition:
    key = draw(st.sampled_from(["source.ip", "remote.ip", "connection.sni",
                                "destination.port", "request.headers[x]"]))
    pick = {"source.ip": values, "remote.ip": values, "destination.port": ports,
            "connection.sni": st.lists(st.sampled_from(SNIS), min_size=1, max_size=2,
                                       unique=True).map(tuple),
            "request.headers[x]": st.just(("y",))}[key]
    which = draw(st.sampled_from(["values", "notValues", "both"]))
    return AuthzCondition(key, draw(pick) if which != "notValues" else None,
                          draw(pick) if which != "values" else None)


rules = st.builds(
    AuthzRule,
    sources=st.one_of(st.none(), st.lists(sources(), min_size=1, max_size=2).map(tuple)),
    operations=st.one_of(st.none(), st.lists(operations(), min_size=1, max_size=2).map(tuple)),
    when=st.lists(conditions(), max_size=2).map(tuple))


@st.composite
def policies(draw: Any) -> list[AuthorizationPolicy]:
    out = []
    for i in range(draw(st.integers(1, 3))):
        dry = draw(st.booleans())
        meta = Meta("AuthorizationPolicy", "security.istio.io/v1", f"p{i}", "default",
                    annotations=(("istio.io/dry-run", "true"),) if dry else ())
        out.append(AuthorizationPolicy(
            meta, action=draw(st.sampled_from(["ALLOW", "DENY"])),
            rules=draw(st.one_of(st.none(), st.lists(rules, max_size=3).map(tuple)))))
    return out


# ------------------------------------------------------------- the reference

def _str_match(pattern: str, s: str) -> bool:
    if pattern == "*":
        return s != ""
    if pattern.endswith("*"):
        return s.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return s.endswith(pattern[1:])
    return s == pattern


def _in(address: str, blocks: tuple[str, ...]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == ipaddress.ip_network(b).version and ip in ipaddress.ip_network(b)
               for b in blocks)


HTTP_FIELDS = {"requestPrincipals", "methods"}


def rule_matches(rule: AuthzRule, action: str, src: str, remote: str,
                 sni: Any) -> Optional[bool]:
    """Istio's rule semantics on TCP, written out plainly; None: depends on the SNI."""
    http = any(n in HTTP_FIELDS for s in rule.sources or () for n, _ in s.fields) or \
        any(n in HTTP_FIELDS for o in rule.operations or () for n, _ in o.fields) or \
        any(c.key.startswith("request.") for c in rule.when)
    if http and action == "ALLOW":
        return False  # the whole rule is dropped

    def field_ok(name: str, vals: tuple[str, ...]) -> bool:
        if name in HTTP_FIELDS:
            return True  # DENY: the condition is dropped
        if name in ("ports", "notPorts"):
            hit = str(PORT) in vals
        else:
            hit = _in(remote if "Remote" in name or name.startswith("remote") else src, vals)
        return not hit if name.startswith("not") else hit

    if rule.sources is not None and not any(all(field_ok(n, v) for n, v in s.fields)
                                            for s in rule.sources):
        return False
    if rule.operations is not None and not any(all(field_ok(n, v) for n, v in o.fields)
                                               for o in rule.operations):
        return False
    unknown = False
    for c in rule.when:
        if c.key.startswith("request."):
            continue
        if c.key == "connection.sni":
            if sni is UNKNOWN:
                unknown = True
                continue
            s = sni or ""

            def test(patterns: tuple[str, ...], s: str = s) -> bool:
                return any(_str_match(p, s) for p in patterns)
        elif c.key == "destination.port":
            def test(patterns: tuple[str, ...]) -> bool:
                return str(PORT) in patterns
        else:
            address = src if c.key == "source.ip" else remote

            def test(patterns: tuple[str, ...], address: str = address) -> bool:
                return _in(address, patterns)
        if c.values and not test(c.values):
            return False
        if c.not_values and test(c.not_values):
            return False
    return None if unknown else True


def reference(pols: list[AuthorizationPolicy], dry: bool, src: str, remote: str,
              sni: Any) -> Optional[tuple[bool, str]]:
    mine = [p for p in pols
            if (dict(p.meta.annotations).get("istio.io/dry-run") == "true") == dry]
    pending = False
    for p in mine:
        if p.action != "DENY":
            continue
        for i, r in enumerate(p.rules or ()):
            m = rule_matches(r, "DENY", src, remote, sni)
            if m:
                return (False, policy_id(p, i))
            pending = pending or m is None
    if pending:
        return None
    allows = [p for p in mine if p.action == "ALLOW"]
    if not allows:
        return (True, "")
    for p in allows:
        for i, r in enumerate(p.rules or ()):
            m = rule_matches(r, "ALLOW", src, remote, sni)
            if m:
                return (True, policy_id(p, i))
            pending = pending or m is None
    return None if pending else (False, "")


@settings(max_examples=300)
@given(policies(), st.sampled_from(ADDRESSES), st.sampled_from(ADDRESSES),
       st.sampled_from([UNKNOWN, None, "a.example.com", "b.other.org", "x.example.com"]))
def test_engine_agrees_with_the_reference(pols: list[AuthorizationPolicy], src: str,
                                          remote: str, sni: Any) -> None:
    listener = Listener(bind="0.0.0.0", port=PORT)
    authz, _ = compile_listener(listener, pols)
    for dry, decide in ((False, authz.decide), (True, authz.decide_shadow)):
        got = decide(Facts(src, remote, "127.0.0.1", sni))
        want = reference(pols, dry, src, remote, sni)
        assert (None if got is None else (got.allowed, got.policy)) == want
