"""Resource advertisements fed by the embedding program or the app API.

Theory of operation
-------------------
A node tells the rest of the constellation what it has to offer: store bytes
free and total, CPU load, and the power/thermal state the scheduler works
from (battery %, sunlit or in eclipse, temperature in degrees C). The
membership service carries these in its signed ``alive`` update
(spec/membership.md); what *feeds* them is the program around the node
(``Node.set_resources(...)``) or an application (the app API's
``set_resources`` request, ``Client.set_resources``, ``dcis members --set``).

The bundle layer must not know the membership service (it lives above it),
so this module holds only what both sides agree on: the field names
(:data:`RESOURCE_FIELDS`), their validation (:func:`check_resource_fields`,
a typed :class:`~dcis.dtn.errors.InvalidArgument` for anything out of
range, so a bad value never reaches a signature), and the protocol a service
implements to take them (:class:`AdvertisesResources`). A request may name
only some fields: the others keep their current values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from dcis.dtn.errors import InvalidArgument
from dcis.dtn.node.service import Send

__all__ = [
    "MAX_TEMPERATURE_C",
    "RESOURCE_FIELDS",
    "AdvertisesResources",
    "check_resource_fields",
]

RESOURCE_FIELDS = (
    "store_free_bytes",
    "store_total_bytes",
    "cpu_load",
    "battery_pct",
    "sunlit",
    "temperature_c",
)
"""The advertised fields, in wire order (spec/membership.md)."""

MAX_TEMPERATURE_C = 1000.0
"""Highest temperature accepted (degrees C); the lowest is absolute zero."""
_MAX_CPU_LOAD = 1_000_000.0  # a load average, not a fraction: bounded, not capped at 1
_U64 = 1 << 64


def _is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_resource_fields(fields: Mapping[str, object]) -> dict[str, Any]:
    """Validate a (partial) set of resource fields; return them as a dict.

    Rules: ``store_free_bytes``/``store_total_bytes`` are uint64 ints;
    ``cpu_load`` a finite number >= 0; ``battery_pct`` null or a number in
    [0, 100]; ``sunlit`` null or a bool; ``temperature_c`` null or a number in
    [-273.15, 1000]. Unknown names are refused. Raises
    :class:`InvalidArgument` naming the field. (That free <= total is checked
    by the service once the fields are merged with its current values.)
    """
    out: dict[str, Any] = {}
    for name, v in fields.items():
        if name not in RESOURCE_FIELDS:
            raise InvalidArgument(
                f"unknown resource field {name!r} (known: {', '.join(RESOURCE_FIELDS)})"
            )
        if name in ("store_free_bytes", "store_total_bytes"):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < _U64:
                raise InvalidArgument(f"{name} must be an int in [0, 2^64), got {v!r}")
        elif name == "cpu_load":
            if not _is_num(v) or not 0.0 <= float(v) <= _MAX_CPU_LOAD:  # type: ignore[arg-type]
                raise InvalidArgument(
                    f"cpu_load must be a finite number >= 0, got {v!r}"
                )
            v = float(v)  # type: ignore[arg-type]
        elif name == "battery_pct":
            if v is not None and (not _is_num(v) or not 0.0 <= float(v) <= 100.0):  # type: ignore[arg-type]
                raise InvalidArgument(
                    f"battery_pct must be null or in [0, 100], got {v!r}"
                )
            v = None if v is None else float(v)  # type: ignore[arg-type]
        elif name == "sunlit":
            if v is not None and not isinstance(v, bool):
                raise InvalidArgument(f"sunlit must be null or a bool, got {v!r}")
        else:  # temperature_c
            if v is not None and (
                not _is_num(v) or not -273.15 <= float(v) <= MAX_TEMPERATURE_C  # type: ignore[arg-type]
            ):
                raise InvalidArgument(
                    f"temperature_c must be null or in [-273.15, {MAX_TEMPERATURE_C:g}], "
                    f"got {v!r}"
                )
            v = None if v is None else float(v)  # type: ignore[arg-type]
        out[name] = v
    return out


@runtime_checkable
class AdvertisesResources(Protocol):
    """A service that advertises this node's resources (the membership
    service). The node's driver calls it through ``NodeCore.call_service``."""

    def advertise_resources(self, fields: Mapping[str, Any], now_ms: int) -> list[Send]:
        """Take new values for some of :data:`RESOURCE_FIELDS` (already
        checked by :func:`check_resource_fields`); raises
        :class:`InvalidArgument` when the merged set is inconsistent."""
        ...

    def advertised_resources(self) -> dict[str, Any]:
        """Every field of :data:`RESOURCE_FIELDS` as advertised now."""
        ...
