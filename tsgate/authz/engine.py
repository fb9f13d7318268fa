"""
The compiled authorization engine of one listener: pure, no Twisted, no I/O.

Everything that can be settled when the configuration is compiled is: the
listener's port is fixed, so ``to.operation.ports``/``notPorts`` and
``destination.port`` conditions are decided at compile time (a rule whose
``to`` cannot match this port is not compiled in); IP blocks become
:class:`CidrSet` lookups (one mask and one set lookup per prefix length);
string matches become exact/prefix/suffix/presence tests. Per connection the
data path builds one :class:`Facts` and calls :meth:`ListenerAuthz.decide`.

Istio's order (ISTIO-L4.md §6): CUSTOM (not enforced by tsgate) → DENY (any
matching rule denies) → no ALLOW policy: allow → an ALLOW rule matches:
allow → deny (``…[none]``). Dry-run policies are evaluated the same way,
separately, as Envoy's shadow rules: they only count and log.

SNI is known only after inspection. At accept the data path passes
``sni=UNKNOWN``; a rule that needs the SNI then evaluates to ``None``
(unknown), and :meth:`ListenerAuthz.decide` returns ``None`` when the answer
depends on it, so IP rules still close a connection at accept and only the
SNI-dependent part waits for the ClientHello.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any, Callable, Optional

import attrs

#: "the SNI is not known yet" (before inspection); distinct from None (no SNI).
UNKNOWN: Any = type("Unknown", (), {"__repr__": lambda self: "UNKNOWN"})()

IpValue = Optional[tuple[int, int]]  # (version, integer) or None (no address)


_FROM = int.from_bytes


def parse_ip(text: Optional[str]) -> IpValue:
    """
    ``"127.0.0.1"`` -> (4, int); IPv4-mapped IPv6 becomes IPv4; junk -> None.
    (``inet_pton``: a tenth of ``ipaddress.ip_address``'s cost, per connection.)
    """
    if not text:
        return None
    try:
        return (4, _FROM(socket.inet_pton(socket.AF_INET, text), "big"))
    except OSError:
        pass
    try:
        value = _FROM(socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0]), "big")
    except OSError:
        return None
    if value >> 32 == 0xFFFF:
        return (4, value & 0xFFFFFFFF)
    return (6, value)


class CidrSet:
    """IP blocks as ``{version: ((prefix length, shift, {network >> shift}), ...)}``."""

    __slots__ = ("tables", "texts")

    def __init__(self, blocks: Iterable[str]) -> None:
        by_len: dict[tuple[int, int], set[int]] = {}
        texts = []
        for block in blocks:
            net = ipaddress.ip_network(block, strict=False)
            texts.append(block)
            bits = 32 if net.version == 4 else 128
            shift = bits - net.prefixlen
            by_len.setdefault((net.version, shift), set()).add(int(net.network_address) >> shift)
            if net.version == 6 and net.prefixlen >= 96:
                mapped = net.network_address.ipv4_mapped
                if mapped is not None:  # ::ffff:a.b.c.d/120 also matches a.b.c.d/24
                    shift4 = 128 - net.prefixlen
                    by_len.setdefault((4, shift4), set()).add(int(mapped) >> shift4)
        tables: dict[int, list[tuple[int, frozenset[int]]]] = {4: [], 6: []}
        for (version, shift), nets in sorted(by_len.items()):
            tables[version].append((shift, frozenset(nets)))
        self.tables = {v: tuple(t) for v, t in tables.items()}
        self.texts = tuple(texts)

    def __contains__(self, ip: IpValue) -> bool:
        if ip is None:
            return False
        value = ip[1]
        for shift, nets in self.tables[ip[0]]:  # noqa: SIM110 (per connection: no generator)
            if value >> shift in nets:
                return True
        return False


def string_matcher(pattern: str) -> Callable[[str], bool]:
    """Istio's string match: ``*`` (non-empty), ``prefix*``, ``*suffix``, exact."""
    if pattern == "*":
        return bool
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        return lambda s: s.startswith(prefix)
    if pattern.startswith("*"):
        suffix = pattern[1:]
        return lambda s: s.endswith(suffix)
    return lambda s: s == pattern


def any_string(patterns: Iterable[str]) -> Callable[[str], bool]:
    exact = frozenset(p for p in patterns if "*" not in p)
    others = tuple(string_matcher(p) for p in patterns if "*" in p)
    if not others:
        return exact.__contains__
    return lambda s: s in exact or any(m(s) for m in others)


class Facts:
    """
    What one connection offers the engine. Addresses are strings (as the
    transport gives them) parsed on first use; ``sni`` is ``UNKNOWN`` before
    inspection and None when the client sent none; ``principal`` is the
    verified client certificate's identity (``cluster.local/ns/x/sa/y``,
    from its SPIFFE URI SAN: tsgate.tls.identity), ``UNKNOWN`` before the
    TLS handshake of a MUTUAL/OPTIONAL_MUTUAL server, or None (no certificate).
    """

    __slots__ = ("source", "remote", "destination", "sni", "principal", "_ips")

    def __init__(self, source: Optional[str], remote: Optional[str] = None,
                 destination: Optional[str] = None, sni: Any = UNKNOWN,
                 principal: Optional[str] = None) -> None:
        self.source = source
        self.remote = remote if remote is not None else source
        self.destination = destination
        self.sni = sni
        self.principal = principal
        self._ips: dict[str, IpValue] = {}

    def forget_ips(self) -> None:
        self._ips.clear()

    def ip(self, which: str) -> IpValue:
        value = self._ips.get(which, UNKNOWN)
        if value is UNKNOWN:
            value = self._ips[which] = parse_ip(getattr(self, which))
        return value  # type: ignore[no-any-return]


Check = Callable[[Facts], bool]


def _principal(facts: Facts) -> str:
    p = facts.principal or ""
    return p[len("spiffe://"):] if p.startswith("spiffe://") else p


def _namespace(facts: Facts) -> str:
    parts = _principal(facts).split("/")
    for i in range(len(parts) - 1):
        if parts[i] == "ns":
            return parts[i + 1]
    return ""


def _service_account(facts: Facts) -> str:
    """``ns/sa`` from ``td/ns/<ns>/sa/<sa>``."""
    parts = _principal(facts).split("/")
    if len(parts) >= 5 and parts[-4] == "ns" and parts[-2] == "sa":
        return f"{parts[-3]}/{parts[-1]}"
    return ""


def ip_check(which: str, blocks: Iterable[str], negate: bool) -> Check:
    cidrs = CidrSet(blocks)
    if negate:
        return lambda f: f.ip(which) not in cidrs
    return lambda f: f.ip(which) in cidrs


def string_check(getter: Callable[[Facts], str], values: Iterable[str], negate: bool) -> Check:
    match = any_string(values)
    if negate:
        return lambda f: not match(getter(f))
    return lambda f: match(getter(f))


def sni_check(values: Optional[tuple[str, ...]],
              not_values: Optional[tuple[str, ...]]) -> Callable[[Optional[str]], bool]:
    pos = any_string(values) if values else None
    neg = any_string(not_values) if not_values else None

    def check(sni: Optional[str]) -> bool:
        s = (sni or "").lower()
        if pos is not None and not pos(s):
            return False
        return neg is None or not neg(s)

    return check


@attrs.frozen
class Verdict:
    """An authorization decision; ``policy`` is Istio's policy id or ``none``."""

    allowed: bool
    policy: str = ""
    reason: str = ""

    @property
    def termination_details(self) -> str:
        """Envoy's ``%CONNECTION_TERMINATION_DETAILS%`` for a denial."""
        return f"rbac_access_denied_matched_policy[{self.policy or 'none'}]"


class CompiledRule:
    """One policy rule for one listener (``to`` and ports already decided)."""

    __slots__ = ("policy_id", "sources", "checks", "sni_checks", "description",
                 "needs_identity")

    def __init__(self, policy_id: str, sources: Optional[tuple[tuple[Check, ...], ...]],
                 checks: tuple[Check, ...],
                 sni_checks: tuple[Callable[[Optional[str]], bool], ...],
                 description: str = "", needs_identity: bool = False) -> None:
        self.policy_id = policy_id
        #: any-of sources, each all-of field checks; None: any source
        self.sources = sources
        self.checks = checks
        self.sni_checks = sni_checks
        self.description = description
        #: some check looks at the peer principal (principals, namespaces,
        #: source.principal, ...): unknown until the client's TLS handshake
        self.needs_identity = needs_identity

    @property
    def needs_sni(self) -> bool:
        return bool(self.sni_checks)

    def match(self, facts: Facts) -> Optional[bool]:
        """True / False, or None when only the (still unknown) SNI or principal can tell."""
        if self.needs_identity and facts.principal is UNKNOWN:
            return None
        sources = self.sources
        if sources is not None:
            for source in sources:
                for check in source:
                    if not check(facts):
                        break
                else:
                    break
            else:
                return False
        for check in self.checks:
            if not check(facts):
                return False
        if self.sni_checks:
            sni = facts.sni
            if sni is UNKNOWN:
                return None
            for sni_ok in self.sni_checks:
                if not sni_ok(sni):
                    return False
        return True


@attrs.frozen
class PolicySet:
    """Enforced (or dry-run) rules of one listener, in Istio's evaluation order."""

    deny: tuple[CompiledRule, ...] = ()
    allow: tuple[CompiledRule, ...] = ()
    #: an ALLOW policy applies (even one whose rules all fell away: deny all)
    has_allow: bool = False

    @property
    def empty(self) -> bool:
        return not (self.deny or self.has_allow)

    def decide(self, facts: Facts) -> Optional[Verdict]:
        pending = False
        for rule in self.deny:
            hit = rule.match(facts)
            if hit:
                return Verdict(False, rule.policy_id, "DENY policy matched")
            if hit is None:
                pending = True
        if pending:
            return None
        if not self.has_allow:
            return Verdict(True, "", "no ALLOW policy applies")
        for rule in self.allow:
            hit = rule.match(facts)
            if hit:
                return Verdict(True, rule.policy_id, "ALLOW policy matched")
            if hit is None:
                pending = True
        if pending:
            return None
        return Verdict(False, "", "no ALLOW policy matched")


@attrs.frozen
class PolicyInfo:
    """What explain and the status page say about one applying policy."""

    ref: str  # "AuthorizationPolicy ns/name"
    action: str
    dry_run: bool
    notes: tuple[str, ...] = ()


@attrs.frozen(eq=False)
class ListenerAuthz:
    """Everything tsgate decides about who may use one listener."""

    enforced: PolicySet = PolicySet()
    shadow: PolicySet = PolicySet()
    limits: Any = None  # tsgate.authz.limits.Limits, or None
    policies: tuple[PolicyInfo, ...] = ()
    #: some rule looks at destination.ip (else the data path skips getHost())
    needs_local: bool = True
    #: some rule looks at the peer principal and the listener terminates TLS
    #: with client certificates (MUTUAL/OPTIONAL_MUTUAL): the principal is
    #: ``UNKNOWN`` at accept and those rules are decided after the handshake
    identity_pending: bool = False

    @property
    def needs_sni(self) -> bool:
        return any(r.needs_sni for s in (self.enforced, self.shadow)
                   for r in (*s.deny, *s.allow))

    def decide(self, facts: Facts) -> Optional[Verdict]:
        """The enforced decision, or None while it depends on the unknown SNI."""
        return self.enforced.decide(facts)

    def decide_shadow(self, facts: Facts) -> Optional[Verdict]:
        return self.shadow.decide(facts)

