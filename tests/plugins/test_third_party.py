"""
A third-party plugin distribution (``examples/plugins/tsgate-mqtt``) is
installed with pip and found by tsgate without any change to tsgate; its
parser meets the hint-parser contract on CONNECT packets from paho-mqtt.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.properties import check_truncated_with_garbage, parse_as_delivered
from tsgate.interfaces import Hint, HintParseError, NotMine

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugins" / "tsgate-mqtt"
SAMPLES = EXAMPLE / "samples"
EXPECTED = {
    "paho_v311_connect.bin": {"client_id": "sensor-42", "mqtt_version": "3.1.1"},
    "paho_v5_connect.bin": {"client_id": "sensor-5", "mqtt_version": "5"},
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    ``pip install`` of the example into a fresh --target directory (from a
    copy, so the build leaves nothing in the repository); the directory is
    put on PYTHONPATH of subprocesses, exactly where an installed
    distribution's files would be. Removed afterwards: uninstalled.
    """
    work = tmp_path_factory.mktemp("third_party")
    source = work / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input",
         "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    yield target
    shutil.rmtree(work, ignore_errors=True)


def _python(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=env)


def test_distribution_ships_only_its_plugin_module(installed):
    """No tsgate/__init__.py or tsgate/plugins/__init__.py: it cannot shadow tsgate."""
    assert (installed / "tsgate" / "plugins" / "tsgate_mqtt.py").is_file()
    assert not (installed / "tsgate" / "__init__.py").exists()
    assert not (installed / "tsgate" / "plugins" / "__init__.py").exists()


def test_tsgate_plugins_lists_it(installed):
    """`python -m tsgate plugins` shows the mqtt parser and the installed file."""
    result = _python(installed, "-m", "tsgate", "plugins")
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("hint_parser")
                and " mqtt " in ln)
    assert line.endswith(str(installed / "tsgate" / "plugins" / "tsgate_mqtt.py"))
    assert " tls " in result.stdout  # the built-ins are all still there


def test_load_plugins_uses_it(installed):
    """load_plugins() in a fresh process finds the parser; it reads real CONNECTs."""
    script = (
        "import json, sys, tsgate\n"
        "from tsgate.plugins import load_plugins\n"
        "p = load_plugins().hint_parsers['mqtt']\n"
        "out = {'tsgate': tsgate.__file__}\n"
        "for name in sys.argv[1:]:\n"
        "    out[name] = dict(p.parse(open(name, 'rb').read()).attributes)\n"
        "print(json.dumps(out))\n"
    )
    names = [str(SAMPLES / n) for n in EXPECTED]
    result = _python(installed, "-c", script, *names)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert Path(out.pop("tsgate")).resolve() == (ROOT / "tsgate" / "__init__.py").resolve()
    assert {Path(k).name: v for k, v in out.items()} == EXPECTED


def _parser():
    """The example's parser, imported from its source file (no install needed)."""
    spec = importlib.util.spec_from_file_location(
        "tsgate_mqtt_example", EXAMPLE / "tsgate" / "plugins" / "tsgate_mqtt.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.mqtt_connect


PARSER = _parser()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parser_on_real_connects(name):
    hint = PARSER.parse((SAMPLES / name).read_bytes())
    assert isinstance(hint, Hint)
    assert dict(hint.attributes) == EXPECTED[name]
    assert "not-logged" not in repr(hint)  # the password after the client id is never read


@pytest.mark.parametrize(
    "data", [b"\x16\x03\x01", b"*1\r\n", b"\x10\x0c\x00\x04HTTP", b"\x00\x00\x00\x08"]
)
def test_parser_not_mine(data):
    assert isinstance(PARSER.parse(data), NotMine)


def test_parser_one_error():
    with pytest.raises(HintParseError):
        PARSER.parse(b"\x10\xff\xff\xff\xff\x01")


@given(name=st.sampled_from(sorted(EXPECTED)), cuts=st.lists(st.integers(0, 64), max_size=8))
def test_any_split_same_hint(name, cuts):
    data = (SAMPLES / name).read_bytes()
    assert parse_as_delivered(PARSER, data, cuts) == PARSER.parse(data)


@given(name=st.sampled_from(sorted(EXPECTED)), cut=st.integers(0, 64),
       garbage=st.binary(max_size=64))
def test_truncation_plus_garbage(name, cut, garbage):
    data = (SAMPLES / name).read_bytes()
    check_truncated_with_garbage(PARSER, data[: cut % (len(data) + 1)], garbage)
