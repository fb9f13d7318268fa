"""
Built-in ``redis`` plugins: the first-command hint parser and the
command/error counting observer of :mod:`tsgate.hints.redis`, chosen by
Istio's ``port.protocol: REDIS`` or a ``redis-`` port name.
"""

from __future__ import annotations

from tsgate.hints.redis import RedisHintParser, RedisObserverFactory
from tsgate.plugins import declare

redis_hints = declare(RedisHintParser())
redis_observer = declare(RedisObserverFactory())
