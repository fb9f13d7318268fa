"""
Plugin discovery: the built-ins are found with where they came from,
duplicate names are refused naming both modules, broken and shadowed
modules are reported, observers are selected Istio's way, and
``tsgate plugins`` prints it all.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from twisted.plugin import IPlugin

import tsgate.plugins
from tsgate.interfaces import IHintParser, IPreambleNegotiator, IStreamObserverFactory
from tsgate.plugins import PluginError, PluginSet, describe, load_plugins

PLUGIN_DIR = Path(tsgate.plugins.__file__).resolve().parent
ROOT = Path(__file__).resolve().parents[2]


def test_builtins_found_with_their_modules():
    """Our own plugins: each kind by name, each with the module file it came from."""
    plugins = load_plugins()
    assert {"tls", "postgres", "redis"} <= set(plugins.hint_parsers)
    assert "postgres-starttls" in plugins.preamble_negotiators
    assert {"postgres", "redis", "mysql"} <= set(plugins.observers)
    assert Path(plugins.sources[("hint_parser", "tls")]) == PLUGIN_DIR / "tls.py"
    assert Path(plugins.sources[("preamble_negotiator", "postgres-starttls")]) == (
        PLUGIN_DIR / "postgres.py"
    )
    assert Path(plugins.sources[("observer", "mysql")]) == PLUGIN_DIR / "mysql.py"
    assert "mysql" not in plugins.hint_parsers  # the server speaks first
    assert not plugins.broken


@pytest.mark.parametrize(
    "kind,iface",
    [("hint_parser", IHintParser), ("preamble_negotiator", IPreambleNegotiator),
     ("observer", IStreamObserverFactory)],
)
def test_every_plugin_provides_its_interfaces(kind, iface):
    """Everything found provides IPlugin and its kind's interface, under its own name."""
    for name, plugin in load_plugins().by_kind(kind).items():
        assert IPlugin.providedBy(plugin)
        assert iface.providedBy(plugin)
        assert plugin.name == name
        assert plugin.protocol == plugin.protocol.lower()


@pytest.mark.parametrize(
    "protocol,port_name,expected",
    [
        ("REDIS", "tcp-cache", ["redis"]),
        ("redis", "", ["redis"]),
        ("MYSQL", "redis-confusing", ["mysql"]),  # an explicit protocol wins
        ("TCP", "redis-cache", ["redis"]),
        ("TCP", "Redis", ["redis"]),  # no suffix, any case
        ("TCP", "MYSQL-primary", ["mysql"]),
        ("TCP", "postgres-main", ["postgres"]),
        ("TLS", "postgres-tls", ["postgres"]),  # sees SSLRequest/S, then quiet
        ("TCP", "tcp-echo", []),
        ("TCP", "redisx-1", []),  # the prefix is the whole word before '-'
        ("", "", []),
    ],
)
def test_observers_for_istio_selection(protocol, port_name, expected):
    """port.protocol first, else the port name's prefix before '-', case-insensitive."""
    plugins = load_plugins()
    chosen = [f.name for f in plugins.observers_for(protocol, port_name)
              if f.name in ("redis", "mysql", "postgres")]
    assert chosen == expected


def _package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
             modules: dict[str, str]) -> object:
    """A throw-away plugin package ``name`` holding ``modules``."""
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for module, source in modules.items():
        (pkg / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return importlib.import_module(name)


PARSER = """
    from twisted.plugin import IPlugin
    from zope.interface import implementer
    from tsgate.interfaces import IHintParser, NotMine

    @implementer(IPlugin, IHintParser)
    class Parser:
        name = {name!r}
        protocol = "demo"
        max_bytes = 4

        def parse(self, data):
            return NotMine()

    parser = Parser()
"""


def test_duplicate_names_refused_naming_both(tmp_path, monkeypatch):
    """Two different parsers named 'demo': PluginError with both module files."""
    pkg = _package(tmp_path, monkeypatch, "dup_plugins_pkg", {
        "first": PARSER.format(name="demo"),
        "second": PARSER.format(name="demo"),
    })
    with pytest.raises(PluginError) as e:
        load_plugins(pkg)
    message = str(e.value)
    assert "'demo'" in message
    assert str(tmp_path / "dup_plugins_pkg" / "first.py") in message
    assert str(tmp_path / "dup_plugins_pkg" / "second.py") in message


def test_same_object_from_two_modules_is_not_a_duplicate(tmp_path, monkeypatch):
    """A module re-exporting another's instance does not make a duplicate."""
    pkg = _package(tmp_path, monkeypatch, "reexport_plugins_pkg", {
        "original": PARSER.format(name="demo"),
        "reexport": "from reexport_plugins_pkg.original import parser as same_parser\n",
    })
    plugins = load_plugins(pkg)
    assert list(plugins.hint_parsers) == ["demo"]


def test_broken_module_reported_not_fatal(tmp_path, monkeypatch):
    """A plugin module that fails to import is listed as broken; the others load."""
    pkg = _package(tmp_path, monkeypatch, "broken_plugins_pkg", {
        "good": PARSER.format(name="good"),
        "bad": "raise RuntimeError('this plugin is broken')\n",
    })
    plugins = load_plugins(pkg)
    assert list(plugins.hint_parsers) == ["good"]
    assert "broken_plugins_pkg.bad" in plugins.broken
    assert "broken" in describe(plugins)


def test_shadowed_module_reported(tmp_path, monkeypatch):
    """Two plugin directories with one module name: the hidden one is named."""
    pkg = _package(tmp_path, monkeypatch, "shadow_plugins_pkg", {
        "same": PARSER.format(name="visible"),
    })
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "same.py").write_text(textwrap.dedent(PARSER.format(name="hidden")))
    pkg.__path__.append(str(other))
    plugins = load_plugins(pkg)
    assert list(plugins.hint_parsers) == ["visible"]
    assert str(other / "same.py") in plugins.broken


def test_describe_lists_kind_name_protocol_source():
    """The listing names every plugin and the file it came from."""
    plugins = load_plugins()
    text = describe(plugins)
    for (kind, name), source in plugins.sources.items():
        line = next(
            ln for ln in text.splitlines() if ln.startswith(kind) and f" {name} " in ln
        )
        assert line.endswith(source)
    assert "port names redis-*" in text
    assert "protocol=REDIS" in text
    assert describe(PluginSet()).splitlines()[1] == "no plugins found"


def _tsgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tsgate", *args], capture_output=True, text=True, timeout=60,
        cwd=ROOT, env={**os.environ, **(env or {})},
    )


def test_tsgate_plugins_command():
    """`python -m tsgate plugins` lists our plugins and exits 0."""
    result = _tsgate("plugins")
    assert result.returncode == 0, result.stderr
    for name in ("postgres-starttls", "redis", "mysql", "tls"):
        assert name in result.stdout
    assert str(PLUGIN_DIR / "postgres.py") in result.stdout


def test_tsgate_plugins_duplicate_exits_1(tmp_path):
    """A third-party module reusing a built-in's name: exit 1, both files named."""
    extra = tmp_path / "tsgate" / "plugins"
    extra.mkdir(parents=True)
    (extra / "impostor.py").write_text(textwrap.dedent(PARSER.format(name="redis")))
    result = _tsgate("plugins", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1
    assert str(extra / "impostor.py") in result.stderr
    assert str(PLUGIN_DIR / "redis.py") in result.stderr
