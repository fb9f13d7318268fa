"""
YAML files and directories to documents, keeping the line of every field.

``--config PATH`` is a file or a directory. A directory is read the way a
Kubernetes ConfigMap volume needs: ``*.yaml``/``*.yml`` entries in name
order, symlinks followed, names starting with ``.`` skipped (the volume's
``..data`` link and ``..2024_01_01_…`` folder), not recursive, so each file
is read once; ``-`` is standard input. Every document keeps a map from field
path (``spec.servers[0].port.number``) to line, so later stages can point at
the exact line without carrying YAML nodes around.

YAML is read the way Kubernetes reads it (go-yaml through sigs.k8s.io/yaml),
not the way PyYAML does by default: ``[1.2.3.4, 001:db8::]`` is two strings
(a ``:`` ends a plain scalar only before a blank), ``1:20`` is a string (no
base-60 numbers) and ``2024-01-01`` is a string (no timestamps).

Whatever the bytes, loading never raises and never runs away: a file over
:data:`MAX_FILE_BYTES`, a document over :data:`MAX_DOCUMENT_BYTES`, nesting
deeper than :data:`MAX_DEPTH`, more than :data:`MAX_ALIASES` aliases, more
than :data:`MAX_VALUES` values after alias expansion (an alias bomb) or an
alias that contains itself is one error naming the file and line.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import attrs
import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner
from yaml.tokens import ScalarToken

from tsgate.config.diagnostics import ERROR, INFO, WARNING, Diagnostic

YAML_SUFFIXES = (".yaml", ".yml")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
#: ``-`` as a path reads standard input; diagnostics call it this.
STDIN = "-"
STDIN_NAME = "<stdin>"

#: Limits on what one file may cost (Kubernetes objects are at most 1.5 MiB in
#: etcd; its API server refuses request bodies over 3 MiB).
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DOCUMENT_BYTES = 3 * 1024 * 1024
#: Nesting of mappings and lists (an Istio object needs about 10).
MAX_DEPTH = 100
#: Alias uses (``*name``) per document.
MAX_ALIASES = 1000
#: Values (scalars, lists, mappings) one document may expand to.
MAX_VALUES = 200_000


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

    paths = list(paths)
    given = {os.path.realpath(p) for p in paths if p != STDIN}
    for path in paths:
        if path == STDIN:
            if STDIN not in seen:
                seen.add(STDIN)
                files.append(STDIN)
        elif os.path.isdir(path):
            found = False
            for entry in sorted(os.listdir(path)):
                if entry.startswith("."):
                    continue
                full = os.path.join(path, entry)
                if os.path.isdir(full):
                    if os.path.realpath(full) in given:
                        continue  # given as a path of its own: read there
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


class LimitError(Exception):
    """A document exceeds a loader limit; ``line`` is where (1-based)."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class _K8sResolver(Resolver):
    """YAML 1.1 tags as go-yaml resolves them: no base 60, no timestamps."""

    yaml_implicit_resolvers: dict[Any, Any] = {}


for _first, _pairs in Resolver.yaml_implicit_resolvers.items():
    for _tag, _regexp in _pairs:
        if _tag == "tag:yaml.org,2002:timestamp":
            continue
        if _tag == "tag:yaml.org,2002:int":
            _regexp = re.compile(r"""^(?:[-+]?0b[0-1_]+
                    |[-+]?0[0-7_]+
                    |[-+]?(?:0|[1-9][0-9_]*)
                    |[-+]?0x[0-9a-fA-F_]+)$""", re.X)
        elif _tag == "tag:yaml.org,2002:float":
            _regexp = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)
        _K8sResolver.yaml_implicit_resolvers.setdefault(_first, []).append((_tag, _regexp))


class K8sLoader(Reader, Scanner, Parser, Composer, SafeConstructor, _K8sResolver):
    """A safe loader reading YAML as Kubernetes does, with depth and alias limits."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        _K8sResolver.__init__(self)
        self.depth = 0
        self.aliases = 0

    def scan_plain(self) -> ScalarToken:
        """PyYAML's scanner with go-yaml's rule for ``:`` inside plain scalars."""
        # As PyYAML's, except that ':' ends a plain scalar only when a blank
        # follows, also in flow context (go-yaml v2.3+/v3): so
        # "[1.2.3.4, 001:db8::]" holds the string "001:db8::".
        chunks: list[str] = []
        start_mark = self.get_mark()
        end_mark = start_mark
        indent = self.indent + 1
        spaces: list[str] = []
        blank = "\0 \t\r\n\x85\u2028\u2029"
        while True:
            length = 0
            if self.peek() == "#":
                break
            while True:
                ch = self.peek(length)
                if ch in blank or (ch == ":" and self.peek(length + 1) in blank) \
                        or (self.flow_level and ch in ",?[]{}"):
                    break
                length += 1
            if length == 0:
                break
            self.allow_simple_key = False
            chunks.extend(spaces)
            chunks.append(self.prefix(length))
            self.forward(length)
            end_mark = self.get_mark()
            spaces = self.scan_plain_spaces(indent, start_mark) or []
            if not spaces or self.peek() == "#" \
                    or (not self.flow_level and self.column < indent):
                break
        return ScalarToken("".join(chunks), True, start_mark, end_mark)

    def compose_document(self) -> Any:
        self.depth = 0
        self.aliases = 0
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise LimitError(f"more than {MAX_ALIASES} aliases in one document",
                                 mark.line + 1)
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise LimitError(f"nested deeper than {MAX_DEPTH} levels", mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_MERGE = "tag:yaml.org,2002:merge"


class _Walker:
    """Turns composed YAML nodes into Python values, recording lines by path."""

    def __init__(self, loader: K8sLoader, file: str, diags: list[Diagnostic]) -> None:
        self.loader = loader
        self.file = file
        self.diags = diags
        self.positions: dict[str, int] = {}
        self.values = 0
        self.stack: set[int] = set()

    def walk(self, node: yaml.Node, path: str, depth: int = 0) -> Any:
        self.values += 1
        line = node.start_mark.line + 1
        if self.values > MAX_VALUES:
            raise LimitError(f"more than {MAX_VALUES} values after expanding aliases "
                             "(an alias bomb?)", line)
        if depth > MAX_DEPTH:
            raise LimitError(f"nested deeper than {MAX_DEPTH} levels (through aliases)", line)
        if isinstance(node, yaml.ScalarNode):
            return self.loader.construct_object(node, deep=True)
        if id(node) in self.stack:
            raise LimitError("an alias refers to a node that contains it (a cycle)", line)
        self.stack.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path, depth)
            if isinstance(node, yaml.SequenceNode):
                items = []
                for i, item in enumerate(node.value):
                    sub = join_path(path, i)
                    self.positions[sub] = item.start_mark.line + 1
                    items.append(self.walk(item, sub, depth + 1))
                return items
            return None
        finally:
            self.stack.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: str, depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) \
                    else [value_node]
                for source in reversed(sources):
                    if not isinstance(source, yaml.MappingNode):
                        raise LimitError("a merge key (<<) needs a mapping or a list of "
                                         "mappings", source.start_mark.line + 1)
                    merged.update(self.walk(source, path, depth + 1))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.diags.append(Diagnostic(
                    ERROR, "a mapping key must be a string, not a list or mapping; entry skipped",
                    file=self.file, line=line, path=path))
                continue
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                key = str(key)
            sub = join_path(path, key)
            if key in out:
                self.diags.append(Diagnostic(
                    WARNING, f"duplicate key {key!r}: the later value is used",
                    file=self.file, line=line, path=sub))
            self.positions[sub] = line
            out[key] = self.walk(value_node, sub, depth + 1)
        for key, value in merged.items():
            out.setdefault(key, value)
        return out


def parse_yaml(text: str, file: str) -> tuple[list[Document], list[Diagnostic]]:
    """All documents of one YAML stream; a syntax error or a limit is one diagnostic."""
    docs: list[Document] = []
    diags: list[Diagnostic] = []
    loader: Optional[K8sLoader] = None
    index = 0
    try:
        loader = K8sLoader(text)
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            line = node.start_mark.line + 1
            size = node.end_mark.index - node.start_mark.index
            if size > MAX_DOCUMENT_BYTES:
                raise LimitError(f"document is {size} bytes, more than the limit of "
                                 f"{MAX_DOCUMENT_BYTES}", line)
            walker = _Walker(loader, file, diags)
            data = walker.walk(node, "")
            if data is not None:
                docs.append(Document(file, index, line, data, walker.positions))
            index += 1
    except LimitError as exc:
        diags.append(Diagnostic(ERROR, f"YAML too costly to load: {exc.message}; the rest of "
                                "the file is not read", file=file, line=exc.line))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{exc.context}, {problem}"
        diags.append(Diagnostic(ERROR, f"YAML syntax error: {problem}", file=file, line=line))
    except yaml.reader.ReaderError as exc:
        diags.append(Diagnostic(ERROR, f"not YAML text: {exc.reason} (character "
                                f"#x{exc.character:04x} at position {exc.position})"
                                if isinstance(exc.character, int) else f"not YAML text: {exc}",
                                file=file, line=text.count("\n", 0, exc.position) + 1))
    except yaml.YAMLError as exc:
        diags.append(Diagnostic(ERROR, f"YAML error: {exc}", file=file))
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        # Limits above are meant to make these unreachable; never a traceback.
        diags.append(Diagnostic(ERROR, f"YAML cannot be loaded: {type(exc).__name__}",
                                file=file))
    finally:
        if loader is not None:
            loader.dispose()
    return docs, diags


def read_file(file: str) -> tuple[Optional[str], Optional[Diagnostic]]:
    try:
        if file == STDIN:
            raw = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with open(file, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return None, Diagnostic(ERROR, f"cannot read: {exc.strerror or exc}", file=_name(file))
    if len(raw) > MAX_FILE_BYTES:
        return None, Diagnostic(ERROR, f"file is larger than the limit of {MAX_FILE_BYTES} "
                                "bytes; not read", file=_name(file))
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        return None, Diagnostic(ERROR, f"not UTF-8 text: {exc.reason} at byte {exc.start}",
                                file=_name(file))


def _name(file: str) -> str:
    return STDIN_NAME if file == STDIN else file


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
        docs, found = parse_yaml(text, _name(file))
        documents.extend(docs)
        diags.extend(found)
        if not docs and not any(d.is_error for d in found):
            diags.append(Diagnostic(WARNING, "no Kubernetes objects in this file (empty, or "
                                    "only comments): nothing to load", file=_name(file)))
    return Loaded(tuple(_name(f) for f in files), tuple(documents), tuple(diags))
