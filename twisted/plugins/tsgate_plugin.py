"""twistd plugin: ``twistd tsgate``. Only names the real module, so plugin scans stay cheap."""

from twisted.application.service import ServiceMaker

tsgate = ServiceMaker(
    "tsgate",
    "tsgate.tap",
    "L4 ingress gateway (TCP, TLS SNI passthrough) configured by Istio YAML",
    "tsgate",
)
