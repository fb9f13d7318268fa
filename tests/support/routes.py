"""
Route-table builders for unit tests: one echo cluster on 127.0.0.1 and a TCP
route to it, with any field overridable.
"""

from __future__ import annotations

from typing import Any

from tsgate.routing import Cluster, Endpoint, Route, WeightedCluster

ECHO_HOST = "echo.default.svc.cluster.local"


def cluster(name: str = f"outbound|2701||{ECHO_HOST}", port: int = 2701,
            **kwargs: Any) -> Cluster:
    """A cluster of one endpoint, 127.0.0.1:``port``."""
    return Cluster(name=name, host=ECHO_HOST, port=port,
                   endpoints=(Endpoint("127.0.0.1", port),), **kwargs)


def route(name: str = "default/echo#tcp[0]", **kwargs: Any) -> Route:
    """A route sending everything to ``cluster`` (default: :func:`cluster`)."""
    c = kwargs.pop("cluster", None) or cluster()
    return Route(name=name, destinations=(WeightedCluster(c, 1),), **kwargs)
