"""
What ``tsgate validate`` says about served certificates (warnings; the
errors, such as a missing file or a key that does not match, come from
loading them in ``tsgate.tls.server``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tsgate.tls import credentials as C

#: a served certificate expiring sooner than this is a warning
EXPIRY_WARNING_DAYS = 30
TERMINATING_MODES = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")


def terminates(server: Any) -> bool:
    """Does tsgate terminate TLS for this Gateway server?"""
    return server.tls is not None and server.tls.mode in TERMINATING_MODES


def termination_warnings(termination: Any) -> list[tuple[str, str, str]]:
    """(severity, field, message) about a loaded termination's certificates."""
    out: list[tuple[str, str, str]] = []
    names = termination.cert_names
    for host in termination.hosts:
        if host == "*":
            continue
        if not C.covers(names, host):
            out.append(("warning", "", f"the certificate does not cover host {host!r} (it is "
                        "for " + (", ".join(names) or "no DNS name") + "): clients that "
                        "verify the name will refuse it"))
    for facts in termination.certificates:
        days = facts["days_until_expiry"]
        if days < 0:
            out.append(("warning", "", f"the certificate {facts['subject']} expired on "
                        f"{facts['not_after']}"))
        elif days < EXPIRY_WARNING_DAYS:
            out.append(("warning", "", f"the certificate {facts['subject']} expires in "
                        f"{int(days)} days ({facts['not_after']})"))
    return out


def shared_certificate_hosts(termination: Any, passthrough_names: Sequence[str]) -> list[str]:
    """Passthrough SNI names that the terminating server's certificate also covers."""
    return [n for n in passthrough_names if n != "*" and C.covers(termination.cert_names, n)]
