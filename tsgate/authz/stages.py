"""
AuthorizationPolicy and per-source limits as pipeline stages
(``tsgate.proxy.stages``; docs/design.md "Stages"):

- an accept check: the listener-wide caps, then the IP/port rules and the
  per-address limits (unless a listener stage, the PROXY header, is still to
  tell the client's address: then those wait for the decision check);
- a decision check, after inspection and before the balancer: the SNI rules
  (and the deferred address checks);
- a close hook: the counts given back.

A listener without policies or limits gets no hooks at all.
"""

from __future__ import annotations

from typing import Any, Optional

from tsgate.authz import gate
from tsgate.proxy.stages import Ending, Stages


def host_of(address: Optional[str]) -> Optional[str]:
    """``"127.0.0.1:5000"`` / ``"[::1]:5000"`` -> the host; ``"-"``/None -> None."""
    if not address or address == "-":
        return None
    if address.startswith("["):
        return address[1:address.find("]")]
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() else address


def _ending(details: str) -> Ending:
    return Ending(termination=details, why=details)


def provider(listener: Any) -> Stages:
    """The :data:`tsgate.proxy.stages.StageProvider` of tsgate.authz."""
    if getattr(listener, "authz", None) is None:
        return Stages()
    return Stages(accept=(at_accept,), decision=(at_decision,), close=(at_close,))


def at_accept(conn: Any) -> Optional[Ending]:
    ctx = conn.ctx
    transport = conn.transport
    peer = getattr(transport.getPeer(), "host", None)
    waits = bool(conn.runtime.listener_stages)  # a PROXY header may change the client
    conn.authz, refusal = gate.admit(
        ctx.guards, ctx.stats, conn.listener, peer=peer, remote=None if waits else peer,
        local=getattr(transport.getHost(), "host", None) if conn.listener.authz.needs_local
        else None, now=ctx.reactor.seconds(),
        remote_known=not waits, reads_first=conn.runtime.reads_first)
    return None if refusal is None else _ending(refusal)


def at_decision(conn: Any, decision: Any) -> Optional[Ending]:
    adm = conn.authz
    if adm is None:
        return None
    ctx = conn.ctx
    now = ctx.reactor.seconds()
    if not adm.remote_known:
        refusal = gate.remote_found(adm, ctx.guards, ctx.stats,
                                    host_of(conn.remote_address), now)
        if refusal is not None:
            return _ending(refusal)
    sni = conn.record.requested_server_name
    refusal = gate.inspected(adm, ctx.guards, ctx.stats, None if sni in ("-", "") else sni, now)
    return None if refusal is None else _ending(refusal)


def at_close(conn: Any) -> None:
    gate.closed(conn.authz)
