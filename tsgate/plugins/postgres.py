"""
Built-in ``postgres`` plugins: the first-message hint parser, the
SSLRequest STARTTLS negotiator and the message-counting observer, all from
:mod:`tsgate.hints.postgres`. Istio has no ``POSTGRES`` port protocol, so
the observer is chosen by the port-name prefix ``postgres-`` (or ``pg-``).
"""

from __future__ import annotations

from tsgate.hints.postgres import (
    PostgresHintParser,
    PostgresObserverFactory,
    PostgresStartTlsNegotiator,
)
from tsgate.plugins import declare

postgres_hints = declare(PostgresHintParser())
postgres_starttls = declare(PostgresStartTlsNegotiator())
postgres_observer = declare(PostgresObserverFactory())
