"""
Istio's own test inputs, Istio's verdicts: tsgate must agree (issue #9).

Each ``cases/*.yaml`` names its source in istio/istio (rebuild them with
``build_corpus.py``). Validation cases say ``istio: accept`` or ``istio:
reject``: accepted means ``tsgate validate`` reports no error, rejected
means at least one. Analyzer cases list the (code, resource) pairs
``istioctl analyze`` reports for the codes tsgate checks; tsgate must report
exactly those.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tsgate.config import load_config

CASES = sorted((Path(__file__).resolve().parent / "cases").glob("*.yaml"))


def header(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if not line.startswith("# "):
            break
        key, _, value = line[2:].partition(": ")
        out[key] = value
    return out


def reported(result, codes: list[str]) -> set[str]:
    """``IST0145 Gateway alpha``-style pairs of tsgate's diagnostics."""
    out = set()
    for d in result.diagnostics:
        if d.code in codes and d.resource:
            kind, _, ref = d.resource.partition(" ")
            out.add(f"{d.code} {kind} {ref}")
    return out


def normalise(pair: str) -> str:
    """Istio prints ``Kind name`` for objects without a namespace: tsgate says default/."""
    code, kind, ref = pair.split(" ", 2)
    return f"{code} {kind} {ref if '/' in ref else 'default/' + ref}"


def test_the_corpus_is_there():
    assert len(CASES) >= 100
    assert (CASES[0].parent.parent / "NOTICE").exists()


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_tsgate_agrees_with_istio(path: Path) -> None:
    meta = header(path)
    assert meta["source"].startswith("istio/istio@")
    # as `tsgate validate` reads it (certificate files are not Istio's to check)
    result = load_config([str(path)], tls_files_fatal=False)
    errors = "\n".join(str(d) for d in result.errors)
    if meta.get("istio") == "accept":
        assert result.ok, errors
    elif meta.get("istio") == "reject":
        assert not result.ok, f"Istio rejects this ({meta.get('istio-error')}); tsgate accepted"
    else:
        codes, _, scope = meta["istioctl-codes-checked"].partition(" (VirtualServices ")
        want = set() if meta["istioctl-expects"] == "(nothing)" else {
            normalise(p.strip()) for p in meta["istioctl-expects"].split(";")}
        got = reported(result, codes.split())
        if scope:  # only these resources are compared (tcp/tls rules; http is not checked)
            names = set(scope.rstrip(")").split(", "))
            got = {g for g in got if g.split(" ", 2)[2] in names}
        assert got == want, "\n".join(str(d) for d in result.diagnostics
                                      if d.code in codes) or "no diagnostics with these codes"
