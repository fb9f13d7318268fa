"""
The Kubernetes Gateway API (``gateway.networking.k8s.io``) in tsgate.

``parse`` reads GatewayClass, Gateway, TCPRoute, TLSRoute and ReferenceGrant
with the API's own validation; ``translate`` attaches routes to listeners,
turns them into tsgate's Istio model (so one compiler serves both) and
computes the status a controller would write; ``status`` holds and prints it.
"""

from tsgate.config.gatewayapi.status import ApiStatus, Condition
from tsgate.config.gatewayapi.translate import (
    DEFAULT_GATEWAY_CLASSES,
    Translation,
    translate,
)

__all__ = ["ApiStatus", "Condition", "DEFAULT_GATEWAY_CLASSES", "Translation", "translate"]
