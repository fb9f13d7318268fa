"""
tsgate: a layer-4 ingress gateway on Twisted configured by Istio YAML.

Data flows config -> route table -> data path:

- ``tsgate.config``: load Istio YAML (Gateway, VirtualService, ServiceEntry,
  DestinationRule), validate it, compile it into a ``tsgate.routing.RouteTable``;
- ``tsgate.routing``: the frozen route table and chain selection;
- ``tsgate.hints``: sans-IO parsers of first bytes (TLS ClientHello, ...);
- ``tsgate.proxy``: the listening protocols and the relay;
- ``tsgate.upstream``: clusters, endpoint choice, connecting;
- ``tsgate.tap``: ``twistd tsgate``.
"""

__version__ = "0.1.0"
