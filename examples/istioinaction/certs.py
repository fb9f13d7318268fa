"""Generate the book's certificates for the SNI passthrough walkthrough, at run time.

Istio in Action ch.4 ships, per host, a root CA, an intermediate CA and a server
certificate made with fake-service's ``certs/generate.sh`` recipe, laid out as::

    simple-sni-N/
      1_root/certs/ca.cert.pem            self-signed root, CA:TRUE
      1_root/private/ca.key.pem
      2_intermediate/certs/intermediate.cert.pem   CA:TRUE pathlen:0, signed by the root
      2_intermediate/certs/ca-chain.cert.pem       intermediate then root (curl --cacert)
      2_intermediate/private/intermediate.key.pem
      3_application/certs/<host>.cert.pem          server leaf, EKU serverAuth
      3_application/private/<host>.key.pem

This module writes the same layout with the same names, subjects and extensions
(``C=US, ST=Denial, L=Springfield, O=Dis, CN=<host>``; the intermediate without
``L``; leaf serial 0x100212), so the book's commands work with local paths.
Keys are generated fresh on every call and never committed: a private key in a
repository is a private key for everyone.

Where this differs from the book, and why:

- **RSA-2048 for every key** (the book's root and intermediate are RSA-4096):
  a 4096-bit key takes a second or more to generate in Python on a small
  machine, and tests generate several chains; 2048 bits is what the leaf has
  anyway, so the TLS handshake the walkthrough shows is unchanged.
- **CA keys are written unencrypted** (the book's are AES-256 with a
  password): nothing here signs more certificates later, so a passphrase would
  only be a prompt to get wrong. All keys are written with mode 0600.
- **subjectAltName is left out of the leaf by default, as in the book**, so
  clients match the host name against the Common Name. Checked on this
  project's platform (Debian 12: curl 7.88.1 / OpenSSL 3.0, Python 3.11): curl
  and Python's ``ssl.create_default_context(cafile=...)`` (whose
  ``hostname_checks_common_name`` is True) both accept the CN-only leaf, so the
  book's commands work unchanged. Clients that refuse CN-only certificates:
  Go >= 1.15, rustls, and ``service_identity`` -- that is, Twisted's own
  ``optionsForClientTLS`` ("Certificate does not contain any
  `subjectAltName`s"). For those, ``san=True`` (CLI ``--san``) adds
  ``DNS:<host>``; nothing the book shows changes.
- No ``index.txt``/``serial``/``newcerts``/``csr`` bookkeeping and no
  ``4_client`` directory: they belong to ``openssl ca``, and nothing in the
  walkthrough reads them.

Run ``python examples/istioinaction/certs.py --out DIR`` to write the two
walkthrough hosts' chains, or import :func:`generate`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

WALKTHROUGH_HOSTS = ("simple-sni-1.istioinaction.io", "simple-sni-2.istioinaction.io")

# The recipe's serial files start at 100212 (hex), so the first certificate
# each CA signs -- the intermediate, then the leaf -- carries 0x100212.
_FIRST_SERIAL = 0x100212

# Validity as in the recipe: root 20 years, intermediate 10, leaf 375 days.
_ROOT_DAYS = 7300
_INTERMEDIATE_DAYS = 3650
_LEAF_DAYS = 375
# Start an hour in the past so a client whose clock is a little behind ours
# does not see a "not yet valid" certificate.
_BACKDATE = datetime.timedelta(hours=1)

_KEY_BITS = 2048


class CertPaths(NamedTuple):
    """Where :func:`generate` wrote one host's chain (all absolute paths)."""

    base: Path
    root_cert: Path
    root_key: Path
    intermediate_cert: Path
    intermediate_key: Path
    ca_chain: Path
    leaf_cert: Path
    leaf_key: Path


def layout(
    base_dir: os.PathLike[str] | str, host: str, dir_name: Optional[str] = None
) -> CertPaths:
    """The paths the book uses for ``host`` under ``base_dir`` (nothing is written).

    The directory is named after the host's first label (``simple-sni-1`` for
    ``simple-sni-1.istioinaction.io``), as in the book, unless ``dir_name`` is given.
    """
    base = Path(base_dir).resolve() / (dir_name or host.split(".", 1)[0])
    return CertPaths(
        base=base,
        root_cert=base / "1_root" / "certs" / "ca.cert.pem",
        root_key=base / "1_root" / "private" / "ca.key.pem",
        intermediate_cert=base / "2_intermediate" / "certs" / "intermediate.cert.pem",
        intermediate_key=base / "2_intermediate" / "private" / "intermediate.key.pem",
        ca_chain=base / "2_intermediate" / "certs" / "ca-chain.cert.pem",
        leaf_cert=base / "3_application" / "certs" / f"{host}.cert.pem",
        leaf_key=base / "3_application" / "private" / f"{host}.key.pem",
    )


def generate(
    base_dir: os.PathLike[str] | str,
    host: str,
    *,
    san: bool = False,
    dir_name: Optional[str] = None,
    now: Optional[datetime.datetime] = None,
) -> CertPaths:
    """Write a fresh root, intermediate and server certificate for ``host``.

    Returns the paths (see :func:`layout`). Existing files are overwritten, so
    every run starts from a consistent chain.
    """
    paths = layout(base_dir, host, dir_name)
    start = (now or datetime.datetime.now(datetime.timezone.utc)) - _BACKDATE

    root_key = _new_key()
    root_name = _name(host, locality=True)
    root_cert = (
        _builder(root_name, root_name, root_key, x509.random_serial_number(), start, _ROOT_DAYS)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .sign(root_key, hashes.SHA256())
    )

    inter_key = _new_key()
    inter_name = _name(host, locality=False)
    inter_cert = (
        _builder(inter_name, root_name, inter_key, _FIRST_SERIAL, start, _INTERMEDIATE_DAYS)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .sign(root_key, hashes.SHA256())
    )

    leaf_key = _new_key()
    leaf = (
        _builder(_name(host, locality=True), inter_name, leaf_key, _FIRST_SERIAL, start, _LEAF_DAYS)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(inter_key.public_key()),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if san:
        leaf = leaf.add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
    leaf_cert = leaf.sign(inter_key, hashes.SHA256())

    _write(paths.root_key, _key_pem(root_key), private=True)
    _write(paths.root_cert, _cert_pem(root_cert))
    _write(paths.intermediate_key, _key_pem(inter_key), private=True)
    _write(paths.intermediate_cert, _cert_pem(inter_cert))
    _write(paths.ca_chain, _cert_pem(inter_cert) + _cert_pem(root_cert))
    _write(paths.leaf_key, _key_pem(leaf_key), private=True)
    _write(paths.leaf_cert, _cert_pem(leaf_cert))
    return paths


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)


def _name(host: str, *, locality: bool) -> x509.Name:
    """The recipe's subject; the intermediate's lacks ``L`` (openssl ca's policy drops it)."""
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Denial"),
    ]
    if locality:
        attrs.append(x509.NameAttribute(NameOID.LOCALITY_NAME, "Springfield"))
    attrs += [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Dis"),
        x509.NameAttribute(NameOID.COMMON_NAME, host),
    ]
    return x509.Name(attrs)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: rsa.RSAPrivateKey,
    serial: int,
    start: datetime.datetime,
    days: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    # "BEGIN RSA PRIVATE KEY", as `openssl genrsa` wrote it when the book was made.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        path.parent.chmod(0o700)
    # Create with the final mode so a key is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600 if private else 0o644)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "hosts",
        nargs="*",
        default=list(WALKTHROUGH_HOSTS),
        help="server host names (default: the walkthrough's two hosts)",
    )
    parser.add_argument(
        "--out",
        default=os.path.join("run", "istioinaction"),
        help="directory to write simple-sni-N/ into (default: ./run/istioinaction)",
    )
    parser.add_argument(
        "--san",
        action="store_true",
        help="add subjectAltName DNS:<host> to the leaf (the book's leaf is CN-only)",
    )
    args = parser.parse_args(argv)
    for host in args.hosts:
        paths = generate(args.out, host, san=args.san)
        print(f"{host}:")
        print(f"  CA chain (for curl --cacert): {paths.ca_chain}")
        print(f"  server certificate:           {paths.leaf_cert}")
        print(f"  server key:                   {paths.leaf_key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
