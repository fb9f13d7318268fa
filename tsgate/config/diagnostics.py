"""
Diagnostics: what ``tsgate validate`` prints and what a failed reload logs.

Every finding names the file and line, the resource (``kind namespace/name``)
and the field path (``spec.tls[0].match[0].sniHosts[1]``), because a user
with forty YAML files needs to jump straight to the line, the way a compiler
error works. Loading never raises for bad configuration; it collects these.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

ERROR = "error"
WARNING = "warning"
#: A one-line notice that is neither wrong nor suspicious (a Deployment
#: skipped, a host resolved by DNS as written); printed, never fatal.
INFO = "info"


@attrs.frozen
class Diagnostic:
    """One finding about the configuration, with where it is."""

    severity: str
    message: str
    file: str = ""
    line: int = 0
    resource: str = ""  # "VirtualService default/foo"
    path: str = ""  # "spec.tls[0].match[0].sniHosts[1]"
    #: Istio's message code when Istio reports the same thing ("IST0145"),
    #: see https://istio.io/latest/docs/reference/config/analysis/
    code: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else (self.file or "<config>")
        parts = [f"{where}: {self.severity}:"]
        if self.resource:
            parts.append(f" {self.resource}:")
        if self.path:
            parts.append(f" {self.path}:")
        parts.append(f" {self.message}")
        if self.code:
            parts.append(f" [{self.code}]")
        return "".join(parts)

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def strict(diagnostics: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    """``--strict``: every warning becomes an error (notices stay notices)."""
    return tuple(attrs.evolve(d, severity=ERROR) if d.severity == WARNING else d
                 for d in diagnostics)
