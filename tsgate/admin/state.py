"""
What the admin server needs from the running gateway.

The admin resources only read these attributes (and call ``drain`` /
``reload`` on POST), so the real ``tsgate.gateway.Gateway`` and the small
fakes in unit tests are interchangeable. Members are read-only properties
in the protocols so that plain attributes satisfy them too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Optional, Protocol

import attrs
from twisted.internet.defer import Deferred

from tsgate.routing import RouteTable
from tsgate.stats import Stats


class ConnectionInfo(Protocol):
    """One live downstream connection, as the status page shows it."""

    @property
    def listener(self) -> str: ...  # Listener.name, "0.0.0.0_31400"

    @property
    def route(self) -> Optional[str]: ...  # Route.name, None while inspecting

    @property
    def cluster(self) -> Optional[str]: ...

    @property
    def upstream(self) -> Optional[str]: ...  # "10.1.2.3:2701" once connected

    @property
    def downstream(self) -> str: ...  # "203.0.113.9:52311"

    @property
    def sni(self) -> Optional[str]: ...

    @property
    def started(self) -> float: ...  # epoch seconds

    @property
    def bytes_received(self) -> int: ...  # from the client

    @property
    def bytes_sent(self) -> int: ...  # to the client


@attrs.frozen
class ConnectionSnapshot:
    """A plain record that satisfies :class:`ConnectionInfo` (tests, snapshots)."""

    listener: str
    downstream: str
    started: float
    route: Optional[str] = None
    cluster: Optional[str] = None
    upstream: Optional[str] = None
    sni: Optional[str] = None
    bytes_received: int = 0
    bytes_sent: int = 0


class GatewayState(Protocol):
    """The running gateway, as the admin server sees it."""

    @property
    def stats(self) -> Stats: ...

    @property
    def config(self) -> Any: ...  # tsgate.config.ConfigResult | None: what is loaded now

    @property
    def table(self) -> RouteTable: ...  # the table new connections are routed by

    def connections(self) -> Iterable[ConnectionInfo]: ...

    @property
    def recent_errors(self) -> Sequence[tuple[float, str]]: ...  # (epoch, message), bounded

    @property
    def ready(self) -> bool: ...

    def drain(self) -> Deferred[Any]: ...  # begin a graceful drain; fires when done

    def reload(self) -> Any: ...  # reload the config now -> ConfigResult
