"""The status page's authorization table, rendered by a real headless Chromium."""

from __future__ import annotations

import types

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.admin.fakes import busy_gateway
from tests.admin.http_client import close, listen
from tests.admin.test_status_page import run_chromium
from tsgate.admin.server import make_admin_site
from tsgate.authz.limits import Guards, Limits

pytestmark = pytest.mark.e2e


@pytest_twisted.inlineCallbacks
def test_denials_and_limited_sources_on_the_status_page():
    gateway = busy_gateway()
    guards = Guards()
    guards.note_denied("0.0.0.0_31400", "127.0.0.66",
                       "ns[istio-system]-policy[deny-66]-rule[0]", 1_700_000_000.0)
    tracker = guards.tracker("0.0.0.0_31400")
    tracker.admit("127.0.0.7", 1_700_000_001.0, Limits(per_ip=1), False)
    tracker.admit("127.0.0.7", 1_700_000_002.0, Limits(per_ip=1), False)
    gateway.ctx = types.SimpleNamespace(guards=guards)
    gateway.stats.inc("tcp.rbac.denied", 5)
    port = listen(make_admin_site(gateway, now=lambda: gateway.now))
    try:
        result = yield deferToThread(run_chromium, f"http://127.0.0.1:{port.getHost().port}/",
                                     "--dump-dom")
    finally:
        yield close(port)
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "policy ns[istio-system]-policy[deny-66]-rule[0]" in dom
    assert "127.0.0.66" in dom and "127.0.0.7" in dom
    assert "limit max-connections-per-ip" in dom
    assert "tcp.rbac.denied 5" in dom
    assert "authz: " not in dom  # the /authz fetch worked
