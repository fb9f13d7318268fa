"""
The status page rendered by a real headless Chromium against the real admin
site: the tables it shows are filled in by app.js from the JSON endpoints,
so finding the counts in the dumped DOM proves the page works end to end.
A screenshot is saved to artifacts/status.png for a human to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tsgate.admin.server import make_admin_site

from .fakes import SNI1_ROUTE, SPLIT_ROUTE, TCP_ROUTE, busy_gateway
from .http_client import close, listen

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

pytestmark = pytest.mark.e2e


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("no chromium on PATH: apt-get install chromium (see .ci/run)")


def run_chromium(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run, bounded in time, with a throwaway profile."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
            "--virtual-time-budget=5000", *extra, url,
        ]
        env = {**os.environ, "HOME": profile}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env)


@pytest.fixture
def gateway():
    return busy_gateway()


@pytest.fixture
def admin(gateway):
    port = listen(make_admin_site(gateway, now=lambda: gateway.now))
    yield port
    pytest_twisted.blockon(close(port))


@pytest_twisted.inlineCallbacks
def test_status_page_in_headless_chromium(admin, gateway):
    """Listeners, routes, per-route live connections and errors appear in the rendered page."""
    url = f"http://127.0.0.1:{admin.getHost().port}/"
    result = yield deferToThread(run_chromium, url, "--dump-dom")
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'id="total-connections">11<' in dom
    assert 'id="total-listeners">2<' in dom
    assert 'id="total-clusters">3<' in dom

    def live(route_name: str) -> list[str]:
        return re.findall(r'data-route="' + re.escape(route_name) + r'">(\d+)<', dom)

    # one row per chain; the TCP route serves both listeners, counted per listener
    assert live(SNI1_ROUTE.name) == ["2"]
    assert live(SPLIT_ROUTE.name) == ["1"]
    assert live(TCP_ROUTE.name) == ["3", "4"]
    assert "tcp (fallback)" in dom and "sni:*.istioinaction.io" in dom
    assert "outbound|80||simple-tls-service-2 (80%), outbound|2701||tcp-echo-service (20%)" in dom
    assert dom.count('<tr class="connection">') == 11
    assert "simple-sni-1.istioinaction.io" in dom and "(choosing)" in dom
    # the client-controlled error text is shown as text, not markup
    assert "SNI &lt;script&gt;x&lt;/script&gt; on 0.0.0.0_31400" in dom
    assert "refresh failed" not in dom

    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / "status.png"
    if png.exists():
        png.unlink()
    result = yield deferToThread(run_chromium, url, f"--screenshot={png}",
                                 "--window-size=1200,800", "--hide-scrollbars")
    assert result.returncode == 0, result.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest_twisted.inlineCallbacks
def test_status_page_summary_endpoints_and_bounded_connections(gateway):
    """
    Version, uptime, last reload, totals, per-endpoint live counts and bytes;
    with 1,011 connections open the page receives and shows only the 100 oldest.
    """
    from tsgate import __version__

    gateway.add_connection(TCP_ROUTE, 1000, upstream="10.9.9.9:2701")
    gateway.stats.inc("listener.downstream_cx_total", 1234, listener="0.0.0.0_31400")
    gateway.last_reload = {"time": gateway.now - 30, "ok": False, "errors": 2, "warnings": 1}
    gateway.started_at = gateway.now - 7200
    port = listen(make_admin_site(gateway, now=lambda: gateway.now))
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/"
        result = yield deferToThread(run_chromium, url, "--dump-dom")
    finally:
        yield close(port)
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert f'id="version" class="muted">{__version__}<' in dom
    assert 'id="uptime">2.0 h<' in dom
    assert "REFUSED (2 error(s)), 1 warning(s)" in dom
    assert "<td>connections accepted</td><td class=\"num\">1234</td>" in dom
    assert 'id="total-connections">1011<' in dom
    assert dom.count('<tr class="connection">') == 100
    assert "showing the 100 oldest of 1011" in dom
    # per endpoint: SNI1's two endpoints (2 live on .12), and the DNS-resolved echo upstream
    assert re.findall(r'data-endpoint="outbound\|80\|\|simple-tls-service-1 10.0.0.12:8080">'
                      r'(\d+)<', dom) == ["2"]
    assert re.findall(r'data-endpoint="outbound\|80\|\|simple-tls-service-1 10.0.0.11:8080">'
                      r'(\d+)<', dom) == ["0"]
    assert re.findall(r'data-endpoint="outbound\|2701\|\|tcp-echo-service 10.9.9.9:2701">'
                      r'(\d+)<', dom) == ["1007"]
    assert "refresh failed" not in dom
