"""
Certificates and keys from files: Gateway ``serverCertificate``/``privateKey``
paths, and ``credentialName`` read under ``--credentials DIR`` in the layout
of a mounted Kubernetes Secret.

``DIR/<credentialName>/`` holds ``tls.crt``, ``tls.key`` and optionally
``ca.crt`` and ``ca.crl`` (a ``kubernetes.io/tls`` Secret), or Istio's generic
keys ``cert``, ``key``, ``cacert`` and ``crl``; the CA may instead live in
``DIR/<credentialName>-cacert/`` (``ca.crt`` or ``cacert``), as Istio looks it
up. Every problem is a :class:`CredentialError` naming the YAML field that
led to the file, so configuration errors point at the right line.

Nothing here keeps or prints key material: facts about certificates
(subject, names, expiry, fingerprint) are what leaves this module.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

#: file names in a credential directory, Kubernetes TLS Secret keys first
CERT_KEYS = ("tls.crt", "cert")
KEY_KEYS = ("tls.key", "key")
CA_KEYS = ("ca.crt", "cacert")
CRL_KEYS = ("ca.crl", "crl")
#: Istio's suffix for a separate CA Secret
CACERT_SUFFIX = "-cacert"


class CredentialError(Exception):
    """A certificate source that cannot be used; ``field`` is the YAML field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@attrs.frozen
class CredentialFiles:
    """The files a credentialName stands for (empty string: not present)."""

    cert: str
    key: str
    ca: str = ""
    crl: str = ""
    #: the directories that make up the credential (watched for ``..data`` swaps)
    directories: tuple[str, ...] = ()


def _first(directory: str, names: Sequence[str]) -> str:
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return ""


def credential_files(name: str, directory: Optional[str], field: str,
                     need_key: bool = True) -> CredentialFiles:
    """The files of credential ``name`` under ``directory`` (``--credentials``)."""
    if not directory:
        raise CredentialError(
            field, f"credential {name!r}: credentials are read from files under "
            "--credentials DIR (DIR/<credentialName>/tls.crt, tls.key, ca.crt), and no "
            "--credentials directory was given")
    if not name or ".." in name.split("/"):
        raise CredentialError(field, f"credential name {name!r} is not a valid name")
    # ``kubernetes://name`` and ``ns/name`` forms: the last part names the directory.
    short = name.split("://", 1)[-1].rstrip("/").split("/")[-1]
    base = os.path.join(directory, short)
    ca_base = os.path.join(directory, short + CACERT_SUFFIX)
    dirs = tuple(d for d in (base, ca_base) if os.path.isdir(d))
    if not os.path.isdir(base):
        if not need_key and os.path.isdir(ca_base):
            return CredentialFiles("", "", _first(ca_base, CA_KEYS), _first(ca_base, CRL_KEYS),
                                   dirs)
        raise CredentialError(field, f"credential {name!r} not found: no directory {base}")
    cert = _first(base, CERT_KEYS)
    key = _first(base, KEY_KEYS)
    if need_key and not cert:
        raise CredentialError(field, f"credential {name!r}: {base} has no tls.crt (or cert)")
    if need_key and not key:
        raise CredentialError(field, f"credential {name!r}: {base} has no tls.key (or key)")
    ca = _first(base, CA_KEYS) or (_first(ca_base, CA_KEYS) if os.path.isdir(ca_base) else "")
    crl = _first(base, CRL_KEYS) or (_first(ca_base, CRL_KEYS) if os.path.isdir(ca_base)
                                     else "")
    return CredentialFiles(cert, key, ca, crl, dirs)


def _read(path: str, field: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CredentialError(field, f"cannot read {what} {path}: {exc.strerror or exc}") \
            from None


def read_certificates(path: str, field: str, what: str = "certificate") -> \
        tuple[x509.Certificate, ...]:
    """Every PEM certificate in ``path`` (at least one)."""
    data = _read(path, field, what)
    try:
        certs = tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        certs = ()
    if not certs:
        raise CredentialError(field, f"{what} {path} holds no PEM certificate")
    return certs


def read_private_key(path: str, field: str) -> Any:
    data = _read(path, field, "private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CredentialError(field, f"private key {path} is encrypted; tsgate reads "
                                     "unencrypted keys (as Istio does)") from None
    except (ValueError, Exception):
        raise CredentialError(field, f"private key {path} holds no PEM private key") from None


def public_key_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[no-any-return]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def read_pair(cert_path: str, key_path: str, cert_field: str, key_field: str) -> \
        tuple[tuple[x509.Certificate, ...], Any]:
    """A certificate chain and its private key, checked to belong together."""
    chain = read_certificates(cert_path, cert_field)
    key = read_private_key(key_path, key_field)
    if public_key_der(chain[0].public_key()) != public_key_der(key.public_key()):
        raise CredentialError(key_field, f"private key {key_path} does not match the "
                                         f"certificate {cert_path}")
    return chain, key


def read_crl(path: str, field: str) -> x509.CertificateRevocationList:
    data = _read(path, field, "CRL")
    try:
        return x509.load_pem_x509_crl(data)
    except ValueError:
        try:
            return x509.load_der_x509_crl(data)
        except ValueError:
            raise CredentialError(field, f"CRL {path} is neither PEM nor DER") from None


# ------------------------------------------------------------------- facts


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a certificate is for: its DNS SANs, else its CN (as curl accepts)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(n.lower() for n in ext.value.get_values_for_type(x509.DNSName))
        if names:
            return names
        return ()
    except x509.ExtensionNotFound:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(str(a.value).lower() for a in cns)


def all_sans(cert: x509.Certificate) -> tuple[str, ...]:
    """Every subjectAltName as a string (DNS names, URIs, IPs, e-mail addresses)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    out: list[str] = []
    for kind in (x509.DNSName, x509.UniformResourceIdentifier, x509.RFC822Name):
        out.extend(str(v) for v in ext.value.get_values_for_type(kind))
    out.extend(str(v) for v in ext.value.get_values_for_type(x509.IPAddress))
    return tuple(out)


def covers(names: Iterable[str], host: str) -> bool:
    """Does a certificate for ``names`` serve ``host`` (``*.x`` covers one label)?"""
    host = host.lower().rstrip(".")
    for name in names:
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*."):
            suffix = name[1:]
            if host.startswith("*."):
                if host[1:] == suffix:
                    return True
            elif host.endswith(suffix) and "." not in host[: -len(suffix)]:
                return True
    return False


def not_after(cert: x509.Certificate) -> datetime.datetime:
    return cert.not_valid_after_utc


def days_left(cert: x509.Certificate, now: Optional[datetime.datetime] = None) -> float:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return (not_after(cert) - now).total_seconds() / 86400


def sha256_fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def certificate_facts(cert: x509.Certificate) -> dict[str, Any]:
    """What /config_dump and the admin show about a certificate (no key material)."""
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": not_after(cert).isoformat(),
        "days_until_expiry": round(days_left(cert), 2),
        "subject_alt_names": list(all_sans(cert)),
        "sha256": sha256_fingerprint(cert),
        "key_type": type(cert.public_key()).__name__.lstrip("_"),
    }


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


Fingerprint = tuple[tuple[str, str, int, int, int], ...]


def files_fingerprint(paths: Iterable[str]) -> Fingerprint:
    """
    Resolved path, inode, modification time and size of each file: changes
    when a file is rewritten, replaced or when a Secret volume's ``..data``
    symlink is swapped (the resolved path changes).
    """
    out = []
    for path in sorted(set(paths)):
        try:
            real = os.path.realpath(path)
            st = os.stat(real)
            out.append((path, real, st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((path, "", 0, 0, -1))
    return tuple(out)
