"""
The two decision points the data path calls, and the counting around them.

- :func:`admit`, at accept (before any upstream connect): the IP and port
  rules (and the SNI-free part of every policy), then the per-source
  limits. A refusal is the ``connection_termination_details`` to log; the
  caller closes the client and never connects upstream.
- :func:`inspected`, right after inspection (the ClientHello, or none): the
  SNI rules, when the accept-time answer depended on them.
- :func:`closed`, when the connection ends: the limits' counts.

A listener without policies or limits has ``authz is None`` and the data
path skips all of this. Counters are Envoy's network RBAC filter's with
Istio's ``tcp.`` stat prefix: ``tcp.rbac.allowed``, ``tcp.rbac.denied``,
``tcp.rbac.shadow_allowed``, ``tcp.rbac.shadow_denied``; refusals by a
limit count ``tcp.limit_refused{reason=...}`` (and Envoy's
``listener.<name>.downstream_cx_overflow`` for the whole-listener cap).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.logger import Logger

from tsgate.authz.engine import UNKNOWN, Facts, ListenerAuthz, Verdict
from tsgate.authz.limits import REASON_MAX_CONNECTIONS, Guards, SourceTracker

log = Logger(namespace="tsgate.authz")

ALLOWED = "tcp.rbac.allowed"
DENIED = "tcp.rbac.denied"
SHADOW_ALLOWED = "tcp.rbac.shadow_allowed"
SHADOW_DENIED = "tcp.rbac.shadow_denied"
LIMIT_REFUSED = "tcp.limit_refused"
#: seconds between two log lines about limit refusals on one listener
LOG_INTERVAL = 1.0


def limit_details(reason: str) -> str:
    """The access log's ``connection_termination_details`` for a limit refusal."""
    return f"tsgate_limit_exceeded[{reason}]"


class Admission:
    """One connection's standing with its listener's policies and limits."""

    __slots__ = ("authz", "facts", "listener", "inspect", "tracker", "address", "inspecting",
                 "source_counted", "remote_known", "decided", "shadowed", "verdict")

    def __init__(self, authz: ListenerAuthz, facts: Facts, listener: str,
                 inspect: bool) -> None:
        self.authz = authz
        self.facts = facts
        self.listener = listener
        self.inspect = inspect
        #: the listener's tracker when its caps counted this connection
        self.tracker: Optional[SourceTracker] = None
        self.address = ""
        self.inspecting = False
        self.source_counted = False
        self.remote_known = True
        self.decided = False
        self.shadowed = False
        self.verdict: Optional[Verdict] = None


def _enforce(adm: Admission, guards: Guards, stats: Any, now: float) -> Optional[str]:
    """Decide if possible; the termination details of a denial, else None."""
    authz = adm.authz
    if authz.enforced.empty:
        adm.decided = True
    else:
        verdict = authz.decide(adm.facts)
        if verdict is not None:
            adm.decided = True
            adm.verdict = verdict
            if verdict.allowed:
                stats.inc(ALLOWED)
            else:
                stats.inc(DENIED)
                facts = adm.facts
                guards.note_denied(adm.listener, facts.remote or "-", verdict.policy, now)
                log.debug("rbac denied {source} on {listener}: {details}", source=facts.remote,
                          listener=adm.listener, details=verdict.termination_details)
                return verdict.termination_details
    return None


def _shadow(adm: Admission, guards: Guards, stats: Any, now: float, final: bool) -> None:
    if adm.shadowed or adm.authz.shadow.empty:
        return
    facts = adm.facts
    if final and facts.sni is UNKNOWN:
        facts.sni = None  # closed before any ClientHello: judge it as "no SNI"
    verdict = adm.authz.decide_shadow(facts)
    if verdict is None:
        return
    adm.shadowed = True
    if verdict.allowed:
        stats.inc(SHADOW_ALLOWED)
        return
    stats.inc(SHADOW_DENIED)
    guards.note_denied(adm.listener, facts.remote or "-", verdict.policy, now, shadow=True)
    log.info("rbac dry-run: would deny {source} on listener {listener}: {details}",
             source=facts.remote, listener=adm.listener, details=verdict.termination_details)


def admit(guards: Guards, stats: Any, listener: Any, *, peer: Optional[str],
          remote: Optional[str], local: Optional[str], now: float,
          remote_known: bool = True, reads_first: Optional[bool] = None,
          principal: Optional[str] = None) -> tuple[Optional[Admission], Optional[str]]:
    """
    At accept: (the connection's admission, or None when the listener has no
    policies or limits; the termination details of a refusal, or None).

    ``peer`` is the socket peer's address, ``remote`` the PROXY protocol
    source (None: the peer), ``local`` the address the client connected to.
    ``remote_known`` False: a PROXY header is still to come, so only the
    listener-wide caps are applied now and :func:`remote_found` does the rest.
    ``reads_first``: the connection waits for client bytes before its route
    (inspection, a PROXY header): it counts against the inspection cap until
    :func:`inspected` (default: the listener inspects).
    A refused connection must still be given to :func:`closed`.
    """
    waiting = listener.inspect if reads_first is None else reads_first
    authz: Optional[ListenerAuthz] = listener.authz
    if authz is None:
        return None, None
    facts = Facts(peer, remote, local, UNKNOWN if listener.inspect else None, principal)
    adm = Admission(authz, facts, listener.name, listener.inspect)
    limits = authz.limits
    if limits is not None and (limits.max_connections is not None
                               or limits.max_inspecting is not None or limits.tracks_sources):
        tracker = guards.tracker(listener.name)
        reason = tracker.admit_listener(facts.remote or "-", now, limits, waiting)
        if reason is not None:
            return adm, _limited(stats, tracker, listener.name, reason, facts.remote, now)
        adm.tracker = tracker
        adm.inspecting = waiting
    if not remote_known:
        adm.remote_known = False
        return adm, None
    return adm, _admit_remote(adm, guards, stats, now)


def _limited(stats: Any, tracker: SourceTracker, listener: str, reason: str,
             address: Optional[str], now: float) -> str:
    stats.inc(LIMIT_REFUSED, reason=reason)
    if reason == REASON_MAX_CONNECTIONS:
        stats.inc("listener.downstream_cx_overflow", listener=listener)
    # One log line per listener per second at most: a flood must not become a log flood.
    tracker.unlogged += 1
    if now - tracker.last_logged >= LOG_INTERVAL:
        log.info("limit tsgate.io/{reason}: refused {address} on listener {listener} at accept "
                 "({count} refused since the last line)", reason=reason, address=address,
                 listener=listener, count=tracker.unlogged)
        tracker.last_logged = now
        tracker.unlogged = 0
    return limit_details(reason)


def _admit_remote(adm: Admission, guards: Guards, stats: Any, now: float) -> Optional[str]:
    """The policies (as far as they can be decided) and the per-address limits."""
    adm.remote_known = True
    refusal = _enforce(adm, guards, stats, now)
    _shadow(adm, guards, stats, now, final=refusal is not None)
    if refusal is not None:
        return refusal
    limits = adm.authz.limits
    if adm.tracker is not None and limits is not None and limits.tracks_sources:
        address = adm.facts.remote or "-"
        reason = adm.tracker.admit_source(address, now, limits)
        if reason is not None:
            return _limited(stats, adm.tracker, adm.listener, reason, address, now)
        adm.address = address
        adm.source_counted = True
    return None


def remote_found(adm: Optional[Admission], guards: Guards, stats: Any,
                 remote: Optional[str], now: float) -> Optional[str]:
    """The PROXY header's client address is known: policies and per-address limits."""
    if adm is None or adm.remote_known:
        return None
    if remote:
        adm.facts.remote = remote
        adm.facts.forget_ips()
    return _admit_remote(adm, guards, stats, now)


def inspected(adm: Optional[Admission], guards: Guards, stats: Any, sni: Optional[str],
              now: float) -> Optional[str]:
    """Right after inspection (``sni`` None: no SNI): the denial's details, or None."""
    if adm is None:
        return None
    if adm.inspecting and adm.tracker is not None:
        adm.tracker.inspected()
        adm.inspecting = False
    if adm.decided and adm.shadowed:
        return None
    if adm.facts.sni is UNKNOWN:
        adm.facts.sni = sni
    refusal = None if adm.decided else _enforce(adm, guards, stats, now)
    _shadow(adm, guards, stats, now, final=True)
    return refusal


def closed(adm: Optional[Admission]) -> None:
    """The connection ended: give back what it counted."""
    if adm is None or adm.tracker is None:
        return
    tracker, adm.tracker = adm.tracker, None
    tracker.release_listener(adm.inspecting)
    adm.inspecting = False
    if adm.source_counted:
        adm.source_counted = False
        tracker.release_source(adm.address)
