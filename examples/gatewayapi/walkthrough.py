"""Istio in Action, chapter 4, with the Kubernetes Gateway API: backends and gateway.

    python examples/gatewayapi/walkthrough.py [--workdir DIR] [--port 31400]

The same walkthrough as ``examples/istioinaction/walkthrough.py`` (the same
backends, certificates, local ServiceEntries, options and printed commands),
with the book's Istio Gateway and VirtualServices replaced by this directory's
Gateway API YAML: ``gateway.yaml`` (GatewayClass ``istio`` and a Gateway with a
TCP listener and two TLS passthrough listeners on 31400), ``tcp-echo-route.yaml``
(TCPRoute) and ``tls-routes.yaml`` (two TLSRoutes). ``tsgate`` serves Gateways
of class ``istio`` by default (``--gateway-class``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BOOK = HERE.parent / "istioinaction"
sys.path.insert(0, str(BOOK))

import walkthrough as book  # noqa: E402  (the Istio walkthrough, a sibling example)

CONFIG_FILES = (
    str(BOOK / "echo.yaml"),  # the book's echo Deployment and Service (skipped by tsgate)
    "gateway.yaml",
    "tcp-echo-route.yaml",
    "tls-routes.yaml",
    str(BOOK / "local" / "serviceentries.yaml"),  # the services' hosts -> local backends
)

if __name__ == "__main__":
    sys.exit(book.main(config_files=CONFIG_FILES, base=HERE,
                       description="Run Istio in Action ch.4 locally with the Kubernetes "
                                   "Gateway API: backends + tsgate"))
