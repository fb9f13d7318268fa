"""
The peer identity of a verified client certificate, as Istio defines it for
AuthorizationPolicy ``principals`` / ``namespaces`` and the ``when`` keys
``source.principal`` / ``source.namespace``.

A mesh workload's certificate carries one URI SAN in SPIFFE form,
``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``; Istio's
principal is that URI without ``spiffe://`` (``cluster.local/ns/shop/sa/web``)
and the namespace is the ``ns`` segment. A certificate without a SPIFFE URI
SAN gives no principal (and so no namespace): positive matches fail, ``not*``
matches succeed, as for a client that sent no certificate.

Only called for certificates OpenSSL has verified (the handshake of a MUTUAL
or OPTIONAL_MUTUAL server completed), once per handshake.
"""

from __future__ import annotations

from typing import Optional

from cryptography import x509

SPIFFE = "spiffe://"


def spiffe_ids(cert: x509.Certificate) -> tuple[str, ...]:
    """Every ``spiffe://`` URI SAN of ``cert``, in certificate order."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    except ValueError:  # a malformed extension: no identity
        return ()
    return tuple(str(v) for v in ext.value.get_values_for_type(x509.UniformResourceIdentifier)
                 if str(v).lower().startswith(SPIFFE))


def principal_of(cert: Optional[x509.Certificate]) -> Optional[str]:
    """Istio's principal (``<td>/ns/<ns>/sa/<sa>``) from the first SPIFFE URI SAN, or None."""
    if cert is None:
        return None
    for uri in spiffe_ids(cert):
        rest = uri[len(SPIFFE):]
        if rest and "/" in rest:
            return rest
    return None


def namespace_of(principal: Optional[str]) -> Optional[str]:
    """The ``ns`` segment of a principal (``td/ns/<ns>/sa/<sa>``), or None."""
    parts = (principal or "").split("/")
    for i in range(1, len(parts) - 1):
        if parts[i] == "ns" and parts[i + 1]:
            return parts[i + 1]
    return None
