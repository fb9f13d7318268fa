"""The walkthrough's certificate generator writes the book's layout, and the chain verifies.

Checked with the same tools the book's reader uses: ``openssl verify -CAfile
ca-chain.cert.pem`` and ``openssl x509``, plus ``cryptography`` for the fields.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "istioinaction"
sys.path.insert(0, str(EXAMPLES))

import certs  # noqa: E402

HOST = "simple-sni-1.istioinaction.io"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> certs.CertPaths:
    return certs.generate(tmp_path_factory.mktemp("certs"), HOST)


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_layout_is_the_books(chain: certs.CertPaths) -> None:
    """Every file sits where the book's commands and create-kube-secrets.sh expect it."""
    base = chain.base
    assert base.name == "simple-sni-1"
    expected = {
        "1_root/certs/ca.cert.pem",
        "1_root/private/ca.key.pem",
        "2_intermediate/certs/intermediate.cert.pem",
        "2_intermediate/certs/ca-chain.cert.pem",
        "2_intermediate/private/intermediate.key.pem",
        f"3_application/certs/{HOST}.cert.pem",
        f"3_application/private/{HOST}.key.pem",
    }
    written = {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}
    assert written == expected
    assert chain.ca_chain == base / "2_intermediate" / "certs" / "ca-chain.cert.pem"


def test_private_keys_are_owner_only(chain: certs.CertPaths) -> None:
    """Keys are written 0600, never readable by other users even for a moment."""
    for key in (chain.root_key, chain.intermediate_key, chain.leaf_key):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_openssl_verifies_leaf_against_ca_chain(chain: certs.CertPaths) -> None:
    """The book's own check: ``openssl verify -CAfile ca-chain.cert.pem <leaf>`` says OK."""
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(chain.ca_chain), str(chain.leaf_cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{chain.leaf_cert}: OK"


def test_openssl_rejects_leaf_without_intermediate(chain: certs.CertPaths) -> None:
    """The leaf is signed by the intermediate, not the root: the root alone is not enough."""
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(chain.root_cert), str(chain.leaf_cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0


def test_ca_chain_is_intermediate_then_root(chain: certs.CertPaths) -> None:
    """ca-chain.cert.pem = intermediate.cert.pem + ca.cert.pem, in that order."""
    in_chain = x509.load_pem_x509_certificates(chain.ca_chain.read_bytes())
    assert in_chain == [_load(chain.intermediate_cert), _load(chain.root_cert)]


def test_subjects_and_issuers(chain: certs.CertPaths) -> None:
    """The recipe's names: CN = host everywhere; the intermediate has no L; issuers chain up."""
    root, inter, leaf = (
        _load(chain.root_cert),
        _load(chain.intermediate_cert),
        _load(chain.leaf_cert),
    )
    assert root.subject.rfc4514_string() == f"CN={HOST},O=Dis,L=Springfield,ST=Denial,C=US"
    assert root.issuer == root.subject
    assert inter.subject.rfc4514_string() == f"CN={HOST},O=Dis,ST=Denial,C=US"
    assert inter.issuer == root.subject
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == HOST
    assert leaf.issuer == inter.subject
    assert leaf.serial_number == 0x100212


def test_ca_extensions(chain: certs.CertPaths) -> None:
    """Root CA:TRUE; intermediate CA:TRUE pathlen:0; both may sign certificates."""
    root, inter = _load(chain.root_cert), _load(chain.intermediate_cert)
    root_bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert root_bc.critical and root_bc.value.ca and root_bc.value.path_length is None
    inter_bc = inter.extensions.get_extension_for_class(x509.BasicConstraints)
    assert inter_bc.critical and inter_bc.value.ca and inter_bc.value.path_length == 0
    for cert in (root, inter):
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign and usage.crl_sign


def test_leaf_is_a_server_certificate(chain: certs.CertPaths) -> None:
    """Leaf: not a CA, EKU serverAuth only, and -- as in the book -- no subjectAltName."""
    leaf = _load(chain.leaf_cert)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(chain.leaf_cert)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "TLS Web Server Authentication" in text
    assert "Public-Key: (2048 bit)" in text


def test_san_option_adds_dns_name(tmp_path: Path) -> None:
    """``san=True`` gives the leaf DNS:<host> for clients that refuse CN-only certificates."""
    paths = certs.generate(tmp_path, HOST, san=True)
    san = _load(paths.leaf_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [HOST]


def test_keys_match_certificates(chain: certs.CertPaths) -> None:
    """Each private key is the one whose public half its certificate carries (RSA-2048)."""
    for key_path, cert_path in (
        (chain.root_key, chain.root_cert),
        (chain.intermediate_key, chain.intermediate_cert),
        (chain.leaf_key, chain.leaf_cert),
    ):
        key = load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.key_size == 2048
        cert = _load(cert_path)
        public = cert.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        assert public.public_numbers() == key.public_key().public_numbers()
    # and the leaf's signature is the intermediate's
    leaf, inter = _load(chain.leaf_cert), _load(chain.intermediate_cert)
    inter_public = inter.public_key()
    assert isinstance(inter_public, rsa.RSAPublicKey)
    assert leaf.signature_hash_algorithm is not None
    inter_public.verify(
        leaf.signature,
        leaf.tbs_certificate_bytes,
        padding.PKCS1v15(),
        leaf.signature_hash_algorithm,
    )


def test_regenerating_replaces_the_chain(tmp_path: Path) -> None:
    """A second run writes a new, self-consistent chain over the old one."""
    first = certs.generate(tmp_path, HOST)
    old_root = first.root_cert.read_bytes()
    second = certs.generate(tmp_path, HOST)
    assert second.root_cert.read_bytes() != old_root
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(second.ca_chain), str(second.leaf_cert)],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0


def test_cli_writes_both_walkthrough_hosts(tmp_path: Path) -> None:
    """``python certs.py --out DIR`` writes simple-sni-1/ and simple-sni-2/ and prints the paths."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "certs.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    for n in (1, 2):
        host = f"simple-sni-{n}.istioinaction.io"
        paths = certs.layout(tmp_path, host)
        assert paths.leaf_cert.is_file()
        assert str(paths.ca_chain) in result.stdout
        assert (
            _load(paths.leaf_cert).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            == host
        )
