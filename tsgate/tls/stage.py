"""
TLS in the data path: termination of the client's TLS and origination of
TLS to the upstream, as steps of one proxied connection.

Termination runs after inspection: the ClientHello that chose the chain (by
SNI) is already buffered, so a TLS layer over pyOpenSSL
(:class:`tsgate.tls.transport.TlsLayer`; ``TSGATE_TLS=twisted``: Twisted's
``TLSMemoryBIOProtocol``) is put between the socket's transport and the
connection (:func:`wrap`: the transport delivers to the TLS layer, the
connection's ``transport`` becomes the TLS layer; this works on Twisted's TCP
transports and on tsgate's lean transport alike) and the buffered bytes are
replayed into it. The
upstream is connected once the handshake completes (a failed handshake
costs no upstream connection); from then on the relay moves plaintext, and
writes to the client go through the TLS layer.

Origination runs after the upstream TCP connect: the upstream transport is
switched to TLS as a client; the relay starts when the handshake (and the
server's verification) succeeds, and a failure closes the client with
``UF`` and ``upstream_transport_failure_reason``.

Counters are Envoy's ``ssl.*`` names under the listener (termination:
``listener.<name>.ssl.handshake``) or the cluster (origination:
``cluster.<name>.ssl.handshake``), as Envoy scopes them.
"""

from __future__ import annotations

import os
from typing import Any

from OpenSSL import SSL
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from tsgate.proxy.stages import Ending
from tsgate.tls import credentials as C
from tsgate.tls.identity import principal_of
from tsgate.tls.server import TlsSession
from tsgate.tls.transport import TlsLayer, lean_wrap

#: Istio's PILOT_GATEWAY_TRANSPORT_SOCKET_CONNECT_TIMEOUT (15 s): a client
#: that does not finish its handshake in this time is closed.
HANDSHAKE_TIMEOUT = 15.0

HANDSHAKING = "handshaking"

#: A client whose close (close_notify, FIN or reset) came with its Finished,
#: before any application data: nothing to dial for (as HAProxy, which never
#: connects a server for a client that closed before sending anything).
CLOSED_AFTER_HANDSHAKE = Ending(
    termination="downstream_closed_after_handshake",
    why="client closed right after its TLS handshake, nothing sent: no upstream connection")


#: the TLS layer: tsgate's (tsgate.tls.transport) unless TSGATE_TLS=twisted
LEAN = os.environ.get("TSGATE_TLS", "lean") != "twisted"

#: (id(creator), client) -> (creator, TLSMemoryBIOFactory)
_FACTORIES: dict[tuple[int, bool], tuple[Any, TLSMemoryBIOFactory]] = {}


def wrap(transport: Any, creator: Any, client: bool, protocol: Any) -> Any:
    """
    Put a TLS layer between ``transport`` (already connected to ``protocol``)
    and ``protocol``; returns the layer, which is now ``protocol.transport``:
    a :class:`~tsgate.tls.transport.TlsLayer`, or with ``TSGATE_TLS=twisted``
    Twisted's (what ``_newtls.startTLS`` does for Twisted's own transports,
    for any transport that delivers to its ``protocol``).
    """
    if LEAN:
        return lean_wrap(transport, creator, client, protocol)
    factory = _FACTORIES.get((id(creator), client))
    if factory is None or factory[0] is not creator:
        # One factory per context (per terminating server / originating
        # cluster), not per connection; it only holds the connection creator.
        made = TLSMemoryBIOFactory(creator, client, None)  # type: ignore[arg-type]
        factory = _FACTORIES[(id(creator), client)] = (creator, made)
        if len(_FACTORIES) > 4096:  # contexts of old tables: bounded
            _FACTORIES.clear()
            _FACTORIES[(id(creator), client)] = factory
    tls = factory[1].protocol(factory[1], protocol, False)
    transport.protocol = tls
    if hasattr(transport, "half_close"):
        # The lean transport calls readConnectionLost only on half-closeable
        # protocols; Twisted's TLS layer is not one (a FIN ends the connection).
        transport.half_close = False
    tls.makeConnection(transport)
    protocol.transport = tls
    return tls


def _peer_facts(conn: Any, prefix: str, peer_certificate: bool = True) -> dict[str, str]:
    """Version, cipher and (when one can have been sent) the peer's certificate."""
    facts: dict[str, str] = {}
    version = conn.get_protocol_version_name()
    cipher = conn.get_cipher_name()
    if version:
        facts[f"{prefix}tls_version"] = version
    if cipher:
        facts[f"{prefix}tls_cipher"] = cipher
    peer = conn.get_peer_certificate(as_cryptography=True) if peer_certificate else None
    if peer is not None:
        facts[f"{prefix}peer_subject"] = peer.subject.rfc4514_string()
        sans = C.all_sans(peer)
        if sans:
            facts[f"{prefix}peer_san"] = ",".join(sans)
    return facts


def failure_reason(session: Any, reason: Any) -> str:
    """
    One token in the shape of Envoy's ``%UPSTREAM_TRANSPORT_FAILURE_REASON%``:
    ``TLS_error:|SSL_routines:CERTIFICATE_VERIFY_FAILED:<detail>:TLS_error_end``.
    """
    parts: list[str] = []
    value = getattr(reason, "value", reason)
    if isinstance(value, SSL.Error) and value.args and isinstance(value.args[0], list):
        for entry in value.args[0]:
            if isinstance(entry, tuple) and len(entry) == 3:
                lib, _func, why = entry
                parts.append(f"{lib}:{why.upper()}")
    elif value is not None:
        parts.append(str(value) or type(value).__name__)
    detail = session.facts.get("verify_error") if session is not None else None
    if detail:
        parts.append(detail)
    text = "TLS_error:|" + ":".join(parts or ["connection_closed"]) + ":TLS_error_end"
    return "_".join(text.replace('"', "'").split())


def _count_failure(stats: Any, prefix: str, session: Any, reason: Any, **labels: str) -> None:
    stats.inc(f"{prefix}ssl.connection_error", **labels)
    failure = session.failure if session is not None else None
    text = str(getattr(reason, "value", reason)).lower()
    if failure is None and "peer did not return a certificate" in text:
        failure = "fail_verify_no_cert"
        stats.inc(f"{prefix}ssl.no_certificate", **labels)
    if failure is not None:
        stats.inc(f"{prefix}ssl.{failure}", **labels)


# ------------------------------------------------------------- termination


def start_termination(down: Any, decision: Any) -> None:
    """Switch the client connection to TLS and replay the buffered ClientHello."""
    termination = decision.termination
    ctx = down.ctx
    session = TlsSession(down)
    session.facts["tls_mode"] = termination.mode
    down.tls = session
    down.state = HANDSHAKING
    buffered, down.buffer = down.buffer, b""
    tls = wrap(down.transport, termination.creator, False, down)
    down.inspect_timer = ctx.timers.schedule(HANDSHAKE_TIMEOUT,
                                             lambda: _handshake_timed_out(down))
    tls.resumeProducing()
    if buffered:
        tls.dataReceived(buffered)


def _handshake_timed_out(down: Any) -> None:
    down.inspect_timer = None
    session = down.tls
    if session is None or session.done or down.state != HANDSHAKING:
        return
    down.ctx.stats.inc("listener.ssl.handshake_timeout", listener=down.listener.name)
    down.termination = "TLS handshake timed out"
    down.record.connection_termination_details = "downstream_tls_handshake_timeout"
    session.failure = session.failure or "handshake_timeout"
    down.abort()


def handshake_completed(down: Any) -> None:
    """The client's handshake succeeded: count it, note the facts, connect upstream."""
    session = down.tls
    if session is None or session.done:
        return
    session.done = True
    if down.inspect_timer is not None:
        down.inspect_timer.cancel()
        down.inspect_timer = None
    stats, key = down.ctx.stats, down.runtime.stats_key  # listener=<name>
    stats.inc_key("listener.ssl.handshake", key)
    conn = down.transport.getHandle()
    mutual = session.facts.get("tls_mode") in ("MUTUAL", "OPTIONAL_MUTUAL")
    # SIMPLE asks for no client certificate: none to look for
    facts = _peer_facts(conn, "", peer_certificate=mutual)
    session.facts.update(facts)
    if "tls_version" in facts:
        stats.inc_key("listener.ssl.versions." + facts["tls_version"], key)
    if "tls_cipher" in facts:
        stats.inc_key("listener.ssl.ciphers." + facts["tls_cipher"], key)
    if mutual:
        if "peer_subject" not in facts:
            stats.inc_key("listener.ssl.no_certificate", key)
        else:
            # The verified certificate's SPIFFE identity: AuthorizationPolicy
            # principals/namespaces are decided next (tsgate.authz.stages).
            session.principal = principal_of(conn.get_peer_certificate(as_cryptography=True))
            if session.principal is not None:
                session.facts["source_principal"] = "spiffe://" + session.principal
    if LEAN and down.transport.peer_ended():
        # Gone before anything could be dialed, with nothing sent: a probe
        # or certificate check. No upstream connection, as HAProxy.
        down.end(CLOSED_AFTER_HANDSHAKE)
        return
    down.transport.pauseProducing()
    # route_by again, now with down.tls set: the decision checks (authorization
    # with the principal) run, then the upstream connect.
    down.route_by(down.decision)


def termination_lost(down: Any, reason: Failure) -> None:
    """The client went away before its handshake completed."""
    session = down.tls
    _count_failure(down.ctx.stats, "listener.", session, reason, listener=down.listener.name)
    if down.record.connection_termination_details == "-":
        down.record.connection_termination_details = "downstream_tls_handshake_failed"
    session.facts["downstream_transport_failure_reason"] = failure_reason(session, reason)
    if down.termination == "-":
        down.termination = "TLS handshake failed"


# ------------------------------------------------------------- origination


def start_origination(down: Any, upstream: Any) -> None:
    """Switch the new upstream connection to TLS (client side); relay after the handshake."""
    cluster = down.cluster
    session = TlsSession(upstream)
    upstream.tls = session
    wrap(upstream.transport, cluster.tls.creator, True, upstream)
    down.connect_timer = down.ctx.timers.schedule(
        HANDSHAKE_TIMEOUT, lambda: _origination_timed_out(down, upstream))


def _origination_timed_out(down: Any, upstream: Any) -> None:
    down.connect_timer = None
    session = upstream.tls
    if session is None or session.done or down.state == "closed":
        return
    origination_failed(down, upstream, Failure(TimeoutError("TLS handshake timeout")))


def origination_done(upstream: Any) -> None:
    session = upstream.tls
    down = upstream.downstream
    if session is None or session.done:
        return
    session.done = True
    if down.connect_timer is not None:
        down.connect_timer.cancel()
        down.connect_timer = None
    stats = down.ctx.stats
    cluster = down.cluster
    stats.inc("cluster.ssl.handshake", cluster=cluster.name)
    session.facts.update(_peer_facts(upstream.transport.getHandle(), "upstream_"))
    if down.state == "closed":
        upstream.transport.loseConnection()
        return
    down.upstream_ready()


def origination_failed(down: Any, upstream: Any, reason: Any) -> None:
    """The upstream TLS handshake or its verification failed: ``UF``, client closed."""
    session = upstream.tls
    if session is not None:
        session.done = True  # reported once
    cluster = down.cluster
    stats = down.ctx.stats
    _count_failure(stats, "cluster.", session, reason, cluster=cluster.name)
    stats.inc("cluster.upstream_cx_connect_fail", cluster=cluster.name)
    token = failure_reason(session, reason)
    down.record.response_flags = "UF"
    down.record.upstream_transport_failure_reason = token
    message = f"{cluster.name} {down.record.upstream_host}: upstream TLS failed: {token}"
    down.ctx.balancer.state(cluster).recent_errors.append((down.ctx.reactor.seconds(), message))
    down.ctx.error(message)
    down.termination = "upstream TLS handshake failed"
    down.abort()


# ----------------------------------------------------------------- helpers


def is_tls(transport: Any) -> bool:
    """Is this a connection's TLS layer (see :func:`wrap`)?"""
    return isinstance(transport, (TlsLayer, TLSMemoryBIOProtocol))


def release(transport: Any) -> None:
    """Unregister the producer and close, also for a TLS layer already gone."""
    if type(transport) is TlsLayer:
        transport.release()
        return
    if is_tls(transport) and (transport._lostTLSConnection or transport.disconnecting):
        return
    transport.unregisterProducer()
    transport.loseConnection()


def half_close(transport: Any) -> None:
    """
    Our end of a TLS connection is done writing: send close_notify after
    what is queued, then shut the TCP write side, and keep reading (TLS 1.3
    half-close). Before the handshake completed: close the connection.
    """
    if type(transport) is TlsLayer:
        transport.half_close()
        return
    tls = transport
    if not tls._handshakeDone or tls._appSendBuffer:
        transport.loseConnection()
        return
    try:
        tls._tlsConnection.shutdown()
    except SSL.Error:
        pass
    tls._flushSendBIO()
    tls.transport.loseWriteConnection()
