"""
Test certificates, generated at test time with ``cryptography`` (never
committed): a CA, server and client leaves, and credential directories in the
layout tsgate reads under ``--credentials`` (a mounted Kubernetes Secret).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key(kind: str) -> Any:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,  # type: ignore[no-any-return]
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@attrs.define
class Leaf:
    cert: x509.Certificate
    key: Any

    def write(self, cert_path: Path, key_path: Path, chain: Sequence[x509.Certificate] = ()) \
            -> tuple[Path, Path]:
        cert_path.write_bytes(cert_pem(self.cert) + b"".join(cert_pem(c) for c in chain))
        key_path.write_bytes(key_pem(self.key))
        os.chmod(key_path, 0o600)
        return cert_path, key_path


@attrs.define
class CA:
    cert: x509.Certificate
    key: Any

    @classmethod
    def create(cls, name: str = "tsgate test CA", kind: str = "ec") -> CA:
        key = _key(kind)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def pem(self) -> bytes:
        return cert_pem(self.cert)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.pem())
        return path

    def crl(self, revoked: Sequence[Leaf] = ()) -> bytes:
        """A PEM CRL signed by this CA revoking ``revoked``."""
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(now - datetime.timedelta(hours=1))
                   .next_update(now + datetime.timedelta(days=7)))
        for leaf in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(leaf.cert.serial_number)
                .revocation_date(now - datetime.timedelta(minutes=5)).build())
        crl = builder.sign(self.key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, dns: Sequence[str] = (), ips: Sequence[str] = (),
              uris: Sequence[str] = (), client: bool = False, days: float = 90,
              kind: str = "ec", not_before_days: float = 1) -> Leaf:
        key = _key(kind)
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=not_before_days))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        names += [x509.UniformResourceIdentifier(u) for u in uris]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return Leaf(builder.sign(self.key, hashes.SHA256()), key)


def write_credential(directory: Path, name: str, leaf: Leaf, ca: Optional[CA] = None,
                     generic: bool = False, separate_ca: bool = False) -> Path:
    """``directory/name/{tls.crt,tls.key[,ca.crt]}`` (or cert/key/cacert; CA in name-cacert/)."""
    base = directory / name
    base.mkdir(parents=True, exist_ok=True)
    crt, key, cacert = ("cert", "key", "cacert") if generic else ("tls.crt", "tls.key", "ca.crt")
    leaf.write(base / crt, base / key)
    if ca is not None:
        if separate_ca:
            ca_dir = directory / f"{name}-cacert"
            ca_dir.mkdir(exist_ok=True)
            ca.write(ca_dir / cacert)
        else:
            ca.write(base / cacert)
    return base


def write_secret_volume(directory: Path, files: dict[str, bytes], generation: int) -> None:
    """
    A Kubernetes Secret volume update: files go to a new ``..<timestamp>``
    directory, ``..data`` is swapped to it atomically, and the visible names
    are symlinks through ``..data``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f"..2026_12_01_{generation:04d}"
    stamp.mkdir()
    for name, data in files.items():
        (stamp / name).write_bytes(data)
    tmp = directory / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(stamp.name)
    os.replace(tmp, directory / "..data")
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
