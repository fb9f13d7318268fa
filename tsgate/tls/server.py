"""
TLS termination: a Gateway server's ``tls`` settings (SIMPLE, MUTUAL,
OPTIONAL_MUTUAL) as one pyOpenSSL context, built once per configuration load.

The certificate is chosen by SNI *before* the handshake: the listener's SNI
chains (``tsgate.routing``) already map the ClientHello's server name to the
server whose ``hosts`` match, so each terminating chain carries its own
:class:`Termination` and context. Passthrough and terminating servers share a
port the same way.

Client certificates (MUTUAL: required; OPTIONAL_MUTUAL: verified if sent) are
checked by OpenSSL against ``caCertificates`` (and ``caCrl``), then against
``subjectAltNames`` (any SAN equal to any listed name) and
``verifyCertificateSpki`` / ``verifyCertificateHash`` (either list matching
is enough, as in Envoy). Why a verification failed is kept on the connection's
:class:`TlsSession` for the ``ssl.fail_verify_*`` counters and the access log.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any, Callable, Optional

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

from tsgate.tls import credentials as C

#: Istio's TLS version names -> OpenSSL's
VERSIONS = {
    "TLSV1_0": SSL.TLS1_VERSION,
    "TLSV1_1": SSL.TLS1_1_VERSION,
    "TLSV1_2": SSL.TLS1_2_VERSION,
    "TLSV1_3": SSL.TLS1_3_VERSION,
}
#: Istio's defaults for gateways: TLS 1.2 to TLS 1.3
DEFAULT_MIN_VERSION = "TLSV1_2"
DEFAULT_MAX_VERSION = "TLSV1_3"
TERMINATING_MODES = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")

#: severity, field path (relative to the server's ``tls``), message
Report = Callable[[str, str, str], None]


class TlsSession:
    """
    One TLS connection's state, set as the pyOpenSSL connection's app data:
    verification outcome for counters and logs, and the handshake facts.
    """

    __slots__ = ("owner", "failure", "peer_presented", "done", "facts", "principal")

    def __init__(self, owner: Any) -> None:
        self.owner = owner  # the DownstreamProtocol / UpstreamProtocol
        #: "fail_verify_error", "fail_verify_san", "fail_verify_cert_hash", ...
        self.failure: Optional[str] = None
        #: the failure in words (upstream_transport_failure_reason)
        self.peer_presented = False
        self.done = False
        self.facts: dict[str, str] = {}
        #: the verified client certificate's Istio principal (tsgate.tls.identity)
        self.principal: Optional[str] = None


def session_of(conn: Any) -> Optional[TlsSession]:
    """
    The :class:`TlsSession` of a pyOpenSSL connection: Twisted's TLS layer
    sets itself as the connection's app data; the session hangs on the
    protocol it wraps (``DownstreamProtocol.tls`` / ``UpstreamProtocol.tls``).
    """
    data = conn.get_app_data()
    if isinstance(data, TlsSession):
        return data
    session = getattr(getattr(data, "wrappedProtocol", None), "tls", None)
    return session if isinstance(session, TlsSession) else None


def verify_error_string(errno: int) -> str:
    """OpenSSL's words for an X509_V_ERR_* code ("certificate has expired")."""
    try:
        return str(_ffi.string(_lib.X509_verify_cert_error_string(errno)).decode("ascii"))
    except Exception:
        return f"verify error {errno}"


def spki_pin(cert: x509.Certificate) -> str:
    """base64(sha256(SubjectPublicKeyInfo)): ``verifyCertificateSpki``'s format."""
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def cert_hash(cert: x509.Certificate) -> str:
    """hex sha256 of the DER certificate, lower case, no colons."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def normal_hash(value: str) -> str:
    return value.replace(":", "").strip().lower()


def make_verifier(sans: Sequence[str], spkis: Sequence[str], hashes: Sequence[str]) -> \
        Callable[[Any, Any, int, int, int], bool]:
    """The OpenSSL verify callback for client (or server) certificates."""
    wanted_sans = set(sans)
    wanted_spki = {s.strip() for s in spkis}
    wanted_hash = {normal_hash(h) for h in hashes}

    def verify(conn: Any, x509cert: Any, errno: int, depth: int, ok: int) -> bool:
        session = session_of(conn)
        if isinstance(session, TlsSession):
            session.peer_presented = True
        if not ok:
            if isinstance(session, TlsSession) and session.failure is None:
                session.failure = "fail_verify_error"
                session.facts["verify_error"] = verify_error_string(errno)
            return False
        if depth != 0:
            return True
        cert = x509cert.to_cryptography()
        if wanted_spki or wanted_hash:
            if spki_pin(cert) not in wanted_spki and cert_hash(cert) not in wanted_hash:
                if isinstance(session, TlsSession):
                    session.failure = "fail_verify_cert_hash"
                return False
        if wanted_sans and not wanted_sans.intersection(C.all_sans(cert)):
            if isinstance(session, TlsSession):
                session.failure = "fail_verify_san"
            return False
        return True

    return verify


@implementer(IOpenSSLServerConnectionCreator)
class ServerConnectionCreator:
    """Twisted's TLS layer asks this for each server-side connection."""

    def __init__(self, context: SSL.Context) -> None:
        self.context = context

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802
        conn = SSL.Connection(self.context, None)
        conn.set_app_data(tlsProtocol)  # as Twisted does; session_of() finds the session
        return conn


@attrs.frozen(eq=False)
class Termination:
    """One terminating server: its settings, its loaded context and facts for dumps."""

    mode: str
    hosts: tuple[str, ...]
    #: "Gateway ns/name spec.servers[i]"
    where: str
    creator: ServerConnectionCreator
    certificates: tuple[dict[str, Any], ...] = ()
    #: names the served certificates are valid for (DNS SANs, else CN)
    cert_names: tuple[str, ...] = ()
    min_version: str = DEFAULT_MIN_VERSION
    max_version: str = DEFAULT_MAX_VERSION
    cipher_suites: tuple[str, ...] = ()
    subject_alt_names: tuple[str, ...] = ()
    #: every file read, for the rotation watcher
    files: tuple[str, ...] = ()
    #: days until the first served certificate expires
    days_until_expiry: float = 0.0
    has_client_ca: bool = False

    @property
    def context(self) -> SSL.Context:
        return self.creator.context

    def to_dict(self) -> dict[str, Any]:
        """For /config_dump and ``tsgate routes --json``: never key material."""
        return {
            "mode": self.mode,
            "server": self.where,
            "min_protocol_version": self.min_version,
            "max_protocol_version": self.max_version,
            "cipher_suites": list(self.cipher_suites),
            "subject_alt_names": list(self.subject_alt_names),
            "client_ca": self.has_client_ca,
            "certificates": list(self.certificates),
            "files": list(self.files),
        }


def _version(name: str, default: str) -> str:
    return name if name in VERSIONS else default


def apply_versions_and_ciphers(ctx: SSL.Context, lo: str, hi: str, ciphers: Sequence[str],
                               report: Report) -> tuple[str, ...]:
    """min/max versions and the TLS <= 1.2 cipher list; bad ciphers warned and ignored."""
    ctx.set_min_proto_version(VERSIONS[lo])
    ctx.set_max_proto_version(VERSIONS[hi])
    good: list[str] = []
    for i, name in enumerate(ciphers):
        if name in good:
            report("warning", f"cipherSuites[{i}]", f"duplicate cipher suite {name!r}: ignored")
            continue
        probe = SSL.Context(SSL.TLS_METHOD)
        try:
            probe.set_cipher_list(name.encode("ascii"))
        except (SSL.Error, UnicodeEncodeError):
            report("warning", f"cipherSuites[{i}]",
                   f"unknown cipher suite {name!r} (OpenSSL names, e.g. "
                   "ECDHE-RSA-AES128-GCM-SHA256; TLS 1.3 suites are not configurable): ignored")
            continue
        good.append(name)
    if good:
        ctx.set_cipher_list(":".join(good).encode("ascii"))
    return tuple(good)


def _load_cert_into(ctx: SSL.Context, chain: Sequence[x509.Certificate], key: Any) -> None:
    ctx.use_certificate(chain[0])
    for extra in chain[1:]:
        ctx.add_extra_chain_cert(extra)
    ctx.use_privatekey(key)
    ctx.check_privatekey()


def build_termination(tls: Any, hosts: Sequence[str], where: str,
                      credentials_dir: Optional[str], report: Report) -> Optional[Termination]:
    """
    A :class:`Termination` for a server's ``tls`` (a ``config.model.ServerTLS``),
    or None after reporting errors (each naming the field at fault).
    """
    mode = tls.mode
    pairs: list[tuple[str, str, str, str]] = []  # cert path, key path, cert field, key field
    ca_path, ca_field = tls.ca_certificates, "caCertificates"
    crl_path, crl_field = tls.ca_crl, "caCrl"
    files: list[str] = []
    try:
        if tls.server_certificate or tls.private_key:
            pairs.append((tls.server_certificate, tls.private_key, "serverCertificate",
                          "privateKey"))
        elif tls.credential_name or tls.credential_names:
            sources = [(tls.credential_name, "credentialName")] if tls.credential_name else [
                (n, f"credentialNames[{i}]") for i, n in enumerate(tls.credential_names)]
            for name, field in sources:
                found = C.credential_files(name, credentials_dir, field)
                pairs.append((found.cert, found.key, field, field))
                files.extend(found.directories)
                if found.ca and not ca_path:
                    ca_path, ca_field = found.ca, field
                if found.crl and not crl_path:
                    crl_path, crl_field = found.crl, field
        elif tls.tls_certificates:
            for i, (cert, key) in enumerate(tls.tls_certificates):
                pairs.append((cert, key, f"tlsCertificates[{i}].serverCertificate",
                              f"tlsCertificates[{i}].privateKey"))
        if tls.ca_cert_credential_name:
            found = C.credential_files(tls.ca_cert_credential_name, credentials_dir,
                                       "caCertCredentialName", need_key=False)
            files.extend(found.directories)
            if found.ca:
                ca_path, ca_field = found.ca, "caCertCredentialName"
            else:
                raise C.CredentialError("caCertCredentialName",
                                        f"credential {tls.ca_cert_credential_name!r} has no "
                                        "ca.crt (or cacert)")
        if not pairs:
            report("error", "", f"{mode} TLS needs a certificate (serverCertificate and "
                   "privateKey, credentialName, credentialNames or tlsCertificates)")
            return None
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        ctx.set_session_id(hashlib.sha256(where.encode()).hexdigest()[:32].encode())
        served: list[x509.Certificate] = []
        for cert_path, key_path, cert_field, key_field in pairs:
            if not cert_path:
                raise C.CredentialError(cert_field, "serverCertificate is required with "
                                                    "privateKey")
            if not key_path:
                raise C.CredentialError(key_field, "privateKey is required with "
                                                   "serverCertificate")
            chain, key = C.read_pair(cert_path, key_path, cert_field, key_field)
            files.extend((cert_path, key_path))
            try:
                _load_cert_into(ctx, chain, key)
            except SSL.Error as exc:
                raise C.CredentialError(key_field, f"OpenSSL refused {cert_path} / "
                                                   f"{key_path}: {exc}") from None
            served.append(chain[0])
        has_ca = False
        if mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
            if not ca_path:
                report("error", "caCertificates",
                       f"{mode} TLS needs caCertificates (or a credential with ca.crt, or "
                       "<credentialName>-cacert) to verify client certificates")
                return None
            cas = C.read_certificates(ca_path, ca_field, "CA certificates")
            files.append(ca_path)
            store = ctx.get_cert_store()
            assert store is not None
            for ca in cas:
                store.add_cert(crypto.X509.from_cryptography(ca))
            for ca in cas:
                ctx.add_client_ca(ca)
            has_ca = True
            if crl_path:
                crl = C.read_crl(crl_path, crl_field)
                files.append(crl_path)
                store.add_crl(crl)
                store.set_flags(crypto.X509StoreFlags.CRL_CHECK)
            flags = SSL.VERIFY_PEER
            if mode == "MUTUAL":
                flags |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            ctx.set_verify(flags, make_verifier(tls.subject_alt_names,
                                                tls.verify_certificate_spki,
                                                tls.verify_certificate_hash))
        elif tls.subject_alt_names or tls.verify_certificate_spki or tls.verify_certificate_hash:
            report("warning", "", f"subjectAltNames / verifyCertificateSpki / "
                   f"verifyCertificateHash check client certificates, which mode {mode} "
                   "does not request: ignored")
    except C.CredentialError as exc:
        report("error", exc.field, exc.message)
        return None
    lo = _version(tls.min_protocol_version, DEFAULT_MIN_VERSION)
    hi = _version(tls.max_protocol_version, DEFAULT_MAX_VERSION)
    if VERSIONS[lo] > VERSIONS[hi]:
        hi = lo  # validation reports min > max
    ciphers = apply_versions_and_ciphers(ctx, lo, hi, tls.cipher_suites, report)
    names: list[str] = []
    for cert in served:
        for n in C.dns_names(cert):
            if n not in names:
                names.append(n)
    return Termination(
        mode=mode, hosts=tuple(hosts), where=where, creator=ServerConnectionCreator(ctx),
        certificates=tuple(C.certificate_facts(c) for c in served), cert_names=tuple(names),
        min_version=lo, max_version=hi, cipher_suites=ciphers,
        subject_alt_names=tuple(tls.subject_alt_names), files=tuple(dict.fromkeys(files)),
        days_until_expiry=min(C.days_left(c) for c in served), has_client_ca=has_ca)
