"""
A real MariaDB server for capturing MySQL-protocol samples: a fresh data
directory, TLS on (a test CA's certificate), user ``tsgate`` /
``tsgate-secret`` and a database ``shop`` with a ``whoami`` table.

Needs Debian's ``mariadb-server`` (``mariadb-install-db``, ``mariadbd``) and
``cryptography``. The server runs as the ``mysql`` user the package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import attrs

from tests.support.postgres import CertificateAuthority

USER = "tsgate"
PASSWORD = "tsgate-secret"


@attrs.define
class MariaDBHandle:
    port: int
    root: Path
    process: subprocess.Popen  # type: ignore[type-arg]
    ca_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_mariadb(tmpdir: Path, port: int, name: str = "db1") -> MariaDBHandle:
    mysql = pwd.getpwnam("mysql")
    root = Path(tempfile.mkdtemp(prefix="tsgate-mariadb-", dir="/tmp"))
    data = root / "data"
    # Everything mariadbd reads lives in ``root``, which the mysql user owns
    # (pytest's tmp_path is private to root); ``tmpdir`` gets a copy of the CA.
    ca = CertificateAuthority.create(root)
    shutil.copy(ca.path, Path(tmpdir) / "mariadb-ca.crt")
    ca.issue("127.0.0.1", root / "server.crt", root / "server.key")
    for path in (root, ca.path, root / "server.crt", root / "server.key"):
        os.chown(path, mysql.pw_uid, mysql.pw_gid)
    subprocess.run(
        ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=mysql",
         "--auth-root-authentication-method=normal", "--skip-test-db"],
        check=True, capture_output=True, timeout=120,
    )
    process = subprocess.Popen(
        ["mariadbd", "--no-defaults", f"--datadir={data}", "--user=mysql",
         "--bind-address=127.0.0.1", f"--port={port}", f"--socket={root}/mysqld.sock",
         f"--pid-file={root}/mysqld.pid", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
         f"--ssl-ca={ca.path}", f"--ssl-cert={root}/server.crt", f"--ssl-key={root}/server.key",
         f"--log-error={root}/error.log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    handle = MariaDBHandle(
        port=port, root=root, process=process, ca_path=Path(tmpdir) / "mariadb-ca.crt"
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                log = (root / "error.log").read_text() if (root / "error.log").exists() else ""
                handle.stop()
                raise RuntimeError(f"mariadbd did not start:\n{log}") from None
            time.sleep(0.2)
    sql = (
        f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';"
        "CREATE DATABASE shop; CREATE TABLE shop.whoami (name varchar(32));"
        f"INSERT INTO shop.whoami VALUES ('{name}');"
        f"GRANT ALL ON shop.* TO '{USER}'@'%'; GRANT SELECT ON mysql.* TO '{USER}'@'%';"
    )
    subprocess.run(
        ["mariadb", "--no-defaults", f"--socket={root}/mysqld.sock", "-u", "root", "-e", sql],
        check=True, capture_output=True, timeout=30,
    )
    return handle
