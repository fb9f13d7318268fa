"""
Property (issue #9): whatever the bytes, ``tsgate validate``'s code path gives
diagnostics, never an exception, and prints them without a traceback.

Three generators: random bytes; random YAML-ish text built from YAML's own
punctuation (anchors, aliases, merge keys, flow and block collections, tags);
and hostile shapes (alias chains, deep nesting, self-references) spliced into
an otherwise valid Gateway.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsgate.cli import run_validate

TOKENS = ["&a ", "*a", "&b ", "*b", "<<: ", "- ", ": ", "[", "]", "{", "}", ", ", "\n", "  ",
          "!!str ", "!!map ", "!!binary ", "? ", "---\n", "...\n", "'", '"', "#", "|", ">",
          "kind", "Gateway", "apiVersion", "networking.istio.io/v1", "spec", "servers",
          "metadata", "name", "x", "1", "001:db8::", "1:20", "2024-01-01", "~", "null",
          "\t", "%YAML 1.1\n", "\\", "\x00", "\u2028", "\ufeff", "ports", "hosts", "*"]

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  servers:
  - port: {{number: 31400, name: tcp, protocol: TCP}}
    hosts: {hosts}
"""


def hostile(draw_kind: int, n: int) -> str:
    if draw_kind == 0:  # alias chain
        lines = ["l0: &l0 [x, x, x, x, x, x, x, x]"]
        lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 8) + "]" for i in range(1, n)]
        return "\n".join(lines) + "\n"
    if draw_kind == 1:  # deep nesting, flow then block
        return "[" * n * 40 + "]" * n * 40 + "\n"
    if draw_kind == 2:
        return "".join("  " * i + "- \n" for i in range(n * 30))
    if draw_kind == 3:  # self reference through a mapping
        return "a: &a {b: *a}\n"
    return GATEWAY.format(hosts="&h [*h]")


def validate_text(data: bytes) -> tuple[int, str, str]:
    fd, path = tempfile.mkstemp(suffix=".yaml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        args = argparse.Namespace(paths=[path], gateway_label=None, namespace="default",
                                  gateway_namespace=None, quiet=False, json=False,
                                  output="json", strict=False)
        out, err = io.StringIO(), io.StringIO()
        code = run_validate(args, out, err)
        return code, out.getvalue(), err.getvalue()
    finally:
        os.unlink(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_give_diagnostics_never_an_exception(data):
    code, out, err = validate_text(data)
    assert code in (0, 1)
    assert out.startswith("{")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=80))
def test_random_yaml_punctuation_gives_diagnostics_never_an_exception(tokens):
    code, out, err = validate_text("".join(tokens).encode("utf-8"))
    assert code in (0, 1)
    assert "Traceback" not in err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 4), st.integers(1, 12), st.sampled_from(["", GATEWAY.format(hosts='["*"]')]))
def test_hostile_shapes_give_diagnostics_never_an_exception(kind, n, prefix):
    text = prefix + ("---\n" if prefix else "") + hostile(kind, n)
    code, out, err = validate_text(text.encode("utf-8"))
    assert code in (0, 1)
    assert out.startswith("{")
