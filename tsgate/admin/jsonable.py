"""
Turning config and routing records into JSON for ``/config_dump``.

The records are frozen attrs classes (and whatever the config loader keeps
as resources), so one generic walk covers them; anything unknown becomes
its ``str()`` rather than failing the whole dump.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Mapping
from typing import Any

import attrs

from tsgate.routing import Listener

_MAX_DEPTH = 40


def to_jsonable(obj: Any, _depth: int = 0) -> Any:
    """A structure ``json.dumps`` accepts, built from attrs records, mappings and sequences."""
    if _depth > _MAX_DEPTH:
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value, _depth + 1)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if attrs.has(type(obj)):
        out = {f.name: to_jsonable(getattr(obj, f.name), _depth + 1)
               for f in attrs.fields(type(obj))}
        if isinstance(obj, Listener):  # derived properties readers look for
            out["name"] = obj.name
            out["inspect"] = obj.inspect
        return out
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, tuple) and obj and all(
        isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in obj
    ):
        # label and annotation tuples like (("app", "x"),) read better as a mapping
        return {k: to_jsonable(v, _depth + 1) for k, v in obj}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v, _depth + 1) for v in obj]
    return str(obj)
