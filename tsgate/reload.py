"""
Noticing configuration changes: SIGHUP, and polling the config paths.

Polling (not inotify) because it sees every way a file can change, including
the way Kubernetes updates a ConfigMap volume: it writes a new timestamped
folder and swaps the ``..data`` symlink atomically, so the files' real paths
change while their names do not. The fingerprint is therefore taken over the
*resolved* paths, sizes and modification times of the files the loader would
read, plus the listing itself (a file added or removed is a change).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Callable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from tsgate.config.loader import expand_paths

log = Logger(namespace="tsgate.reload")

Fingerprint = tuple[tuple[str, str, int, int], ...]


def config_fingerprint(paths: Sequence[str]) -> Fingerprint:
    files, _ = expand_paths(paths)
    entries = []
    for file in files:
        try:
            real = os.path.realpath(file)
            st = os.stat(real)
            entries.append((file, real, st.st_mtime_ns, st.st_size))
        except OSError:
            entries.append((file, "", 0, -1))
    return tuple(entries)


class ConfigWatcher:
    """Calls ``on_change()`` when the fingerprint of ``paths`` changes."""

    def __init__(self, clock: Any, paths: Sequence[str], on_change: Callable[[], Any],
                 interval: float = 2.0) -> None:
        self.paths = list(paths)
        self.on_change = on_change
        self.interval = interval
        self.fingerprint = config_fingerprint(self.paths)
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock

    def start(self) -> None:
        if self.interval > 0:
            self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        current = config_fingerprint(self.paths)
        if current != self.fingerprint:
            self.fingerprint = current
            log.info("configuration files changed; reloading")
            self.on_change()
