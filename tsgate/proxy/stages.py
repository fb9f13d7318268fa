"""
The seams of the connection pipeline: what a stage gets, what it returns.

A proxied connection goes through these stages, in order (docs/design.md,
"Stages")::

    accept ─► listener stages ─► decision ─► upstream connect ─► relay ─► close record

Every stage can end the connection with an :class:`Ending` (a response flag
and details for the access log). The built-in stages are methods of the
connection (one object per connection, no per-stage allocation); features
plug in through the hooks below, chosen once per listener when a route table
is applied (:class:`tsgate.proxy.context.ListenerRuntime`), never per
connection:

- :class:`ListenerStage`: reads the first client bytes before inspection
  (the PROXY protocol header in);
- :data:`DecisionCheck`: after the route is chosen, before anything is
  connected (authorization, per-source limits);
- :data:`UpstreamStage`: once the upstream socket is connected, before the
  relay starts (the PROXY protocol header out);
- :data:`Connect`: how the upstream socket is opened (TLS origination);
- :data:`CloseHook`: once the connection is closed, before the record is
  written (releasing a per-source slot).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import attrs

if TYPE_CHECKING:  # pragma: no cover
    from typing import Protocol

    from tsgate.proxy.state import ConnectionState
    from tsgate.routing import Cluster, Decision, Endpoint
else:
    Protocol = object


@attrs.frozen
class Ending:
    """
    A stage's verdict that ends the connection: Envoy's response flag (``NR``,
    ``UH``, ``UO``, ``UF``, ``RBAC`` as ``UAEX``...), response code details
    and connection termination details as the access log shows them.
    """

    flag: str = "-"
    #: %RESPONSE_CODE_DETAILS%
    details: str = "-"
    #: %CONNECTION_TERMINATION_DETAILS%
    termination: str = "-"
    #: in words, for the connection's ``termination`` (admin, errors)
    why: str = ""
    #: a stats counter (name, labels) to add one to, if any
    counter: Optional[tuple[str, tuple[tuple[str, str], ...]]] = None


#: A listener stage's answer: it wants more bytes.
NEED_MORE = -1

#: A listener stage's answer: bytes consumed (>= 0) from the front of the
#: buffer, its work done; NEED_MORE; or an Ending.
StageResult = Union[int, Ending]


class ListenerStage(Protocol):
    """
    Reads client bytes before the inspection (and before the route on a
    plain TCP listener). One instance serves every connection of a listener:
    it keeps nothing per connection except on the connection it is given.
    A stage that learns the client's address sets ``conn.remote_address``.
    """

    name: str

    def feed(self, conn: ConnectionState, data: bytes) -> StageResult:
        """``data`` is everything buffered so far (not yet consumed)."""
        ...


#: (connection, decision) -> None to go on, or an Ending. Runs after the
#: route is chosen and before the balancer; ``conn.remote_address`` and
#: ``conn.record.requested_server_name`` are known.
DecisionCheck = Callable[["ConnectionState", "Decision"], Optional[Ending]]

#: (connection, upstream transport) -> None to go on, or an Ending. Runs once
#: the upstream socket is connected, before STARTTLS and the relay.
UpstreamStage = Callable[["ConnectionState", Any], Optional[Ending]]

#: (reactor, cluster, endpoint, client factory) -> a connector with
#: ``stopConnecting()``; the default is ``reactor.connectTCP`` without a timeout
#: (the connect timeout is the pipeline's own).
Connect = Callable[[Any, "Cluster", "Endpoint", Any], Any]

#: (connection) -> None; runs once at close, before the access record.
CloseHook = Callable[["ConnectionState"], None]


def connect_tcp(reactor: Any, cluster: Cluster, endpoint: Endpoint, factory: Any) -> Any:
    """The default :data:`Connect`: a plain TCP connection to the endpoint."""
    return reactor.connectTCP(endpoint.address, endpoint.port, factory, timeout=None)


@attrs.frozen
class Stages:
    """The hooks one feature adds to one listener (all empty by default)."""

    listener: tuple[ListenerStage, ...] = ()
    decision: tuple[DecisionCheck, ...] = ()
    upstream: tuple[UpstreamStage, ...] = ()
    close: tuple[CloseHook, ...] = ()
    connect: Optional[Connect] = None


#: A feature's provider: the stages it adds to a listener (compiled ``Listener``).
StageProvider = Callable[[Any], Stages]
