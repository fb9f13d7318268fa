"""
A real PostgreSQL server (the installed version) for tests: TLS on, a server certificate for a
chosen host name signed by a throw-away test CA, and a table telling which
server answered (``SELECT name FROM whoami`` returns the server's name).

    handle = start_postgres(tmp_path, port, "pg1.example.test", name="pg1")
    ... psql "host=pg1.example.test hostaddr=127.0.0.1 port=... sslmode=verify-full
              sslrootcert={handle.ca_path} user=postgres dbname=postgres"
    handle.stop()

PostgreSQL refuses to run as root, so the cluster is created and run as the
``postgres`` user (``runuser``) in a directory under ``/tmp`` that user can
reach (pytest's ``tmp_path`` is private to root); certificates and the CA
go in ``tmpdir``. Authentication: ``trust`` on loopback for everyone but
``scram_user`` (password ``scram-secret``), which must use SCRAM, so
captures include the password exchange. Needs the Debian ``postgresql``
package and ``cryptography``. The server binaries are found, not assumed:
``$TSGATE_PG_BIN``, else the newest ``/usr/lib/postgresql/<version>/bin``,
else ``pg_config --bindir``, else ``initdb`` on ``PATH`` (see :func:`find_pg_bin`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import attrs


def _version_key(bindir: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> (15,); 9.6 -> (9, 6)."""
    return tuple(int(part) for part in bindir.parent.name.split(".") if part.isdigit())


def find_pg_bin() -> Path:
    """
    The directory of the installed server's ``initdb``/``pg_ctl``/``postgres``:
    ``$TSGATE_PG_BIN``; else the newest Debian ``/usr/lib/postgresql/<N>/bin``
    that has ``initdb``; else ``pg_config --bindir``; else where ``initdb`` is on
    ``PATH``. Raises RuntimeError naming where it looked.
    """
    explicit = os.environ.get("TSGATE_PG_BIN")
    if explicit:
        return Path(explicit)
    debian = sorted((p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
                    key=_version_key)
    if debian:
        return debian[-1]
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                check=False).stdout.strip()
        if bindir and (Path(bindir) / "initdb").exists():
            return Path(bindir)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("no PostgreSQL server found: set TSGATE_PG_BIN, or install the "
                       "postgresql package (looked in /usr/lib/postgresql/*/bin, "
                       "pg_config --bindir and PATH)")


class _PgBin:
    """``PG_BIN / "initdb"``, with the directory found on first use (not at import)."""

    def __truediv__(self, name: str) -> Path:
        return find_pg_bin() / name

    def __fspath__(self) -> str:
        return str(find_pg_bin())


PG_BIN = _PgBin()
PG_USER = "postgres"
SCRAM_USER = "scram_user"
SCRAM_PASSWORD = "scram-secret"


def _run_as_postgres(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", PG_USER, "--", *argv],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@attrs.define
class CertificateAuthority:
    """A CA key and certificate that sign server certificates for tests."""

    key: object
    cert: object
    path: Path

    @classmethod
    def create(cls, directory: Path, common_name: str = "tsgate test CA") -> CertificateAuthority:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        path = Path(directory) / "ca.crt"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key=key, cert=cert, path=path)

    def issue(self, host: str, cert_path: Path, key_path: Path) -> None:
        """A server certificate for ``host`` (and 127.0.0.1) as PEM files."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.cert.subject)  # type: ignore[attr-defined]
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(self.key, hashes.SHA256())  # type: ignore[arg-type]
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )


@attrs.define
class PostgresHandle:
    """A running server; ``stop()`` shuts it down and removes its data."""

    name: str
    port: int
    cert_host: str
    ca_path: Path
    datadir: Path
    _stopped: bool = False

    def dsn(self, **params: str) -> str:
        """A libpq connection string to this server on 127.0.0.1 (no TLS by default)."""
        base = {"host": "127.0.0.1", "port": str(self.port), "user": PG_USER, "dbname": "postgres"}
        base.update(params)
        return " ".join(f"{k}={v}" for k, v in base.items())

    def psql(self, sql: str, dsn: Optional[str] = None) -> str:
        """Run ``sql`` with ``psql`` (unaligned, tuples only) and return stdout."""
        out = subprocess.run(
            ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", dsn or self.dsn(), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            _run_as_postgres(
                str(PG_BIN / "pg_ctl"), "-D", str(self.datadir / "data"), "-m", "immediate",
                "-w", "stop",
            )
        finally:
            shutil.rmtree(self.datadir, ignore_errors=True)


def start_postgres(
    tmpdir: Path,
    port: int,
    cert_host: str,
    name: Optional[str] = None,
    ca: Optional[CertificateAuthority] = None,
    tls: bool = True,
) -> PostgresHandle:
    """
    Start a TLS-enabled PostgreSQL (the installed version) on 127.0.0.1:``port`` whose certificate
    names ``cert_host``, signed by ``ca`` (a new :class:`CertificateAuthority` in
    ``tmpdir`` if not given; share one CA between servers so one
    ``sslrootcert`` verifies both). ``name`` (default: the first label of
    ``cert_host``) is what ``SELECT name FROM whoami`` returns. With
    ``tls=False`` the server runs with ``ssl = off`` and answers an
    SSLRequest with ``N``.
    """
    tmpdir = Path(tmpdir)
    name = name or cert_host.split(".")[0]
    ca = ca or CertificateAuthority.create(tmpdir)
    pg = pwd.getpwnam(PG_USER)
    root = Path(tempfile.mkdtemp(prefix=f"tsgate-{name}-", dir="/tmp"))
    os.chown(root, pg.pw_uid, pg.pw_gid)
    data = root / "data"
    try:
        _run_as_postgres(
            str(PG_BIN / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust",
            "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C",
        )
        ca.issue(cert_host, data / "server.crt", data / "server.key")
        for f in ("server.crt", "server.key"):
            os.chown(data / f, pg.pw_uid, pg.pw_gid)
            os.chmod(data / f, 0o600)
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
                f"unix_socket_directories = '{root}'\n"
                f"ssl = {'on' if tls else 'off'}\n"
                "ssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 20\nshared_buffers = 16MB\n"
            )
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {SCRAM_USER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
        )
        _run_as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
            "-t", "60", "start",
        )
    except Exception:
        log = root / "server.log"
        detail = log.read_text() if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL {name} did not start on port {port}\n{detail}") from None
    handle = PostgresHandle(
        name=name, port=port, cert_host=cert_host, ca_path=ca.path, datadir=root
    )
    try:
        handle.psql(
            f"CREATE TABLE whoami (name text); INSERT INTO whoami VALUES ('{name}');"
            f"CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{SCRAM_PASSWORD}';"
            f"GRANT SELECT ON whoami TO {SCRAM_USER};"
        )
    except Exception:
        handle.stop()
        raise
    return handle
