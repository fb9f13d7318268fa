"""
The admin server (Envoy's admin interface, reduced to what an L4 gateway
needs), the metrics listener and Istio's readiness endpoint, as sites.

Both only *read* the gateway through :class:`tsgate.admin.state.GatewayState`,
except ``POST /drain`` and ``POST /reload``. The paths, guards and status
codes are :mod:`tsgate.admin.resources`; what each page shows is
:mod:`tsgate.admin.views`.

Endpoints (``GET /help`` lists them):

- ``/`` the status page (``static/index.html`` + ``app.js`` + ``style.css``);
- ``/stats`` Envoy's text (``?format=json``, ``?filter=<regex>``, ``?usedonly``);
- ``/stats/prometheus`` Prometheus text format 0.0.4;
- ``/config_dump`` loaded files, diagnostics, resources and the compiled table (JSON);
- ``/listeners``, ``/clusters`` Envoy-like text, or JSON with ``?format=json``;
- ``/connections`` live connections, per listener and per route (JSON), oldest first,
  one page at a time (``?limit=`` up to :data:`MAX_PAGE`, ``?offset=``);
- ``/status`` what the status page shows, in one JSON: version, uptime, last
  reload, totals and rates, listeners, clusters and endpoints with live counts;
- ``/errors`` recent errors, newest first (JSON);
- ``/ready`` 200 ``LIVE`` or 503; ``POST /drain``; ``POST /reload``.

:func:`make_metrics_site` is the separate, read-only metrics listener
(``--metrics``, Istio's ``:15090``): ``/stats/prometheus`` and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Callable

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tsgate.admin.resources import AdminResources, admin_root, metrics_root, readiness_root
from tsgate.admin.state import GatewayState
from tsgate.admin.views import DEFAULT_PAGE, MAX_PAGE

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "make_admin_site", "make_metrics_site",
           "make_readiness_site"]

log = Logger(namespace="tsgate.admin")


class _QuietSite(Site):
    """A Site that logs requests at debug level instead of a combined log line each."""

    noisy = False

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)  # type: ignore[no-untyped-call]
        self.displayTracebacks = False

    def log(self, request: Request) -> None:  # type: ignore[override]
        log.debug("{method} {uri} {code}", method=request.method, uri=request.uri,
                  code=request.code)


def make_admin_site(gateway: GatewayState, allowed_hosts: Sequence[str] = (),
                    now: Callable[[], float] = time.time) -> Site:
    """
    The admin site. ``allowed_hosts`` are extra ``Host`` names accepted
    besides IP literals and ``localhost`` (for an admin put behind a name).
    """
    handlers = AdminResources(gateway, now)
    site = _QuietSite(admin_root(handlers, allowed_hosts))
    site.admin = handlers  # type: ignore[attr-defined]  # for tests and the lead's wiring
    return site


def make_metrics_site(gateway: GatewayState) -> Site:
    """
    The metrics listener (``--metrics``, Istio's ``:15090``): read-only
    ``/stats/prometheus`` and nothing else, so it can listen on the pod IP for
    Prometheus without exposing ``POST /drain`` or ``/config_dump``.
    """
    return _QuietSite(metrics_root(gateway))


def make_readiness_site(gateway: GatewayState) -> Site:
    """
    Istio's ``:15021/healthz/ready``: 200 when ready, 503 otherwise, and
    nothing else (kubelet probes it on the pod IP, so it must reveal nothing).
    """
    return _QuietSite(readiness_root(gateway))
