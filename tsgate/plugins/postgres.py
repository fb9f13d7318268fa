"""
Built-in ``postgres`` plugins: the first-message hint parser, the
SSLRequest STARTTLS negotiator and the message-counting observer, all from
:mod:`tsgate.hints.postgres`. Istio has no ``POSTGRES`` port protocol, so
the observer is chosen by the port-name prefix ``postgres-`` (or ``pg-``).
"""

from __future__ import annotations

from typing import Callable

from twisted.plugin import IPlugin
from zope.interface import alsoProvides, implementer

from tsgate.hints.postgres import PostgresHintParser, PostgresObserver, PostgresStartTlsNegotiator
from tsgate.interfaces import Emit, IStreamObserver, ITimedStreamObserverFactory, Observe


@implementer(IPlugin, ITimedStreamObserverFactory)
class PostgresObserverFactory:
    """
    Counts PostgreSQL messages and errors per connection, and times
    ``query.duration`` when the data path gives a clock (see PostgresObserver).
    """

    name = "postgres"
    protocol = "postgres"
    istio_protocols: tuple[str, ...] = ()
    port_name_prefixes = ("postgres", "postgresql", "pg")

    def new_observer(self, emit: Emit) -> IStreamObserver:
        return PostgresObserver(emit)

    def new_timed_observer(
        self, emit: Emit, observe: Observe, clock: Callable[[], float]
    ) -> IStreamObserver:
        return PostgresObserver(emit, observe, clock)


postgres_hints = PostgresHintParser()
alsoProvides(postgres_hints, IPlugin)
postgres_starttls = PostgresStartTlsNegotiator()
alsoProvides(postgres_starttls, IPlugin)
postgres_observer = PostgresObserverFactory()
