"""
A typed, frozen model of the layer-4 parts of Istio's networking kinds.

Only what tsgate acts on or validates is modelled; HTTP routes are kept as a
count (they are accepted, as Istio accepts them, and ignored at L4). Istio's
defaults are applied when the records are built (``tsgate.config.parse``), so
later stages never ask "was this set?" except where Istio itself does
(``Destination.port``, ``RouteDestination.weight``).

Every resource carries ``Meta``: kind, namespace/name, file, line and a map
of field path to line, so a rule anywhere can report
``file:line: error: Kind ns/name: spec.path: reason``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Union

import attrs

from tsgate.config.loader import line_of

Labels = tuple[tuple[str, str], ...]


@attrs.frozen
class Meta:
    kind: str
    api_version: str
    name: str
    namespace: str
    labels: Labels = ()
    annotations: Labels = ()
    file: str = ""
    line: int = 0
    #: document index in its file (two resources in one file differ here)
    index: int = 0
    positions: Mapping[str, int] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def ref(self) -> str:
        """``Gateway istioinaction/echo-tcp-gateway``."""
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    def line_of(self, path: str) -> int:
        return line_of(self.positions, path, self.line)


# ---------------------------------------------------------------- Gateway


@attrs.frozen
class Port:
    number: Optional[int]
    name: str
    protocol: str  # upper case as Istio compares it; "" when missing
    target_port: Optional[int] = None


@attrs.frozen
class ServerTLS:
    mode: str = "PASSTHROUGH"
    https_redirect: bool = False
    #: cert-source fields that were set (serverCertificate, credentialName, ...)
    cert_fields: tuple[str, ...] = ()
    min_protocol_version: str = ""
    max_protocol_version: str = ""
    # The certificate fields as written (tsgate.tls serves SIMPLE/MUTUAL/OPTIONAL_MUTUAL).
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    ca_crl: str = ""
    credential_name: str = ""
    credential_names: tuple[str, ...] = ()
    ca_cert_credential_name: str = ""
    #: tlsCertificates[]: (serverCertificate, privateKey) pairs
    tls_certificates: tuple[tuple[str, str], ...] = ()
    subject_alt_names: tuple[str, ...] = ()
    verify_certificate_spki: tuple[str, ...] = ()
    verify_certificate_hash: tuple[str, ...] = ()
    cipher_suites: tuple[str, ...] = ()


@attrs.frozen
class Server:
    port: Optional[Port]
    hosts: tuple[str, ...]
    bind: str = ""
    name: str = ""
    tls: Optional[ServerTLS] = None


@attrs.frozen
class Gateway:
    meta: Meta
    selector: Labels = ()
    servers: tuple[Server, ...] = ()


# ---------------------------------------------------------- VirtualService


@attrs.frozen
class Destination:
    host: str
    subset: str = ""
    port: Optional[int] = None


@attrs.frozen
class RouteDestination:
    destination: Destination
    weight: Optional[int] = None


@attrs.frozen
class L4Match:
    """Both L4MatchAttributes (tcp) and TLSMatchAttributes (tls)."""

    port: Optional[int] = None
    sni_hosts: tuple[str, ...] = ()
    destination_subnets: tuple[str, ...] = ()
    source_labels: Labels = ()
    source_namespace: str = ""
    gateways: tuple[str, ...] = ()


@attrs.frozen
class L4Route:
    """A ``tcp[]`` or ``tls[]`` rule."""

    match: tuple[L4Match, ...] = ()
    route: tuple[RouteDestination, ...] = ()


@attrs.frozen
class VirtualService:
    meta: Meta
    hosts: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    tcp: tuple[L4Route, ...] = ()
    tls: tuple[L4Route, ...] = ()
    http_count: int = 0
    export_to: tuple[str, ...] = ()
    #: destinations of http routes and mirrors (path, destination): not served, but
    #: istioctl analyze checks their subsets (IST0101)
    http_destinations: tuple[tuple[str, Destination], ...] = ()


# ------------------------------------------------ ServiceEntry/WorkloadEntry


@attrs.frozen
class ServicePort:
    number: Optional[int]
    name: str = ""
    protocol: str = ""
    target_port: Optional[int] = None


@attrs.frozen
class WorkloadSpec:
    """A ServiceEntry endpoint or a WorkloadEntry's spec."""

    address: str = ""
    ports: tuple[tuple[str, int], ...] = ()
    labels: Labels = ()
    weight: Optional[int] = None
    network: str = ""
    locality: str = ""


@attrs.frozen
class ServiceEntry:
    meta: Meta
    hosts: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    location: str = "MESH_EXTERNAL"
    resolution: str = "NONE"
    endpoints: tuple[WorkloadSpec, ...] = ()
    workload_selector: Optional[Labels] = None
    export_to: tuple[str, ...] = ()


@attrs.frozen
class WorkloadEntry:
    meta: Meta
    spec: WorkloadSpec


# --------------------------------------------------------- DestinationRule


@attrs.frozen
class TcpSettings:
    max_connections: Optional[int] = None
    connect_timeout: Optional[float] = None
    idle_timeout: Optional[float] = None
    max_connection_duration: Optional[float] = None
    keepalive_probes: Optional[int] = None
    keepalive_time: Optional[float] = None
    keepalive_interval: Optional[float] = None
    #: tcpKeepalive was present (``{}`` turns keepalive on with the system's settings)
    keepalive: bool = False


@attrs.frozen
class ClientTLS:
    """DestinationRule ``trafficPolicy.tls`` (ClientTLSSettings): upstream origination."""

    mode: str = "DISABLE"
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    ca_crl: str = ""
    credential_name: str = ""
    subject_alt_names: tuple[str, ...] = ()
    sni: str = ""
    insecure_skip_verify: bool = False


@attrs.frozen
class TrafficPolicy:
    """The L4-relevant parts; ``None`` means "not set here" (for overrides)."""

    lb_simple: Optional[str] = None
    #: keys set under loadBalancer.consistentHash (useSourceIp, httpHeaderName, ...)
    consistent_hash: tuple[str, ...] = ()
    use_source_ip: bool = False
    #: loadBalancer.consistentHash as written (ringHash, maglev, minimumRingSize, ...)
    consistent_hash_settings: tuple[tuple[str, Any], ...] = ()
    tcp: Optional[TcpSettings] = None
    tls_mode: Optional[str] = None
    #: the whole ``tls`` block (origination), when set
    tls: Optional[ClientTLS] = None
    #: upstream PROXY protocol version (V1, V2) when trafficPolicy.proxyProtocol is set
    proxy_protocol: Optional[str] = None
    tunnel_protocol: Optional[str] = None
    #: outlierDetection as written (key, value), for validation and later use
    outlier_detection: tuple[tuple[str, Any], ...] = ()
    port_level: tuple[tuple[int, TrafficPolicy], ...] = ()
    #: the top-level fields that were set (an empty policy is an error)
    set_fields: tuple[str, ...] = ()
    #: the fields set under tls (caCertificates, credentialName, ...), for IST0128/IST0129
    tls_fields: tuple[str, ...] = ()
    #: the fields set under loadBalancer (simple, localityLbSetting, ...)
    lb_fields: tuple[str, ...] = ()
    #: loadBalancer.warmup as written, None when absent (validated, not acted on)
    warmup: Optional[tuple[tuple[str, Any], ...]] = None
    #: the fields set under connectionPool, None when absent (empty is an error)
    connection_pool_fields: Optional[tuple[str, ...]] = None
    #: loadBalancer.consistentHash.maglev.tableSize (0 when maglev has none), None if no maglev
    maglev_table_size: Optional[int] = None


@attrs.frozen
class Subset:
    name: str
    labels: Labels = ()
    traffic_policy: Optional[TrafficPolicy] = None


@attrs.frozen
class DestinationRule:
    meta: Meta
    host: str = ""
    traffic_policy: Optional[TrafficPolicy] = None
    subsets: tuple[Subset, ...] = ()
    export_to: tuple[str, ...] = ()
    #: workloadSelector.matchLabels: the rule applies only to workloads with them
    workload_selector: Optional[Labels] = None


# ----------------------------------------------------- AuthorizationPolicy


@attrs.frozen
class _AuthzFields:
    """The fields set on a source or an operation, each a list of values."""

    fields: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def get(self, name: str) -> Optional[tuple[str, ...]]:
        """A field's values, ``None`` when it is not set."""
        for key, values in self.fields:
            if key == name:
                return values
        return None


@attrs.frozen
class AuthzSource(_AuthzFields):
    """``from[].source``."""


@attrs.frozen
class AuthzOperation(_AuthzFields):
    """``to[].operation``."""


@attrs.frozen
class AuthzCondition:
    key: str
    values: Optional[tuple[str, ...]] = None
    not_values: Optional[tuple[str, ...]] = None


@attrs.frozen
class AuthzRule:
    #: ``from``: None when absent (any source); each entry a Source (None: no ``source``)
    sources: Optional[tuple[Optional[AuthzSource], ...]] = None
    operations: Optional[tuple[Optional[AuthzOperation], ...]] = None
    when: tuple[AuthzCondition, ...] = ()


@attrs.frozen
class TargetRef:
    kind: str = ""
    name: str = ""
    group: str = ""
    namespace: str = ""


@attrs.frozen
class AuthorizationPolicy:
    """security.istio.io AuthorizationPolicy (v1 / v1beta1), see tsgate.config.authz."""

    meta: Meta
    #: selector.matchLabels; None when no selector (every workload of the namespace)
    selector: Optional[Labels] = None
    target_refs: tuple[TargetRef, ...] = ()
    action: str = "ALLOW"
    provider: str = ""
    #: None: ``rules`` absent (the policy matches nothing)
    rules: Optional[tuple[AuthzRule, ...]] = None


Resource = Union[Gateway, VirtualService, ServiceEntry, WorkloadEntry, DestinationRule,
                 AuthorizationPolicy]


def resource_to_dict(resource: Resource) -> dict[str, Any]:
    """A JSON-ready view of a model record (for ``/config_dump``)."""

    def keep(attribute: attrs.Attribute, value: Any) -> bool:  # type: ignore[type-arg]
        return attribute.name != "positions"

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    out: dict[str, Any] = plain(attrs.asdict(resource, filter=keep))
    return out
