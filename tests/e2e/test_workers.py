"""
``--workers 2``: a supervisor and two worker processes behind one set of
ports, seen from outside as a user sees them: real sockets, real signals,
the supervisor's admin server and readiness endpoint.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_reload_drain import Tagged, tagged_config, wait_log
from tests.support.backends import ThreadedServer
from tests.support.gateway import GatewayProcess, free_port
from tests.support.streams import EchoStreams, recv_until

pytestmark = pytest.mark.e2e


def get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.load(r)


def get_text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return str(r.read().decode())


def prom_sum(text: str, metric: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric + "{") or line.startswith(metric + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_until(check: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout}s (last: {last!r})")


def workers_ready(admin: int, count: int) -> bool:
    """The supervisor's /workers lists ``count`` workers, all ready."""
    try:
        ws = get_json(admin, "/workers")["workers"]
    except OSError:
        return False
    return len(ws) == count and all(w["ready"] for w in ws)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def echo_once(port: int, payload: bytes, expect_tag: bytes = b"A") -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert recv_until(s, b"\n") == expect_tag + b"\n"
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            assert chunk, "cut"
            got += chunk
        assert got == payload


class Workers:
    """A gateway with two workers, its admin port and a tagged echo backend."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.server = ThreadedServer(Tagged(b"A"))
        self.config = tmp_path / "gateway.yaml"
        tagged_config(self.config, self.server.port)
        self.admin = free_port()
        self.readiness = free_port()
        self.access_log = tmp_path / "access.log"
        self.gw = GatewayProcess(
            [str(self.config)], ports=[7500], access_log=self.access_log,
            extra=["--workers", "2", "--watch-interval", "0",
                   "--admin", f"tcp:{self.admin}:interface=127.0.0.1",
                   "--readiness", f"tcp:{self.readiness}:interface=127.0.0.1", *extra])
        self.port = self.gw.port(7500)
        wait_until(lambda: self.ready(), what="both workers ready")

    def ready(self) -> bool:
        try:
            return urllib.request.urlopen(
                f"http://127.0.0.1:{self.readiness}/healthz/ready", timeout=5).status == 200
        except (urllib.error.URLError, OSError):
            return False

    def workers(self) -> list[dict[str, Any]]:
        return list(get_json(self.admin, "/workers")["workers"])

    def close(self) -> None:
        self.gw.stop()
        self.server.close()


@pytest.fixture
def workers(tmp_path: Path) -> Any:
    w = Workers(tmp_path)
    yield w
    w.close()


def test_two_workers_share_the_port_and_metrics_add_up(workers: Workers) -> None:
    """Connections reach both worker processes; the supervisor's metrics count every one."""
    assert len(workers.workers()) == 2
    pids = {w["pid"] for w in workers.workers()}
    assert len(pids) == 2 and os.getpid() not in pids
    assert "Traceback" not in workers.gw.text()
    assert re.search(r"tsgate \S+ started: .* listener\(s\) \(127\.0\.0\.1:\d+\)",
                     workers.gw.text())
    count, threads = 200, 10

    def client(n: int) -> None:
        for i in range(count // threads):
            echo_once(workers.port, f"{n}-{i}|".encode() * 20)

    ts = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)

    def counted() -> Any:
        text = get_text(workers.admin, "/stats/prometheus")
        return prom_sum(text, "istio_tcp_connections_closed_total") == count and text

    text = wait_until(counted, what=f"{count} closed connections in the merged metrics")
    assert prom_sum(text, "istio_tcp_connections_opened_total") == count
    per_worker = [sum(v for k, v in w["counters"].items() if k.endswith("downstream_cx_total"))
                  for w in workers.workers()]
    assert sum(per_worker) == count
    assert all(n > 0 for n in per_worker), f"both workers accept: {per_worker}"
    # one whole access-log line per connection, never two interleaved
    lines = workers.gw.wait_access_lines(count)
    assert len(lines) == count
    for line in lines:
        assert line.startswith("[") and line.count('"- - -"') == 1
        assert line.rstrip().endswith("tcp->default/vs#tcp[0]")


def test_connections_endpoint_lists_every_workers_connections(workers: Workers) -> None:
    socks = []
    try:
        for _ in range(24):
            s = socket.create_connection(("127.0.0.1", workers.port), timeout=10)
            assert recv_until(s, b"\n") == b"A\n"
            socks.append(s)
        view = wait_until(lambda: (v := get_json(workers.admin, "/connections"))["total"] == 24
                          and v, what="24 live connections listed")
        by_worker = {c["worker"] for c in view["connections"]}
        assert by_worker == {1, 2}
        locals_ = {s.getsockname()[1] for s in socks}
        listed = {int(c["downstream"].rsplit(":", 1)[1]) for c in view["connections"]}
        assert listed == locals_
        # /workers is pushed by each worker every 0.5 s
        wait_until(lambda: sum(w["active_connections"] for w in workers.workers()) == 24,
                   what="24 active connections in /workers")
    finally:
        for s in socks:
            s.close()


def test_killed_worker_is_replaced_while_connections_keep_succeeding(workers: Workers) -> None:
    """
    SIGKILL one worker: a new one within 2 s, the other worker untouched, and
    every connection started after the kill succeeds (those the kernel hashes
    to the dead worker's socket wait there for its replacement instead of
    being reset). Only connections the dead worker itself held may be lost.
    """
    before = workers.workers()
    victim = before[0]
    stop = threading.Event()
    failures: list[tuple[float, str]] = []
    done = [0]
    killed_at = [float("inf")]

    def keep_connecting() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                echo_once(workers.port, b"ping\n")
                done[0] += 1
            except (OSError, AssertionError) as exc:
                failures.append((started, repr(exc)))

    threads = [threading.Thread(target=keep_connecting) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at[0] = time.monotonic()

        def replaced(ready: bool) -> Any:
            now = {w["id"]: w for w in workers.workers()}
            w = now.get(victim["id"])
            return (w is not None and w["pid"] != victim["pid"] and (w["ready"] or not ready)
                    and w)

        wait_until(lambda: replaced(False), timeout=2.0, what="a new worker within 2 s")
        assert time.monotonic() - killed_at[0] <= 2.0
        # Accepting once it has loaded (about 1 s on a quiet machine of this kind).
        wait_until(lambda: replaced(True), timeout=20.0, what="the new worker ready")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    after_kill = [f for f in failures if f[0] > killed_at[0]]
    assert after_kill == [], "connections started after the kill all succeed"
    assert len(failures) <= 4, "at most the dead worker's own connections are lost"
    assert done[0] > 0
    assert not pid_alive(victim["pid"])
    other = [w for w in before if w["id"] != victim["id"]][0]
    assert pid_alive(other["pid"]), "the other worker was not touched"
    stats = get_text(workers.admin, "/stats")
    assert "workers.restarted: 1" in stats


def test_reload_under_load_switches_every_worker(tmp_path: Path) -> None:
    """SIGHUP to the supervisor: every worker switches tables, no stream is cut."""
    w = Workers(tmp_path)
    servers = {b"A": w.server, b"B": ThreadedServer(Tagged(b"B"))}
    streams = EchoStreams(w.port, 40, b"A")
    try:
        streams.start()
        time.sleep(0.5)
        current = b"A"
        for reload in range(1, 5):
            current = b"B" if current == b"A" else b"A"
            tagged_config(w.config, servers[current].port)
            w.gw.signal(signal.SIGHUP)
            wait_log(w.gw, "configuration reloaded", reload)
            for _ in range(10):  # both workers: each new connection is on the new table
                with socket.create_connection(("127.0.0.1", w.port), timeout=10) as s:
                    assert recv_until(s, b"\n") == current + b"\n", f"reload {reload}"
        streams.stop()
        assert streams.failures == []
        assert all(streams.moved)
        # a reload is counted once, not once per worker
        assert "config.reload_success: 4" in get_text(w.admin, "/stats")
    finally:
        streams.stop()
        w.close()
        servers[b"B"].close()


def test_sigterm_drains_every_worker_then_exits_zero(tmp_path: Path) -> None:
    w = Workers(tmp_path, "--drain-period", "2")
    try:
        pids = [x["pid"] for x in w.workers()]
        held = []
        for _ in range(6):
            s = socket.create_connection(("127.0.0.1", w.port), timeout=10)
            assert recv_until(s, b"\n") == b"A\n"
            held.append(s)
        started = time.monotonic()
        w.gw.signal(signal.SIGTERM)
        wait_until(lambda: not w.ready(), what="readiness fails while draining")
        for s in held:  # open connections keep working during the drain period
            s.sendall(b"during drain\n")
            assert recv_until(s, b"\n") == b"during drain\n"
        assert w.gw.process.wait(20) == 0
        assert time.monotonic() - started >= 1.9
        for s in held:
            assert s.recv(10) == b""
            s.close()
        for pid in pids:
            assert not pid_alive(pid)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", w.port), timeout=2).close()
    finally:
        w.close()


def test_config_errors_are_reported_once_and_nothing_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.istio.io/v1\nkind: Gateway\n"
                   "metadata: {name: gw}\nspec:\n  servers: [{port: 7}]\n")
    import subprocess

    from tests.support.gateway import twistd

    out = subprocess.run([twistd(), "-n", "--pidfile=", "tsgate", "--config", str(bad),
                          "--workers", "2", "--admin", "none", "--readiness", "none"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    assert text.count("error(s); not starting") == 1
    assert "worker 1 started" not in text


def test_reload_that_adds_a_port_starts_a_new_generation(tmp_path: Path) -> None:
    """A reload that changes the listening sockets: new workers, the old ones finish."""
    w = Workers(tmp_path, "--bind", "127.0.0.1")
    try:
        old = socket.create_connection(("127.0.0.1", w.port), timeout=10)
        assert recv_until(old, b"\n") == b"A\n"
        first = {x["pid"] for x in w.workers()}
        new_port = free_port()
        text = w.config.read_text().replace("number: 7500", f"number: {new_port}")
        w.config.write_text(text)
        w.gw.signal(signal.SIGHUP)
        wait_log(w.gw, "configuration reloaded", 1)
        echo_once(new_port, b"on the new port\n")
        old.sendall(b"old connection\n")
        assert recv_until(old, b"\n") == b"old connection\n"
        current = [x for x in w.workers() if not x["retiring"]]
        assert len(current) == 2 and not ({x["pid"] for x in current} & first)
        old.close()
        # the old generation exits once its last connection is gone
        wait_until(lambda: not any(pid_alive(p) for p in first), what="old workers exit")
    finally:
        w.close()


def test_workers_auto_is_the_usable_cores() -> None:
    from tsgate.workers.supervisor import parse_workers, usable_cores

    assert parse_workers("auto") == usable_cores() >= 1
    assert usable_cores() <= len(os.sched_getaffinity(0))


def test_status_page_shows_each_worker_and_the_total(workers: Workers) -> None:
    """The real status page of a --workers 2 gateway, in headless Chromium."""
    from tests.admin.test_status_page import run_chromium

    socks = []
    try:
        for _ in range(6):
            s = socket.create_connection(("127.0.0.1", workers.port), timeout=10)
            assert recv_until(s, b"\n") == b"A\n"
            socks.append(s)
        wait_until(lambda: sum(w["active_connections"] for w in workers.workers()) == 6,
                   what="6 live connections pushed by the workers")
        out = run_chromium(f"http://127.0.0.1:{workers.admin}/", "--dump-dom")
        dom = out.stdout
        rows = re.findall(r'<tr class="worker">(.*?)</tr>', dom)
        assert len(rows) == 2, dom
        pids = {w["pid"] for w in workers.workers()}
        for r in rows:
            cells = re.findall(r"<td[^>]*>(.*?)</td>", r)
            assert int(cells[1]) in pids and cells[3] == "ready"
        total = re.search(r'<tr class="worker-total">(.*?)</tr>', dom)
        assert total and "2 workers" in total.group(1)
        assert re.findall(r"<td[^>]*>(.*?)</td>", total.group(1))[4] == "6"
        assert 'id="total-connections">6<' in dom
    finally:
        for s in socks:
            s.close()


def test_tac_file_with_workers(tmp_path: Path) -> None:
    """``TSGATE_ARGS="--workers 2" twistd -ny tac/tsgate.tac``: the same supervisor."""
    import subprocess

    from tests.support.gateway import twistd

    server = ThreadedServer(Tagged(b"A"))
    config = tmp_path / "gateway.yaml"
    tagged_config(config, server.port)
    port, admin = free_port(), free_port()
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TSGATE_CONFIG": str(config),
           "TSGATE_ARGS": f"--endpoint 7500=tcp:{port}:interface=127.0.0.1 --workers 2 "
                          f"--admin tcp:{admin}:interface=127.0.0.1 --readiness none"}
    process = subprocess.Popen([twistd(), "-ny", str(root / "tac" / "tsgate.tac"), "--pidfile="],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               cwd=tmp_path)
    try:
        wait_until(lambda: workers_ready(admin, 2), timeout=30,
                   what="two workers from the .tac file")
        for _ in range(10):
            echo_once(port, b"tac\n")
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
        server.close()
    assert process.returncode == 0, out


def test_systemd_socket_activation_with_workers(tmp_path: Path) -> None:
    """
    A socket handed over by systemd (fd 3, LISTEN_FDS, LISTEN_PID) to a
    supervisor: it cannot be re-bound per worker, so both workers accept on it.
    """
    import subprocess

    from tests.support.gateway import twistd

    server = ThreadedServer(Tagged(b"A"))
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(64)
    port = listening.getsockname()[1]
    admin = free_port()
    config = tmp_path / "gateway.yaml"
    tagged_config(config, server.port)
    fd = listening.fileno()
    move = "" if fd == 3 else f"exec 3<&{fd} {fd}<&-; "
    script = (f'{move}export LISTEN_FDS=1 LISTEN_FDNAMES=tsgate LISTEN_PID=$$; '
              f'exec {twistd()} --nodaemon --pidfile= tsgate --config {config} '
              '--endpoint 7500=systemd:domain=INET:index=0 --workers 2 '
              f'--admin tcp:{admin}:interface=127.0.0.1 --readiness none')
    process = subprocess.Popen(["bash", "-c", script], pass_fds=(fd,),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        listening.close()

        wait_until(lambda: workers_ready(admin, 2), timeout=30,
                   what="two workers on the activated socket")
        for _ in range(20):
            echo_once(port, b"activated\n")
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
        server.close()
    assert b"one socket shared by the workers" in out, out
    assert process.returncode == 0, out


def test_post_reload_and_file_watch_reach_every_worker(tmp_path: Path) -> None:
    """POST /reload on the supervisor's admin, and a watched file change, switch both workers."""
    w = Workers(tmp_path)
    other = ThreadedServer(Tagged(b"B"))
    try:
        tagged_config(w.config, other.port)
        request = urllib.request.Request(f"http://127.0.0.1:{w.admin}/reload", method="POST",
                                         data=b"")
        with urllib.request.urlopen(request, timeout=20) as r:
            assert json.load(r)["ok"] is True
        wait_log(w.gw, "configuration reloaded", 1)
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", w.port), timeout=10) as s:
                assert recv_until(s, b"\n") == b"B\n"
    finally:
        w.close()
    # the supervisor watches the files (its workers do not)
    (tmp_path / "watched").mkdir()
    w = Workers(tmp_path / "watched", "--watch-interval", "0.2")
    try:
        tagged_config(w.config, other.port)
        wait_log(w.gw, "configuration reloaded", 1)
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", w.port), timeout=10) as s:
                assert recv_until(s, b"\n") == b"B\n"
        assert w.gw.text().count("configuration reloaded") == 1
    finally:
        w.close()
        other.close()
