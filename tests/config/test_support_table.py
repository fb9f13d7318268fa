"""docs/istio-support.md lists every field of the schema, with a status, in sync (issue #9)."""

from __future__ import annotations

import re

from tests.config.conftest import ROOT
from tsgate.config.schema import SPECS
from tsgate.config.support import (
    BEGIN,
    END,
    STATUSES,
    SUPPORT,
    markdown_table,
    schema_fields,
)

DOC = ROOT / "docs" / "istio-support.md"


def test_every_schema_field_has_a_status_and_nothing_else_does():
    fields = {(message, field) for _, message, field in schema_fields()}
    assert fields == set(SUPPORT), (
        f"missing: {sorted(fields - set(SUPPORT))}; stale: {sorted(set(SUPPORT) - fields)}")
    assert all(status in STATUSES and note for status, note in SUPPORT.values())


def test_the_five_kinds_are_covered():
    assert {kind for kind, _, _ in schema_fields()} == set(SPECS) >= {
        "Gateway", "VirtualService", "ServiceEntry", "WorkloadEntry", "DestinationRule"}


def test_the_document_is_the_generated_table():
    text = DOC.read_text()
    assert BEGIN in text and END in text
    body = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert body == markdown_table().strip(), \
        "regenerate: python3 -m tsgate.config.support, paste between the markers"


def test_every_row_names_a_field_and_a_status():
    rows = re.findall(r"^\| ([\w.]+) \| `(\w+)` \| (\w+) \|", DOC.read_text(), re.M)
    assert len(rows) == len(SUPPORT)
    assert {(m, f) for m, f, _ in rows} == set(SUPPORT)
    assert {s for _, _, s in rows} <= set(STATUSES)
