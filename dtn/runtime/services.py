"""Loading a node's services: ``"pkg.module:factory"`` names, and the
incarnation counter kept in the store.

Theory of operation
-------------------
A service factory is any callable ``factory(node, incarnation) ->
Sequence[Service]`` (the simulator takes the same). ``node.toml`` names them
as ``[services] factories = ["pkg.mod:factory"]``; :func:`load_factory`
imports one (the current directory is searched too, as ``python -m`` does)
and raises :class:`~dcis.dtn.runtime.config.ConfigError` naming the entry when it
cannot. :func:`next_incarnation` counts the node's starts in the service
state of service 0 (the administrative endpoint's), so ``ctx.incarnation``
bumps at every restart of a node with a store file.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

from dcis.dtn.node import Service
from dcis.dtn.node.state import StateBackend
from dcis.dtn.runtime.config import ConfigError

__all__ = ["ServiceFactory", "load_factory", "next_incarnation"]

ServiceFactory = Callable[[int, int], Sequence[Service]]
"""``factory(node, incarnation)`` -> the services of one node's incarnation."""

_INCARNATION_KEY = "incarnation"


def load_factory(spec: str, *, what: str = "services.factories") -> ServiceFactory:
    """Import the callable ``spec`` names (``"pkg.module:name"``). Raises
    :class:`ConfigError` (its message starts with ``what``) when ``spec`` is
    malformed, the module does not import, or the name is not callable."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"{what}: expected MODULE:FACTORY, got {spec!r}")
    if os.getcwd() not in sys.path:
        # As `python -m` would: a module next to where the node runs is found.
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # any import-time failure of the user's module
        raise ConfigError(
            f"{what}: cannot import {module}: {type(exc).__name__}: {exc}"
        ) from None
    factory = getattr(mod, name, None)
    if not callable(factory):
        raise ConfigError(f"{what}: {module} has no callable {name!r}")
    loaded: ServiceFactory = factory
    return loaded


def next_incarnation(state: StateBackend) -> int:
    """Count one more start of the node in ``state`` and return the count
    (1 at the first start). Call inside a store transaction."""
    raw = state.service_get(0, _INCARNATION_KEY)
    try:
        n = int(raw.decode("ascii")) + 1 if raw is not None else 1
    except (UnicodeDecodeError, ValueError):
        n = 1  # a damaged counter restarts; incarnations only need to differ
    state.service_put(0, _INCARNATION_KEY, str(n).encode("ascii"))
    return n
