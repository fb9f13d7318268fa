"""
The listener stages: what reads the first client bytes, before a route.

First the features' listener stages, in order (``ListenerRuntime.
listener_stages``; next: the PROXY protocol header in), each consuming its
bytes from the front of the buffer; then, on a listener with SNI chains, the
inspection: the peeked bytes are offered to each inspector in order (TLS
hint parsers, then STARTTLS negotiators, then other hint parsers) until one
decides::

    peek first bytes: TLS hint parser ─► SNI ─► decision
         │ not TLS: STARTTLS negotiators (answer the client, keep peeking)
         │ timeout / not TLS ─► decision without SNI (TCP fallback route, or NR)
         │ too large ─► closed

One deadline covers all of it (Envoy's listener_filters_timeout). The bytes
inspection peeks at stay in the buffer and are replayed upstream unchanged.
A listener with neither routes at accept and never waits for client bytes.

Each inspector is given at most its own ``max_bytes`` (``IHintParser``),
settled per listener in ``ListenerRuntime.inspectors``. One that raises
``HintTooLarge``, or is still undecided at its ``max_bytes``, is too large;
when no inspector recognises the bytes and none needs more, a too-large one
closes the connection and counts ``<name>.too_large`` (the TLS parser's is
Envoy's ``tls_inspector.client_hello_too_large``), as Envoy's tls_inspector
closes a connection whose ClientHello exceeds its cap.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from tsgate.interfaces import Hint, HintParseError, HintTooLarge, NeedMore, Preamble
from tsgate.proxy.decide import DecideStage
from tsgate.proxy.stages import NEED_MORE, Ending
from tsgate.proxy.state import INSPECTING

log = Logger(namespace="tsgate.proxy")

#: What the TLS hint parser's ``<name>.too_large`` is called (Envoy's tls_inspector stat).
TLS_TOO_LARGE = "tls_inspector.client_hello_too_large"


class InspectStage(DecideStage):
    """The listener stages (see the module docstring)."""

    __slots__ = ()

    def start_listener_stages(self) -> None:
        """Entry at accept: read first (under a deadline), or route at once."""
        for stage in self.runtime.listener_stages:
            accepted = getattr(stage, "accepted", None)  # optional: a verdict at accept
            ending = accepted(self) if accepted is not None else None
            if ending is not None:
                self.end(ending)
                return
        if self.runtime.reads_first:
            self.inspect_timer = self.ctx.timers.schedule(
                self.runtime.inspect_timeout, self._inspection_timed_out
            )
        else:
            self.transport.pauseProducing()
            self.route_by(self.runtime.tcp_decision)

    def read_first(self, data: bytes) -> None:
        """``dataReceived`` until the route is decided: buffer, then run the stages."""
        self.buffer += data
        if self.state is not INSPECTING or self.decision is not None:
            return  # decided; the relay replays the buffer
        stages = self.runtime.listener_stages
        while self.stage_index < len(stages):
            result = stages[self.stage_index].feed(self, self.buffer)
            if isinstance(result, Ending):
                self.end(result)
                return
            if result == NEED_MORE:
                return
            self.buffer = self.buffer[result:]
            self.stage_index += 1
        if self.listener.inspect:
            if self.buffer:  # else: wait for the ClientHello
                self._inspect()
        else:
            self.transport.pauseProducing()
            self.route_by(self.runtime.tcp_decision)

    def _inspect(self) -> None:
        """Offer the peeked bytes to each inspector in order until one decides."""
        ctx = self.ctx
        data = self.buffer
        size = len(data)
        undecided = False
        too_large: list[Any] = []
        for inspector, limit in self.runtime.inspectors:
            try:
                result = inspector.parse(data if size <= limit else data[:limit])
            except HintTooLarge:
                too_large.append(inspector)
                continue
            except HintParseError:
                self._count_parse_error(inspector)
                continue
            except Exception:
                name = getattr(inspector, "name", "?")
                ctx.stats.inc("plugin.crashed", plugin=name)
                log.failure("inspector {name} crashed", name=name)
                continue
            if isinstance(result, Hint):
                self._hinted(result)
                return
            if isinstance(result, Preamble):
                if self.preamble is None:
                    self._negotiated(result)
                    return
                continue  # a second STARTTLS request: not honoured
            if isinstance(result, NeedMore):
                if size < limit:
                    undecided = True
                else:  # undecided at its max_bytes: it is not given more
                    too_large.append(inspector)
        if undecided:
            return
        if too_large:
            self._too_large(too_large)
            return
        ctx.stats.inc_key("tls_inspector.tls_not_found", self.runtime.stats_key)
        self.decide(None)

    def _count_parse_error(self, inspector: Any) -> None:
        protocol = getattr(inspector, "protocol", "")
        prefix = "tls_inspector" if protocol == "tls" else protocol
        self.ctx.stats.inc_key(f"{prefix}.parse_error", self.runtime.stats_key)

    def _too_large(self, inspectors: list[Any]) -> None:
        """Nothing recognised the bytes and some inspector's max_bytes was reached: close."""
        names = [TLS_TOO_LARGE if getattr(inspector, "protocol", "") == "tls"
                 else f"{getattr(inspector, 'name', '?')}.too_large" for inspector in inspectors]
        for name in names:
            self.ctx.stats.inc_key(name, self.runtime.stats_key)
        self.end(Ending(termination=names[0].replace(".", "_"),
                        why=f"first bytes too large to inspect ({names[0]})"))

    def _negotiated(self, pre: Preamble) -> None:
        """A STARTTLS preamble: answer the client, drop it, peek at what follows."""
        self.preamble = pre
        self.ctx.stats.inc_key(f"{pre.protocol}.starttls", self.runtime.stats_key)
        self.buffer = self.buffer[pre.length:]
        self.transport.write(pre.client_reply)
        if self.buffer:
            self._inspect()

    def _hinted(self, hint: Hint) -> None:
        self.hint = hint
        stats, key = self.ctx.stats, self.runtime.stats_key
        if hint.protocol == "tls":
            stats.inc_key("tls_inspector.tls_found", key)
            stats.inc_key(
                "tls_inspector.sni_found" if hint.sni else "tls_inspector.sni_not_found", key
            )
            if "alpn" in hint.attributes:
                stats.inc_key("tls_inspector.alpn_found", key)
        self.decide(hint.sni)

    def _inspection_timed_out(self) -> None:
        self.inspect_timer = None
        if self.state is not INSPECTING:
            return
        key = self.runtime.stats_key
        self.ctx.stats.inc_key("listener.downstream_pre_cx_timeout", key)
        stages = self.runtime.listener_stages
        while self.stage_index < len(stages):
            # a stage still waiting decides (optional ``timed_out``): pass, or end
            timed_out = getattr(stages[self.stage_index], "timed_out", None)
            ending = (timed_out(self) if timed_out is not None else
                      Ending(termination="listener_stage_timeout",
                             why="timed out before the listener stages finished"))
            if ending is not None:
                self.end(ending)
                return
            self.stage_index += 1
        if self.listener.inspect:
            self.ctx.stats.inc_key("tls_inspector.read_timeout", key)
            self.decide(None, timed_out=True)
        else:  # every stage passed without bytes (a server-first client)
            self.transport.pauseProducing()
            self.route_by(self.runtime.tcp_decision)

    def client_closed_early(self) -> None:
        """The client half-closed (or closed) before the route was decided."""
        if self.listener.inspect:
            # Closed or half-closed before its hello was complete: no upstream.
            self.ctx.stats.inc_key("tls_inspector.connection_closed", self.runtime.stats_key)
        self.termination = "client closed during inspection"
        self.abort()
