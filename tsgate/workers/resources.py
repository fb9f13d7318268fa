"""The supervisor's own admin resources: live connections asked of every worker, ``/workers``."""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource
from twisted.web.server import Request

from tsgate.admin.views import DEFAULT_PAGE, connections_view


def _write_json(request: Request, payload: Any) -> None:
    body = json.dumps(payload, indent=1, sort_keys=True).encode() + b"\n"
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.write(body)
    request.finish()


class ConnectionsResource(Resource):
    """``/connections``: the live connections of every worker, each with its worker id."""

    isLeaf = True

    def __init__(self, aggregate: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.aggregate = aggregate

    def render_GET(self, request: Request) -> Any:  # noqa: N802
        finished: list[object] = []

        def gone(result: object) -> None:
            finished.append(result)

        request.notifyFinish().addBoth(gone)

        try:
            limit = int(request.args.get(b"limit", [str(DEFAULT_PAGE).encode()])[0])
            offset = int(request.args.get(b"offset", [b"0"])[0])
        except ValueError:
            request.setResponseCode(400)
            return b"bad request: limit and offset are integers\n"

        def answer(_: Any) -> None:
            if not finished:
                _write_json(request, connections_view(self.aggregate, time.time(), limit, offset))

        def failed(f: Failure) -> None:
            if not finished:
                request.setResponseCode(500)
                _write_json(request, {"error": f.getErrorMessage()})

        self.aggregate.refresh_connections().addCallbacks(answer, failed)
        return server.NOT_DONE_YET


class WorkersResource(Resource):
    """``/workers``: each worker's pid, generation, uptime, readiness and connections."""

    isLeaf = True

    def __init__(self, aggregate: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.aggregate = aggregate

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        workers = self.aggregate.workers_view()
        payload = {
            "workers": workers,
            "total": {"workers": len(workers),
                      "active_connections": sum(w["active_connections"] for w in workers)},
        }
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(payload, indent=1, sort_keys=True).encode() + b"\n"
