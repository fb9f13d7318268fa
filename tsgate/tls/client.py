"""
TLS origination to upstreams: a DestinationRule's ``trafficPolicy.tls``
(``SIMPLE``, ``MUTUAL``) as one pyOpenSSL client context per cluster.

The server's chain is verified by OpenSSL against ``caCertificates`` (the
system roots when omitted); its identity is verified with service-identity
against ``subjectAltNames`` (any one of them), else ``sni``, else the
destination host. ``insecureSkipVerify`` skips both. A failed verification
or handshake ends the connection with ``UF`` and Envoy's
``upstream_transport_failure_reason``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import attrs
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.hazmat import DNS_ID, URI_ID, IPAddress_ID, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from tsgate.tls import credentials as C
from tsgate.tls.server import Report, TlsSession, session_of, verify_error_string


def identity_matches(x509cert: Any, names: Sequence[str]) -> bool:
    """Does the certificate prove any of ``names`` (DNS name, IP address or URI SAN)?"""
    try:
        patterns = extract_patterns(x509cert)
    except CertificateError:
        return False
    for name in names:
        try:
            if C.is_ip(name):
                ident: Any = IPAddress_ID(name)
            elif "://" in name:
                ident = URI_ID(name)
            else:
                ident = DNS_ID(name)
            verify_service_identity(patterns, obligatory_ids=[ident], optional_ids=[])
            return True
        except (VerificationError, CertificateError, ValueError):
            continue
    return False


@implementer(IOpenSSLClientConnectionCreator)
class ClientConnectionCreator:
    """Twisted's TLS layer asks this for each upstream connection."""

    def __init__(self, context: SSL.Context, sni: str) -> None:
        self.context = context
        self.sni = sni.encode("idna") if sni else b""

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802
        conn = SSL.Connection(self.context, None)
        conn.set_app_data(tlsProtocol)  # as Twisted does; session_of() finds the session
        if self.sni:
            conn.set_tlsext_host_name(self.sni)
        return conn


@attrs.frozen(eq=False)
class Origination:
    mode: str
    sni: str
    #: the server must prove one of these (empty with insecureSkipVerify)
    verify_names: tuple[str, ...]
    insecure_skip_verify: bool
    creator: ClientConnectionCreator
    ca: str = "system roots"
    certificates: tuple[dict[str, Any], ...] = ()
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "sni": self.sni or None,
            "verify_names": list(self.verify_names),
            "insecure_skip_verify": self.insecure_skip_verify,
            "ca": self.ca,
            "client_certificates": list(self.certificates),
        }


def _verifier(names: Sequence[str]) -> Any:
    wanted = tuple(names)

    def verify(conn: Any, x509cert: Any, errno: int, depth: int, ok: int) -> bool:
        session = session_of(conn)
        if not ok:
            if isinstance(session, TlsSession) and session.failure is None:
                session.failure = "fail_verify_error"
                session.facts["verify_error"] = verify_error_string(errno)
            return False
        if depth == 0 and wanted and not identity_matches(x509cert, wanted):
            if isinstance(session, TlsSession):
                session.failure = "fail_verify_san"
                session.facts["verify_error"] = (
                    "certificate does not match " + " or ".join(wanted))
            return False
        return True

    return verify


def build_origination(tls: Any, host: str, credentials_dir: Optional[str],
                      report: Report) -> Optional[Origination]:
    """An :class:`Origination` for a ``config.model.ClientTLS``, None if not originating."""
    if tls is None or tls.mode not in ("SIMPLE", "MUTUAL"):
        return None
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION)
    files: list[str] = []
    ca_path, ca_field = tls.ca_certificates, "caCertificates"
    cert_path, key_path = tls.client_certificate, tls.private_key
    cert_field, key_field = "clientCertificate", "privateKey"
    certs: list[dict[str, Any]] = []
    try:
        if tls.credential_name:
            found = C.credential_files(tls.credential_name, credentials_dir, "credentialName",
                                       need_key=tls.mode == "MUTUAL")
            files.extend(found.directories)
            if found.cert and found.key:
                cert_path, key_path = found.cert, found.key
                cert_field = key_field = "credentialName"
            if found.ca and not ca_path:
                ca_path, ca_field = found.ca, "credentialName"
        if tls.mode == "MUTUAL":
            if not cert_path or not key_path:
                report("error", "clientCertificate" if not cert_path else "privateKey",
                       "MUTUAL TLS origination needs clientCertificate and privateKey (or a "
                       "credentialName)")
                return None
        if cert_path and key_path:
            chain, key = C.read_pair(cert_path, key_path, cert_field, key_field)
            files.extend((cert_path, key_path))
            ctx.use_certificate(chain[0])
            for extra in chain[1:]:
                ctx.add_extra_chain_cert(extra)
            ctx.use_privatekey(key)
            certs.append(C.certificate_facts(chain[0]))
        names: tuple[str, ...] = ()
        if tls.insecure_skip_verify:
            ctx.set_verify(SSL.VERIFY_NONE)
            ca_desc = "not verified (insecureSkipVerify)"
        else:
            if ca_path:
                store = ctx.get_cert_store()
                assert store is not None
                for ca in C.read_certificates(ca_path, ca_field, "CA certificates"):
                    store.add_cert(crypto.X509.from_cryptography(ca))
                files.append(ca_path)
                ca_desc = ca_path
            else:
                ctx.set_default_verify_paths()
                ca_desc = "system roots"
            names = tuple(tls.subject_alt_names) or ((tls.sni,) if tls.sni else (host,))
            ctx.set_verify(SSL.VERIFY_PEER, _verifier(names))
    except C.CredentialError as exc:
        report("error", exc.field, exc.message)
        return None
    except SSL.Error as exc:
        report("error", "", f"OpenSSL refused the settings: {exc}")
        return None
    return Origination(mode=tls.mode, sni=tls.sni, verify_names=names,
                       insecure_skip_verify=tls.insecure_skip_verify,
                       creator=ClientConnectionCreator(ctx, tls.sni), ca=ca_desc,
                       certificates=tuple(certs), files=tuple(dict.fromkeys(files)))
