"""
Plugin discovery: :func:`load_plugins` finds every plugin in the
``tsgate.plugins`` package namespace (ours and any installed
distribution's) with Twisted's plugin cache; :class:`PluginSet` holds them
by kind and chooses a port's observers Istio's way (``port.protocol``, then
the port-name prefix); :func:`describe` renders the ``tsgate plugins``
listing; :func:`declare` is how a plugin module declares an instance.

Re-exported by :mod:`tsgate.plugins`, so ``from tsgate.plugins import
load_plugins`` is the public spelling.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from twisted.plugin import IPlugin, getCache
from zope.interface import alsoProvides

from tsgate.interfaces import IHintParser, IPreambleNegotiator, IStreamObserverFactory

if TYPE_CHECKING:
    # Only for annotations: Twisted's plugin cache adapts every top-level
    # name of a module in this package to IPlugin, and the InterfaceClass
    # class itself makes zope.interface raise there.
    from zope.interface.interface import InterfaceClass

__all__ = [
    "GENERIC_PROTOCOLS",
    "KINDS",
    "PluginError",
    "PluginSet",
    "declare",
    "describe",
    "load_plugins",
]

_T = TypeVar("_T")


def declare(obj: _T) -> _T:
    """
    Make ``obj`` (an instance providing ``IHintParser``,
    ``IPreambleNegotiator`` or ``IStreamObserverFactory``) a Twisted plugin,
    and return it: ``redis_observer = declare(RedisObserverFactory())`` at a
    plugin module's top level is how every built-in is declared. The
    protocol code itself (``tsgate.hints``) stays free of Twisted.
    """
    alsoProvides(obj, IPlugin)
    return obj


#: The three kinds of plugin, by the interface that defines them.
KINDS: tuple[tuple[str, InterfaceClass], ...] = (
    ("hint_parser", IHintParser),
    ("preamble_negotiator", IPreambleNegotiator),
    ("observer", IStreamObserverFactory),
)

#: Istio port protocols that say nothing about the application protocol;
#: on such ports the port-name prefix chooses the observers.
GENERIC_PROTOCOLS = frozenset({"", "TCP", "TLS", "HTTPS"})


class PluginError(Exception):
    """Plugins that cannot be loaded together (two with one name)."""


@attrs.frozen
class PluginSet:
    """
    The plugins found, each kind by name, and the module file each came from
    (``sources[(kind, name)]``). ``broken`` maps modules that failed to import
    or load to the error, for ``tsgate plugins``; a broken third-party module
    never stops the gateway, it is just absent.
    """

    hint_parsers: Mapping[str, Any] = attrs.field(factory=dict)
    preamble_negotiators: Mapping[str, Any] = attrs.field(factory=dict)
    observers: Mapping[str, Any] = attrs.field(factory=dict)
    sources: Mapping[tuple[str, str], str] = attrs.field(factory=dict)
    broken: Mapping[str, str] = attrs.field(factory=dict)

    def by_kind(self, kind: str) -> Mapping[str, Any]:
        return {
            "hint_parser": self.hint_parsers,
            "preamble_negotiator": self.preamble_negotiators,
            "observer": self.observers,
        }[kind]

    def observers_for(self, protocol: str, port_name: str) -> list[Any]:
        """
        The observer factories for a Gateway server's port, Istio's way: an
        explicit ``port.protocol`` (``MONGO``, ``REDIS``, ``MYSQL``) chooses
        the factories declaring it; on a generic port (``TCP``, ``TLS``,
        ``HTTPS``, none) or a protocol no observer declares, the port name's
        prefix before the first ``-`` (``redis-cache`` -> ``redis``) does,
        case-insensitively. Sorted by plugin name so the order is stable.
        """
        proto = (protocol or "").upper()
        chosen = []
        if proto not in GENERIC_PROTOCOLS:
            chosen = [
                f
                for f in self.observers.values()
                if proto in {p.upper() for p in f.istio_protocols}
            ]
        if not chosen and port_name:
            prefix = port_name.split("-", 1)[0].lower()
            chosen = [
                f
                for f in self.observers.values()
                if prefix in {p.lower() for p in f.port_name_prefixes}
            ]
        return sorted(chosen, key=lambda f: f.name)


def _module_file(module_name: str) -> str:
    module = sys.modules.get(module_name)
    return getattr(module, "__file__", None) or module_name


def load_plugins(package: Any = None) -> PluginSet:
    """
    Find every plugin in the ``tsgate.plugins`` package namespace (ours and
    any installed distribution's) with Twisted's plugin cache, the machinery
    behind ``getPlugins``, so the module each came from is known.

    Raises :class:`PluginError` when two different objects of one kind share
    a name, naming both modules. The same object reachable from two modules
    (one imports the other's instance) counts once.
    """
    if package is None:
        package = sys.modules["tsgate.plugins"]
    found: dict[str, dict[str, Any]] = {kind: {} for kind, _ in KINDS}
    sources: dict[tuple[str, str], str] = {}
    broken: dict[str, str] = {}
    cache = getCache(package)
    for module_key, dropin in sorted(cache.items()):
        for cached in dropin.plugins:
            try:
                obj = cached.load()
            except Exception as e:  # a broken plugin module must not stop the gateway
                broken[f"{package.__name__}.{module_key}"] = f"{type(e).__name__}: {e}"
                continue
            if not IPlugin.providedBy(obj):
                continue
            origin = _module_file(dropin.moduleName)
            for kind, iface in KINDS:
                if not iface.providedBy(obj):
                    continue
                name = obj.name
                other = found[kind].get(name)
                if other is obj:
                    continue
                if other is not None:
                    raise PluginError(
                        f"two {kind.replace('_', ' ')} plugins are named {name!r}: "
                        f"{sources[(kind, name)]} and {origin}; "
                        "uninstall or rename one of them"
                    )
                found[kind][name] = obj
                sources[(kind, name)] = origin
    broken.update(_unimportable(package, cache))
    broken.update(_shadowed(package))
    return PluginSet(
        hint_parsers=found["hint_parser"],
        preamble_negotiators=found["preamble_negotiator"],
        observers=found["observer"],
        sources=sources,
        broken=broken,
    )


def _unimportable(package: Any, cache: Mapping[str, Any]) -> dict[str, str]:
    """
    Plugin modules Twisted could not import (it logs and leaves them out of
    the cache): named here so ``tsgate plugins`` shows them.
    """
    from twisted.python.modules import getModule

    out = {}
    for module in getModule(package.__name__).iterModules():
        key = module.name.rsplit(".", 1)[-1]
        if key not in cache:
            out[module.name] = f"could not be imported ({module.filePath.path})"
    return out


def _shadowed(package: Any) -> dict[str, str]:
    """
    Two plugin directories with a module of one name: Python imports only
    the first on ``__path__``, so the other is silently invisible. Name it.
    """
    import os

    seen: dict[str, str] = {}
    out = {}
    for directory in package.__path__:
        if not os.path.isdir(directory):
            continue
        for entry in sorted(os.listdir(directory)):
            stem, ext = os.path.splitext(entry)
            if ext != ".py" or stem == "__init__":
                continue
            path = os.path.join(directory, entry)
            if stem in seen and seen[stem] != path:
                out[path] = f"shadowed by {seen[stem]} (rename the module)"
            else:
                seen.setdefault(stem, path)
    return out


def _selection(obj: Any, kind: str) -> str:
    if kind == "observer":
        parts = [f"protocol={p}" for p in obj.istio_protocols]
        if obj.port_name_prefixes:
            parts.append("port names " + "/".join(f"{p}-*" for p in obj.port_name_prefixes))
        return ", ".join(parts) or "-"
    return f"max_bytes={obj.max_bytes}"


def describe(plugin_set: PluginSet) -> str:
    """The ``tsgate plugins`` listing: kind, name, protocol, selection, source."""
    lines = []
    for kind, _ in KINDS:
        plugins: Iterable[tuple[str, Any]] = sorted(plugin_set.by_kind(kind).items())
        for name, obj in plugins:
            lines.append(
                f"{kind:<20} {name:<18} {obj.protocol:<10} {_selection(obj, kind):<40} "
                f"{plugin_set.sources[(kind, name)]}"
            )
    if not lines:
        lines.append("no plugins found")
    for module, error in sorted(plugin_set.broken.items()):
        lines.append(f"{'broken':<20} {module}: {error}")
    header = f"{'kind':<20} {'name':<18} {'protocol':<10} {'selected by':<40} source"
    return "\n".join([header, *lines]) + "\n"
