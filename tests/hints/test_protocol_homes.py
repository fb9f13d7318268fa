"""
One home per protocol: ``tsgate/hints/<protocol>.py`` holds the parser, the
observer and exactly one decode error (a subclass of
``tsgate.interfaces.DecodeError``); ``tsgate/plugins/<protocol>.py`` only
declares instances of classes from there.
"""

from __future__ import annotations

import importlib
import inspect

import pytest
from twisted.plugin import IPlugin

from tsgate.interfaces import DecodeError, IStreamObserverFactory

OBSERVED = ["postgres", "redis", "mysql", "kafka", "mongo"]
DECLARING = ["tls", *OBSERVED]


@pytest.mark.parametrize("protocol", OBSERVED)
def test_one_decode_error_per_protocol(protocol: str) -> None:
    module = importlib.import_module(f"tsgate.hints.{protocol}")
    own = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, DecodeError)
        and obj is not DecodeError
        and obj.__module__ == module.__name__
    ]
    assert [c.__name__ for c in own] == [f"{protocol.capitalize()}DecodeError"]


@pytest.mark.parametrize("protocol", DECLARING)
def test_plugin_module_only_declares_instances(protocol: str) -> None:
    hints = importlib.import_module(f"tsgate.hints.{protocol}")
    plugins = importlib.import_module(f"tsgate.plugins.{protocol}")
    defined_here = [
        name
        for name, obj in vars(plugins).items()
        if inspect.isclass(obj) and obj.__module__ == plugins.__name__
    ]
    assert defined_here == []
    declared = [obj for obj in vars(plugins).values() if IPlugin.providedBy(obj)]
    assert declared
    for obj in declared:
        assert type(obj).__module__ == hints.__name__


@pytest.mark.parametrize("protocol", OBSERVED)
def test_garbage_is_one_decode_error_then_quiet(protocol: str) -> None:
    """Every built-in observer turns its protocol's error into one count."""
    plugins = importlib.import_module(f"tsgate.plugins.{protocol}")
    (factory,) = [
        obj for obj in vars(plugins).values() if IStreamObserverFactory.providedBy(obj)
    ]
    counts: dict[str, int] = {}

    def emit(name: str, amount: int) -> None:
        counts[name] = counts.get(name, 0) + amount

    observer = factory.new_observer(emit)
    # a negative frame length to the length-prefixed protocols; not RESP
    garbage = b"*x\r\n" if protocol == "redis" else b"\xff" * 64
    for _ in range(3):
        observer.client_data(garbage)
        observer.server_data(garbage)
    assert counts.get("decode_error") == 1
