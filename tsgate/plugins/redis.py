"""
Built-in ``redis`` plugins: the first-command hint parser and the
command/error counting observer of :mod:`tsgate.hints.redis`, chosen by
Istio's ``port.protocol: REDIS`` or a ``redis-`` port name.
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import alsoProvides, implementer

from tsgate.hints.redis import RedisHintParser, RedisObserver
from tsgate.interfaces import Emit, IStreamObserver, IStreamObserverFactory


@implementer(IPlugin, IStreamObserverFactory)
class RedisObserverFactory:
    """Counts Redis commands (per name) and error replies per connection."""

    name = "redis"
    protocol = "redis"
    istio_protocols = ("REDIS",)
    port_name_prefixes = ("redis",)

    def new_observer(self, emit: Emit) -> IStreamObserver:
        return RedisObserver(emit)


redis_hints = RedisHintParser()
alsoProvides(redis_hints, IPlugin)
redis_observer = RedisObserverFactory()
