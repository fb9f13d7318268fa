"""
Built-in ``mongo`` plugins: the hello/isMaster hint parser and the
``mongo_proxy``-like observer of :mod:`tsgate.hints.mongo`, chosen by Istio's
``port.protocol: MONGO`` or a ``mongo-`` port name.
"""

from __future__ import annotations

from tsgate.hints.mongo import MongoHintParser, MongoObserverFactory
from tsgate.plugins import declare

mongo_hint_parser = declare(MongoHintParser())
mongo_observer_factory = declare(MongoObserverFactory())
