"""
Choosing where a connection goes inside a route: which weighted cluster,
then which endpoint of that cluster.

Runtime state (round-robin positions, active connection counts, recent
errors) is kept per cluster *name*, not per compiled object, so it survives a
reload that compiles an equal cluster again.
"""

from __future__ import annotations

import collections
import random
from typing import Callable, Optional

import attrs

from tsgate.routing import Cluster, Endpoint, Route


@attrs.define
class ClusterState:
    """What the data path knows about one cluster at run time."""

    name: str
    next_index: int = 0
    active: int = 0
    total: int = 0
    connect_failures: int = 0
    #: (epoch, message) of recent failures, newest last.
    recent_errors: collections.deque = attrs.field(
        factory=lambda: collections.deque(maxlen=20)
    )
    #: Istio metric labels for this cluster, built once.
    metric_labels: dict[str, str] = attrs.field(factory=dict)
    #: the same labels as registry keys, one per response_flags value
    _metric_keys: dict[str, tuple[tuple[str, str], ...]] = attrs.field(factory=dict)

    @property
    def cluster_key(self) -> tuple[tuple[str, str], ...]:
        """``cluster=<name>`` as a prebuilt stats key."""
        return (("cluster", self.name),)

    def metric_key(self, response_flags: str = "-") -> tuple[tuple[str, str], ...]:
        """Istio labels plus ``response_flags``, as a prebuilt stats key."""
        key = self._metric_keys.get(response_flags)
        if key is None:
            labels = dict(self.metric_labels, response_flags=response_flags)
            key = self._metric_keys[response_flags] = tuple(sorted(labels.items()))
        return key


def istio_metric_labels(cluster: Cluster) -> dict[str, str]:
    """Istio's standard TCP metric labels, as a gateway (reporter=source) fills them."""
    parts = cluster.host.split(".")
    namespace = parts[1] if len(parts) >= 3 and parts[2] == "svc" else "unknown"
    return {
        "reporter": "source",
        "source_workload": "tsgate",
        "source_workload_namespace": "unknown",
        "destination_service": cluster.host,
        "destination_service_name": parts[0],
        "destination_service_namespace": namespace,
        "request_protocol": "tcp",
        # Istio's source reporter says "unknown"; tsgate knows when it made
        # the upstream connection mutual TLS itself (DestinationRule tls MUTUAL).
        "connection_security_policy": (
            "mutual_tls" if getattr(cluster.tls, "mode", "") == "MUTUAL" else "unknown"),
    }


class Balancer:
    """
    Per-connection choices. ``choice`` is injected (a seeded
    ``random.Random().random`` in tests) so weighted picks are testable.
    """

    def __init__(self, choice: Optional[Callable[[], float]] = None) -> None:
        self._random = choice or random.random
        self.clusters: dict[str, ClusterState] = {}

    def state(self, cluster: Cluster) -> ClusterState:
        state = self.clusters.get(cluster.name)
        if state is None:
            state = self.clusters[cluster.name] = ClusterState(
                cluster.name, metric_labels=istio_metric_labels(cluster)
            )
        return state

    def pick_cluster(self, route: Route) -> Cluster:
        """Weighted random pick per connection, as Envoy's weighted_clusters."""
        destinations = route.destinations
        if len(destinations) == 1:
            return destinations[0].cluster
        total = sum(d.weight for d in destinations)
        point = self._random() * total
        for destination in destinations:
            point -= destination.weight
            if point < 0:
                return destination.cluster
        return destinations[-1].cluster

    def pick_endpoint(self, cluster: Cluster) -> Optional[Endpoint]:
        """Round robin over the cluster's endpoints (None: no endpoint, ``UH``)."""
        endpoints = cluster.endpoints
        if not endpoints:
            return None
        state = self.state(cluster)
        endpoint = endpoints[state.next_index % len(endpoints)]
        state.next_index += 1
        return endpoint
