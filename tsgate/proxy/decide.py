"""
The decision stage: which route serves the connection, and whether it may.

From the SNI the listener stages found (or none), the listener's route
table chooses a chain (``Listener.route_for_sni``): no chain closes the
connection ``NR`` (filter_chain_not_found). Then the features' decision
checks run in order (``ListenerRuntime.decision_checks``; next:
authorization, per-source limits), any of which can end the connection with
its own flag; then the upstream-connect stage.
"""

from __future__ import annotations

from typing import Optional

from tsgate.proxy.stages import Ending
from tsgate.proxy.upstream import ConnectStage
from tsgate.routing import Decision, trace_token
from tsgate.tls import stage as tls_stage


class DecideStage(ConnectStage):
    """The decision stage (see the module docstring)."""

    __slots__ = ()

    def decide(self, sni: Optional[str], timed_out: bool = False) -> None:
        """Entry after inspection: route by SNI (None: no SNI, not TLS, timed out)."""
        if self.inspect_timer is not None:
            self.inspect_timer.cancel()
            self.inspect_timer = None
        if sni:
            self.record.requested_server_name = sni
        self.transport.pauseProducing()
        decision = self.decision = self.listener.route_for_sni(sni)
        if timed_out and decision.route is None:
            # Counted as downstream_pre_cx_timeout already, not as a chain miss.
            self.termination = "inspection timed out"
            self._no_route(decision)
            return
        self.route_by(decision)

    def route_by(self, decision: Decision) -> None:
        """Entry with a decision made (a plain TCP listener decides at accept)."""
        self.decision = decision
        # The decision trace in short (the same token `tsgate explain` prints).
        self.record.route_name = trace_token(decision)
        route = decision.route
        if route is None:
            self.ctx.stats.inc_key("listener.no_filter_chain_match", self.runtime.stats_key)
            self._no_route(decision)
            return
        if decision.termination is not None and self.tls is None:
            # TLS termination (tsgate.tls.stage): the handshake first; the
            # decision checks and the connect follow in handshakeCompleted.
            tls_stage.start_termination(self, decision)
            return
        self.route = route
        for check in self.runtime.decision_checks:
            ending = check(self, decision)
            if ending is not None:
                self.end(ending)
                return
        self.connect_upstream(route)

    def _no_route(self, decision: Decision) -> None:
        """No chain for this connection: close it at once, logged ``NR``."""
        self.record.route_name = trace_token(decision)
        self.end(Ending("NR", "filter_chain_not_found"))
