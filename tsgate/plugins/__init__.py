"""
tsgate's plugin package: built-in protocol plugins and discovery.

Any distribution may ship a module ``tsgate/plugins/<name>.py`` (with *no*
``tsgate/__init__.py`` or ``tsgate/plugins/__init__.py`` of its own) that
defines module-level instances providing ``twisted.plugin.IPlugin`` and one
of ``IHintParser``, ``IPreambleNegotiator`` or ``IStreamObserverFactory``
(``tsgate.interfaces``). Extending ``__path__`` below makes every
``tsgate/plugins`` directory on ``sys.path`` part of this package, exactly as
Twisted does for ``twisted.plugins``; :func:`load_plugins` then finds them
with Twisted's plugin cache. See ``docs/plugins.md``.

The built-in modules here only *declare* plugin instances; each
protocol's parser and observer live in ``tsgate.hints.<protocol>``, and
discovery in :mod:`tsgate.plugins.discovery` (re-exported here).
"""

from __future__ import annotations

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))

from tsgate.plugins.discovery import (  # noqa: E402 (after __path__ is extended)
    GENERIC_PROTOCOLS,
    KINDS,
    PluginError,
    PluginSet,
    declare,
    describe,
    load_plugins,
)

__all__ = [
    "GENERIC_PROTOCOLS",
    "KINDS",
    "PluginError",
    "PluginSet",
    "declare",
    "describe",
    "load_plugins",
]
