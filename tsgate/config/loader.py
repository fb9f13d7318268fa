"""
YAML files and directories to documents, keeping the line of every field.

``--config PATH`` is a file or a directory. A directory is read the way a
Kubernetes ConfigMap volume needs: ``*.yaml``/``*.yml`` entries in name
order, symlinks followed, names starting with ``.`` skipped (the volume's
``..data`` link and ``..2024_01_01_…`` folder), not recursive, so each file
is read once. Every document keeps a map from field path
(``spec.servers[0].port.number``) to line, so later stages can point at the
exact line without carrying YAML nodes around.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import attrs
import yaml

from tsgate.config.diagnostics import ERROR, INFO, WARNING, Diagnostic

YAML_SUFFIXES = (".yaml", ".yml")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@attrs.frozen
class Document:
    """One YAML document: its data and the line of each field path."""

    file: str
    index: int  # 0-based position of the document in its file
    line: int
    data: Any
    positions: Mapping[str, int] = attrs.field(factory=dict, eq=False, repr=False)

    def line_of(self, path: str) -> int:
        return line_of(self.positions, path, self.line)


@attrs.frozen
class Loaded:
    files: tuple[str, ...]
    documents: tuple[Document, ...]
    diagnostics: tuple[Diagnostic, ...]


def join_path(base: str, key: object) -> str:
    """``spec`` + ``tls`` -> ``spec.tls``; odd keys are quoted: ``labels["a.b/c"]``."""
    if isinstance(key, int):
        return f"{base}[{key}]"
    text = str(key)
    if not _IDENT.match(text):
        text = '"' + text.replace('"', '\\"') + '"'
        return f"{base}[{text}]"
    return f"{base}.{text}" if base else text


def line_of(positions: Mapping[str, int], path: str, default: int = 0) -> int:
    """The line of ``path``, or of its nearest ancestor that has one."""
    while path:
        if path in positions:
            return positions[path]
        cut = max(path.rfind("."), path.rfind("["))
        if cut <= 0:
            break
        path = path[:cut]
    return positions.get(path, default) if path else default


def expand_paths(paths: Iterable[str]) -> tuple[list[str], list[Diagnostic]]:
    """Files to read, in order: each path as given, directories expanded."""
    files: list[str] = []
    seen: set[str] = set()
    diags: list[Diagnostic] = []

    def add(name: str) -> None:
        real = os.path.realpath(name)
        if real not in seen:
            seen.add(real)
            files.append(name)

    for path in paths:
        if os.path.isdir(path):
            found = False
            for entry in sorted(os.listdir(path)):
                if entry.startswith("."):
                    continue
                full = os.path.join(path, entry)
                if os.path.isdir(full):
                    diags.append(Diagnostic(
                        INFO, "subdirectory not read (directories are not recursive); "
                        "pass it as another path to include it", file=full))
                    continue
                if entry.endswith(YAML_SUFFIXES) and os.path.isfile(full):
                    found = True
                    add(full)
            if not found:
                diags.append(Diagnostic(WARNING, "no *.yaml or *.yml files in directory",
                                        file=path))
        elif os.path.isfile(path):
            add(path)
        else:
            diags.append(Diagnostic(ERROR, "no such file or directory", file=path))
    return files, diags


class _Walker:
    """Turns composed YAML nodes into Python values, recording lines by path."""

    def __init__(self, loader: yaml.SafeLoader, file: str, diags: list[Diagnostic]) -> None:
        self.loader = loader
        self.file = file
        self.diags = diags
        self.positions: dict[str, int] = {}

    def walk(self, node: yaml.Node, path: str) -> Any:
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    key = str(key)
                sub = join_path(path, key)
                if key in out:
                    self.diags.append(Diagnostic(
                        WARNING, f"duplicate key {key!r}: the later value is used",
                        file=self.file, line=key_node.start_mark.line + 1, path=sub))
                self.positions[sub] = key_node.start_mark.line + 1
                out[key] = self.walk(value_node, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                sub = join_path(path, i)
                self.positions[sub] = item.start_mark.line + 1
                items.append(self.walk(item, sub))
            return items
        return self.loader.construct_object(node, deep=True)


def parse_yaml(text: str, file: str) -> tuple[list[Document], list[Diagnostic]]:
    """All documents of one YAML stream; a syntax error is one diagnostic."""
    docs: list[Document] = []
    diags: list[Diagnostic] = []
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        return docs, [Diagnostic(ERROR, f"YAML error: character #x{exc.character:04x} is not "
                                        "allowed in YAML (a control character)", file=file,
                                 line=line)]
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            walker = _Walker(loader, file, diags)
            data = walker.walk(node, "")
            line = node.start_mark.line + 1
            if data is not None:
                docs.append(Document(file, index, line, data, walker.positions))
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{exc.context}, {problem}"
        diags.append(Diagnostic(ERROR, f"YAML syntax error: {problem}", file=file, line=line))
    except yaml.YAMLError as exc:
        diags.append(Diagnostic(ERROR, f"YAML error: {exc}", file=file))
    finally:
        loader.dispose()
    return docs, diags


def read_file(file: str) -> tuple[Optional[str], Optional[Diagnostic]]:
    try:
        with open(file, "rb") as f:
            raw = f.read()
    except OSError as exc:
        return None, Diagnostic(ERROR, f"cannot read: {exc.strerror or exc}", file=file)
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        return None, Diagnostic(ERROR, f"not UTF-8 text: {exc.reason} at byte {exc.start}",
                                file=file)


def load_documents(paths: Iterable[str]) -> Loaded:
    """Read every file of ``paths``; never raises for bad files."""
    files, diags = expand_paths(paths)
    documents: list[Document] = []
    for file in files:
        text, problem = read_file(file)
        if problem is not None:
            diags.append(problem)
            continue
        assert text is not None
        docs, found = parse_yaml(text, file)
        documents.extend(docs)
        diags.extend(found)
    return Loaded(tuple(files), tuple(documents), tuple(diags))
