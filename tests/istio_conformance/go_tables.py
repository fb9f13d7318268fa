"""
Istio's Go validation test tables (``pkg/config/validation/validation_test.go``)
as YAML cases: a small reader of Go composite literals, used by
build_corpus.py. A case whose literal uses anything it cannot read (a
variable, a helper call) is left out and counted, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Optional

TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<num>-?\d+(?:\.\d+)?(?:e-?\d+)?)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>[{}\[\]():,&*])
""", re.X | re.S)

DURATIONS = {"time.Nanosecond": 1e-9, "time.Microsecond": 1e-6, "time.Millisecond": 1e-3,
             "time.Second": 1.0, "time.Minute": 60.0, "time.Hour": 3600.0}
WRAPPERS = ("UInt32Value", "Int32Value", "UInt64Value", "BoolValue", "DoubleValue",
            "StringValue", "Int64Value")


#: Go fields holding a oneof wrapper (``LbPolicy: &LoadBalancerSettings_Simple{...}``):
#: in YAML the wrapper's field sits in the parent
ONEOF_FIELDS = {"LbPolicy", "HashKey", "HashAlgorithm"}


class Unsupported(Exception):  # noqa: N818 (reads as "this case is Unsupported")
    pass


def tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if m is None:
            raise Unsupported(f"cannot read {text[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup or "", m.group()))
    return out


def go_string(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return bytes(text[1:-1], "utf-8").decode("unicode_escape")


def seconds(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".") + "s"


def enum(name: str) -> str:
    parts = name.rpartition(".")[2].split("_")
    while parts and any(c.islower() for c in parts[0]):
        parts.pop(0)
    if not parts:
        raise Unsupported(name)
    return "_".join(parts)


class Reader:
    def __init__(self, toks: list[tuple[str, str]],
                 variables: Optional[dict[str, Any]] = None) -> None:
        self.toks = toks
        self.i = 0
        self.variables = variables or {}

    def peek(self, k: int = 0) -> tuple[str, str]:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else ("", "")

    def take(self, text: Optional[str] = None) -> tuple[str, str]:
        tok = self.peek()
        if text is not None and tok[1] != text:
            raise Unsupported(f"expected {text!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def type_expr(self) -> str:
        """A type before '{': []*networking.X, map[string]uint32, api.WorkloadSelector..."""
        out = ""
        while self.peek()[1] != "{":
            kind, text = self.take()
            if kind == "" or text in (",", ")", "}"):
                raise Unsupported("not a composite literal")
            out += text
        return out

    def value(self, elided: str = "") -> Any:
        kind, text = self.peek()
        if text == "&":
            self.take()
            return self.value(elided)
        if kind == "str":
            self.take()
            return go_string(text)
        if kind == "num":
            self.take()
            return float(text) if "." in text or "e" in text else int(text)
        if text == "{":
            if not elided:
                raise Unsupported("untyped literal")
            return self.composite(elided)
        if text == "[" or text == "map" or text == "*":
            return self.composite(self.type_expr())
        if kind == "id":
            if text in self.variables:
                self.take()
                return self.variables[text]
            if text in ("true", "false"):
                self.take()
                return text == "true"
            if text == "nil":
                self.take()
                return None
            if self.peek(1)[1] == "{":
                return self.composite(self.type_expr())
            if self.peek(1)[1] == "(":
                return self.call()
            if "." in text and "_" in text.rpartition(".")[2]:
                self.take()
                return enum(text)
        raise Unsupported(f"cannot read value {text!r}")

    def call(self) -> Any:
        name = self.take()[1]
        self.take("(")
        if name.endswith(("durationpb.New", "types.DurationProto")):
            total = self.duration_product()
            self.take(")")
            return seconds(total)
        short = name.rpartition(".")[2]
        if name.startswith(("wrapperspb.", "wrappers.")) and short in (
                "UInt32", "Int32", "Bool", "Double", "String", "UInt64", "Int64"):
            value = self.value()
            self.take(")")
            return value
        raise Unsupported(f"call {name}")

    def duration_product(self) -> float:
        total = 1.0
        while True:
            kind, text = self.take()
            if kind == "num":
                total *= float(text)
            elif text in DURATIONS:
                total *= DURATIONS[text]
            else:
                raise Unsupported(f"duration {text}")
            if self.peek()[1] != "*":
                return total
            self.take("*")

    def composite(self, typ: str) -> Any:
        self.take("{")
        if typ.startswith("[]"):
            elem = typ[2:].lstrip("*")
            items = []
            while self.peek()[1] != "}":
                items.append(self.value(elem))
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("}")
            return items
        if typ.startswith("map["):
            elem = typ.partition("]")[2]
            out: dict[str, Any] = {}
            while self.peek()[1] != "}":
                key = self.value()
                self.take(":")
                out[str(key)] = self.value(elem)
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("}")
            return out
        fields: dict[str, Any] = {}
        while self.peek()[1] != "}":
            name = self.take()[1]
            self.take(":")
            value = self.value()
            if name in ONEOF_FIELDS and isinstance(value, dict):
                fields.update({k[0].upper() + k[1:]: v for k, v in value.items()})
            else:
                fields[name] = value
            if self.peek()[1] == ",":
                self.take(",")
        self.take("}")
        short = typ.rpartition(".")[2]
        if short in WRAPPERS:
            return fields.get("Value")
        if short == "Duration":
            return seconds(fields.get("Seconds", 0) + fields.get("Nanos", 0) / 1e9)
        return {k[0].lower() + k[1:]: v for k, v in fields.items()}


def table(source: str, func: str) -> str:
    """The case list of ``func``: from its ``}{`` after the struct type to the matching '}'."""
    start = source.index(f"func {func}(")
    body = source[start:]
    m = re.search(r"\n\t\}\{\n", body)
    if m is None:
        raise Unsupported(func)
    depth, i = 1, m.end()
    while depth:
        c = body[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c in "\"`":
            end = body.index(c, i + 1)
            while c == '"' and body[end - 1] == "\\":
                end = body.index(c, end + 1)
            i = end
        i += 1
    return body[m.end():i - 1]


def cases(source: str, func: str, fields: tuple[str, ...]) -> Iterator[Any]:
    """Each case as a dict (keyed or positional ``fields``), or Unsupported."""
    # local durations, as: duration := durationpb.Duration{Seconds: int64(time.Hour / ...)}
    body = source[source.index(f"func {func}("):]
    body = body[:body.index("\n}\n")]
    variables = {name: seconds(DURATIONS["time." + unit])
                 for name, unit in re.findall(
                     r"(\w+) := durationpb\.Duration\{Seconds: int64\(time\.(\w+) / "
                     r"time\.Second\)\}", body) if "time." + unit in DURATIONS}
    r = Reader(tokens(table(source, func)), variables)
    while r.peek()[1]:
        if r.peek()[1] == ",":
            r.take(",")
            continue
        start = r.i
        try:
            r.take("{")
            out: dict[str, Any] = {}
            position = 0
            while r.peek()[1] != "}":
                if r.peek()[0] == "id" and r.peek(1)[1] == ":" and r.peek()[1][0].islower():
                    key = r.take()[1]
                    r.take(":")
                else:
                    key = fields[position]
                    position += 1
                out[key] = r.value()
                if r.peek()[1] == ",":
                    r.take(",")
            r.take("}")
            yield out
        except (Unsupported, IndexError, ValueError) as exc:
            r.i = start
            skip(r)
            yield Unsupported(str(exc))


def skip(r: Reader) -> None:
    """Past one balanced {...} case."""
    depth = 0
    while True:
        text = r.take()[1]
        if text == "{":
            depth += 1
        elif text == "}":
            depth -= 1
            if depth == 0:
                return
        elif text == "":
            return
