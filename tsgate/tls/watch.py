"""
Certificate rotation: poll the files the running configuration's TLS
settings were read from; when any changes (rewritten, replaced, or a
Kubernetes Secret volume's ``..data`` symlink swapped), reload.

A reload builds new contexts for new handshakes; connections already
accepted keep the listener, and so the context, they started with. A reload
whose certificates are bad (unreadable, a key that does not match) is
rejected like any bad configuration: the running certificates stay.

Also keeps Envoy's ``server.days_until_first_cert_expiring`` gauge current.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from tsgate.tls import credentials as C

log = Logger(namespace="tsgate.tls")

EXPIRY_GAUGE = "server.days_until_first_cert_expiring"


def table_terminations(table: Any) -> Iterator[Any]:
    """Every chain's TLS termination, in route order."""
    for entry in table.routes():
        if entry.termination is not None:
            yield entry.termination


def table_originations(table: Any) -> Iterator[Any]:
    """Every cluster's TLS origination, once per cluster, in order of first use."""
    for cluster in table.clusters():
        if cluster.tls is not None:
            yield cluster.tls


def table_tls_files(table: Any) -> list[str]:
    files: list[str] = []
    for item in list(table_terminations(table)) + list(table_originations(table)):
        files.extend(f for f in item.files if f not in files)
    return files


def first_expiry_days(table: Any) -> float:
    """Days until the first served or client certificate expires (0 if none)."""
    days = [t.days_until_expiry for t in table_terminations(table)]
    for o in table_originations(table):
        days.extend(c["days_until_expiry"] for c in o.certificates)
    return max(0.0, min(days)) if days else 0.0


class CertificateWatcher:
    """Calls ``gateway.reload()`` when the running table's certificate files change."""

    def __init__(self, clock: Any, gateway: Any, interval: float = 2.0) -> None:
        self.gateway = gateway
        self.interval = interval
        self.fingerprint = self._current()
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self._update_gauge()

    def _table(self) -> Any:
        return self.gateway.table

    def _current(self) -> C.Fingerprint:
        return C.files_fingerprint(table_tls_files(self._table()))

    def _update_gauge(self) -> None:
        self.gateway.stats.gauge_set(EXPIRY_GAUGE, first_expiry_days(self._table()))

    def start(self) -> None:
        if self.interval and self.interval > 0:
            self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        current = self._current()
        if current != self.fingerprint:
            log.info("TLS certificate files changed; reloading")
            self.gateway.stats.inc("ssl.certificate_files_changed")
            self.gateway.reload()
            # What is running now: new files after a good reload, else the same
            # (changed) files, which are not reloaded again until they change again.
            self.fingerprint = self._current()
        self._update_gauge()
