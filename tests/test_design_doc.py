"""
docs/design.md stays true to the tree: every ``tsgate/...`` path or
``tsgate.x.y`` name it gives exists, and every module under ``tsgate/`` is
named in it (by path, by dotted name, or as a backticked name in the row of
its package directory, ``tsgate/hints/`` ... ``tls``).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
PACKAGE = ROOT / "tsgate"

_PATH = re.compile(r"tsgate/[A-Za-z0-9_/]*(?:\.py)?")
#: ``tsgate.io/...`` is the annotation prefix, not a module
_DOTTED = re.compile(r"\btsgate(?:\.[A-Za-z_][A-Za-z0-9_]*)+(?![\w/])")


def _text() -> str:
    return DESIGN.read_text(encoding="utf-8")


def _modules() -> list[Path]:
    return sorted(
        p.relative_to(ROOT)
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.parts
    )


def _exists(dotted: str) -> bool:
    """``tsgate.a.b`` names a module, or an attribute of the longest module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            obj: object = importlib.import_module(name)
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_path_named_exists() -> None:
    missing = sorted(
        {p for p in _PATH.findall(_text()) if not (ROOT / p.rstrip("/")).exists()}
    )
    assert missing == []


def test_every_dotted_name_exists() -> None:
    names = {n.rstrip(".") for n in _DOTTED.findall(_text())}
    missing = sorted(n for n in names if not _exists(n))
    assert missing == []


def _named(module: Path, text: str, rows: list[str]) -> bool:
    posix = module.as_posix()
    parts = module.with_suffix("").parts
    if module.name == "__init__.py":
        package = "/".join(parts[:-1])
        return f"{package}/" in text or f"`{'.'.join(parts[:-1])}`" in text
    if posix in text or re.search(rf"\b{re.escape('.'.join(parts))}\b", text):
        return True
    package = "/".join(parts[:-1]) + "/"
    return any(package in row and f"`{parts[-1]}`" in row for row in rows)


def test_every_module_is_named() -> None:
    text = _text()
    rows = [line for line in text.splitlines() if line.startswith("|")]
    unnamed = [m.as_posix() for m in _modules() if not _named(m, text, rows)]
    assert unnamed == []
