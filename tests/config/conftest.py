"""Helpers for the config tests: write YAML to temporary files and load it."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

from tsgate.config import ConfigResult, GatewayOptions, load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "istioinaction"


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], str]:
    """write(name, yaml_text) -> path; the text is dedented."""

    def _write(name: str, text: str) -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return str(path)

    return _write


@pytest.fixture
def load(write: Callable[[str, str], str]) -> Callable[..., ConfigResult]:
    """
    load(text, text2, ..., tls_files_fatal=True, **gateway_options): each text
    is its own file, in order; the keywords are GatewayOptions fields.
    """

    def _load(*texts: str, tls_files_fatal: bool = True, **options: Any) -> ConfigResult:
        paths = [write(f"{i:02d}.yaml", text) for i, text in enumerate(texts)]
        return load_config(paths, GatewayOptions(**options), tls_files_fatal=tls_files_fatal)

    return _load
