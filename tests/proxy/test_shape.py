"""The data path's shape (issues 8 and 15): small modules, no config or explain imports."""

from __future__ import annotations

import ast
import pathlib

import tsgate.proxy

PROXY = pathlib.Path(tsgate.proxy.__file__).parent
DATA_PATH = sorted(PROXY.glob("*.py")) + [PROXY.parent / "gateway.py"]


def imported(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_data_path_imports_neither_config_nor_explain() -> None:
    for path in DATA_PATH:
        bad = {n for n in imported(path)
               if n.startswith(("tsgate.config", "tsgate.explain"))}
        assert not bad, f"{path.name} imports {bad}"


def test_no_proxy_module_over_350_lines() -> None:
    for path in PROXY.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 350, path.name


def test_no_access_to_another_objects_private_names() -> None:
    """``x._name`` only on ``self`` (or ``cls``) inside tsgate/proxy/."""
    for path in PROXY.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                raise AssertionError(f"{path.name}:{node.lineno} reads .{node.attr}")
