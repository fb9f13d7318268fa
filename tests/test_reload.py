"""tsgate.reload: the config fingerprint and the polling watcher (on a fake clock)."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.task import Clock

from tsgate.reload import ConfigWatcher, config_fingerprint


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def test_fingerprint_changes_with_content_size_mtime_and_listing(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    _write(a, "kind: Gateway\n")
    first = config_fingerprint([str(tmp_path)])
    assert [entry[0] for entry in first] == [str(a)]
    assert config_fingerprint([str(tmp_path)]) == first  # stable when nothing changed

    _write(a, "kind: Gateway\n# more\n")
    grown = config_fingerprint([str(tmp_path)])
    assert grown != first

    os.utime(a, ns=(1, 1))
    assert config_fingerprint([str(tmp_path)]) != grown

    _write(tmp_path / "b.yaml", "kind: ServiceEntry\n")
    assert len(config_fingerprint([str(tmp_path)])) == 2


def test_fingerprint_follows_a_configmap_style_symlink_swap(tmp_path: Path) -> None:
    """Kubernetes swaps ``..data``: same names, new real paths, a change."""
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        _write(tmp_path / version / "gw.yaml", "kind: Gateway\n")  # same size, same text
        os.utime(tmp_path / version / "gw.yaml", ns=(10, 10))  # same mtime
    os.symlink("v1", tmp_path / "..data")
    os.symlink("..data/gw.yaml", tmp_path / "gw.yaml")
    before = config_fingerprint([str(tmp_path / "gw.yaml")])
    os.symlink("v2", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    after = config_fingerprint([str(tmp_path / "gw.yaml")])
    assert before != after
    assert after[0][1] == str(tmp_path / "v2" / "gw.yaml")


def test_fingerprint_of_a_missing_path_is_empty_not_an_error(tmp_path: Path) -> None:
    """The loader reports the missing file; the watcher sees it appear."""
    gone = tmp_path / "gone.yaml"
    assert config_fingerprint([str(gone)]) == ()
    _write(gone, "kind: Gateway\n")
    assert [entry[0] for entry in config_fingerprint([str(gone)])] == [str(gone)]


def test_watcher_calls_on_change_once_per_change(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    _write(path, "a: 1\n")
    clock = Clock()
    changes: list[int] = []
    watcher = ConfigWatcher(clock, [str(path)], lambda: changes.append(1), interval=2.0)
    watcher.start()
    clock.advance(2.0)
    assert changes == []
    _write(path, "a: 12\n")
    clock.advance(1.9)
    assert changes == []  # not before the next tick
    clock.advance(0.1)
    assert changes == [1]
    clock.advance(10.0)
    assert changes == [1]  # the same files again: no second call
    watcher.stop()
    _write(path, "a: 123\n")
    clock.advance(10.0)
    assert changes == [1]
    watcher.stop()  # stopping twice is harmless


def test_watcher_with_interval_zero_never_polls(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    _write(path, "a: 1\n")
    clock = Clock()
    changes: list[int] = []
    watcher = ConfigWatcher(clock, [str(path)], lambda: changes.append(1), interval=0)
    watcher.start()
    _write(path, "a: 12\n")
    clock.advance(100.0)
    assert changes == [] and not clock.getDelayedCalls()
    watcher.check()  # SIGHUP-style explicit check still works
    assert changes == [1]
