"""
One fuzz target per parser: a function of bytes that returns normally for
any input and raises only on a bug.

- ``hint:<name>``: every hint parser the plugin system finds (tls, postgres,
  mongo, kafka, redis, ...): ``parse`` returns NeedMore, NotMine or a Hint,
  or raises HintParseError (the one error the contract allows), for every
  prefix the data path could hand it.
- ``preamble:<name>``: STARTTLS negotiators (postgres), same contract.
- ``observer:<name>``: every stream observer (postgres, mongo, kafka, redis,
  mysql): fed both directions in chunks, it raises nothing (its contract).
- ``proxy-header``: the PROXY protocol v1/v2 header through
  ``twisted.protocols.haproxy``'s wrapper, as a listener with PROXY enabled
  reads it: a bad header closes the connection, never raises.
- ``yaml``: the configuration pipeline (YAML parse, Istio parse, validation,
  compilation) on one file's text: diagnostics, never an exception.

Seeds are the real captures in tests/data; the strategies mutate them (see
test_fuzz.py) and ``long_run.py`` runs a million inputs per target.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from tsgate.interfaces import HintParseError, NeedMore, NotMine

DATA = Path(__file__).resolve().parents[1] / "data"

Target = Callable[[bytes], None]

#: The budget of one parser call (one ``parse``, one ``client_data``, one
#: header read, one file through the config pipeline), in CPU seconds of the
#: calling thread: wall time on a shared machine would measure the neighbours.
CALL_BUDGET = 0.010


class Slowest:
    """The longest single call seen per target, and the input that made it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.inputs: dict[str, bytes] = {}

    def time(self, name: str, data: bytes, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.thread_time()
        try:
            return fn(*args)
        finally:
            took = time.thread_time() - start
            if took > self.seconds.get(name, 0.0):
                self.seconds[name] = took
                self.inputs[name] = data


SLOWEST = Slowest()


def _read_records(path: Path) -> list[tuple[str, bytes]]:
    raw, out, pos = path.read_bytes(), [], 0
    while pos + 5 <= len(raw):
        (n,) = struct.unpack_from(">I", raw, pos + 1)
        out.append((chr(raw[pos]), raw[pos + 5: pos + 5 + n]))
        pos += 5 + n
    return out


def seeds(protocol: str) -> list[bytes]:
    """First client bytes and whole directions of every capture of ``protocol``."""
    out: list[bytes] = []
    folder = DATA / protocol
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        if path.suffix == ".bin":
            out.append(path.read_bytes())
        elif path.suffix in (".cap", ".trace"):
            records = _read_records(path)
            for side in ("c", "s", "C", "S"):
                joined = b"".join(d for k, d in records if k == side)
                if joined:
                    out.append(joined[:65536])
    return out


def _check_result(result: object, what: str) -> None:
    if isinstance(result, (NeedMore, NotMine)):
        return
    if result is None or type(result).__name__ not in ("Hint", "Preamble"):
        raise AssertionError(f"{what} returned {result!r}")


def _parser_target(parser: Any, what: str) -> Target:
    limit = int(getattr(parser, "max_bytes", 65536))

    def target(data: bytes) -> None:
        data = data[:limit]
        # as the data path calls it: growing prefixes until it decides
        for end in sorted({1, 5, 11, len(data) // 2, len(data)}):
            if end > len(data):
                continue
            try:
                result = SLOWEST.time(what, data, parser.parse, data[:end])
            except HintParseError:
                return
            _check_result(result, what)
            if not isinstance(result, NeedMore):
                return

    return target


def _chunks(data: bytes) -> Iterator[tuple[bool, bytes]]:
    """Bytes to an alternating two-way conversation; the first byte sets the cut sizes."""
    if not data:
        return
    step = 1 + data[0] % 97
    pos, client = 1, True
    while pos < len(data):
        chunk = data[pos: pos + step]
        yield client, chunk
        pos += step
        client = not client if chunk[-1] & 1 else client


def _observer_target(factory: Any) -> Target:
    what = f"observer {factory.name}"

    def target(data: bytes) -> None:
        emitted: list[tuple[str, int]] = []
        now = [0.0]

        def emit(name: str, amount: int) -> None:
            emitted.append((name, amount))

        def observe(name: str, value: float) -> None:
            pass

        if hasattr(factory, "new_timed_observer"):
            observer = factory.new_timed_observer(emit, observe, lambda: now[0])
        else:
            observer = factory.new_observer(emit)
        for client, chunk in _chunks(data):
            now[0] += 0.001
            SLOWEST.time(what, data, observer.client_data if client else observer.server_data,
                         chunk)
        dict(observer.attributes())
        for name, amount in emitted:
            assert isinstance(name, str) and isinstance(amount, int), (name, amount)

    return target


class _Sink(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


def _proxy_header_target() -> Target:
    from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

    wrapping = HAProxyWrappingFactory(Factory.forProtocol(_Sink))

    def target(data: bytes) -> None:
        protocol = wrapping.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        for end in range(0, len(data), 7):  # as a socket hands it over: in pieces
            SLOWEST.time("proxy-header", data, protocol.dataReceived, data[end: end + 7])
            if transport.disconnecting:
                break

    return target


def _yaml_target() -> Target:
    from tsgate.config import DEFAULT_GATEWAY_LABELS
    from tsgate.config.compiler import compile_table
    from tsgate.config.loader import parse_yaml
    from tsgate.config.parse import merge_duplicates, parse_documents
    from tsgate.config.validate import validate

    def pipeline(text: str) -> None:
        docs, _ = parse_yaml(text, "fuzz.yaml")
        parsed, _ = parse_documents(docs, "default")
        resources, _ = merge_duplicates(parsed)
        validate(resources)
        compile_table(resources, DEFAULT_GATEWAY_LABELS, None)

    def target(data: bytes) -> None:
        SLOWEST.time("yaml", data, pipeline, data.decode("utf-8", "replace"))

    return target


#: The largest YAML file the fuzzer builds (the examples are 0.3-3 KiB); the 10 ms
#: budget is per file of this size, not per arbitrary size.
YAML_MAX = 4096


def targets() -> dict[str, tuple[Target, list[bytes]]]:
    """Every target, with its seeds."""
    from tsgate.plugins import load_plugins

    plugins = load_plugins()
    out: dict[str, tuple[Target, list[bytes]]] = {}
    for name, parser in sorted(plugins.hint_parsers.items()):
        out[f"hint:{name}"] = (_parser_target(parser, f"hint {name}"), seeds(parser.protocol))
    for name, parser in sorted(plugins.preamble_negotiators.items()):
        out[f"preamble:{name}"] = (_parser_target(parser, f"preamble {name}"),
                                   seeds(parser.protocol))
    for name, factory in sorted(plugins.observers.items()):
        out[f"observer:{name}"] = (_observer_target(factory),
                                   [bytes([7]) + s for s in seeds(factory.protocol)])
    out["proxy-header"] = (_proxy_header_target(), [
        b"PROXY TCP4 192.0.2.1 198.51.100.2 51234 31400\r\nhello",
        b"PROXY TCP6 2001:db8::1 2001:db8::2 51234 31400\r\n",
        b"PROXY UNKNOWN\r\n",
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x02\xc8\x22\x7a\xb8",
    ])
    yaml_seeds = [p.read_bytes() for p in sorted((DATA.parents[1] / "examples").rglob("*.yaml"))]
    out["yaml"] = (_yaml_target(), [s for s in yaml_seeds if len(s) <= YAML_MAX])
    return out
