"""Shared test configuration: hypothesis profiles.

``dev`` (default) is fast; ``ci`` (HYPOTHESIS_PROFILE=ci, set by .ci/run) runs
more examples. Tests that need a floor of examples in CI (e.g. the bundle
round trip's 2,000) read ``EXAMPLES_SCALE``.

Parallel runs: ``make test`` runs the suite on pytest-xdist workers (separate
processes). Each worker is its own pytest session, so everything below is
per worker: a temp dir of its own (``tmp_path_factory``), its own
``XDG_STATE_HOME``/``XDG_RUNTIME_DIR``/``XDG_DATA_HOME`` (the default store,
app socket and object-store paths of a daemon), ports from the OS. The one
thing the workers share is hypothesis's example database
(``.hypothesis/examples`` in the checkout, absolute since import): it writes
each example as its own file by rename, safe for concurrent processes, and
sharing it lets a failure found on one worker be replayed on any. (Tests
that must not overlap cannot count on ``pytest.mark.xdist_group``: with
pytest-xdist 3.8.0 and ``--dist loadgroup`` two tests of one group still ran
on two workers in a check.)
"""

from __future__ import annotations

import importlib.abc
import os
import signal
import sys
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)
IS_CI = PROFILE == "ci"


@pytest.fixture(scope="session", autouse=True)
def _state_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Daemons keep their store under $XDG_STATE_HOME/dcis/node-N, listen on
    $XDG_RUNTIME_DIR/dtn-node-N.sock and the object store under
    $XDG_DATA_HOME/dcis/dfs/node-N by default: point all three (for this
    process and the daemons it starts) at temp dirs of this session, so tests
    never write into the user's home and parallel workers (or another
    checkout's run) never share a node's store or socket."""
    for var, name in (
        ("XDG_STATE_HOME", "xdg-state"),
        ("XDG_RUNTIME_DIR", "xdg-run"),
        ("XDG_DATA_HOME", "xdg-data"),
    ):
        os.environ[var] = str(tmp_path_factory.mktemp(name))


class _OneNamespace(importlib.abc.MetaPathFinder):
    """The repository root is on sys.path (tests import ``tests.*``), which
    would make ``import dtn`` load a second copy of ``dcis.dtn``: refuse it."""

    NAMES = frozenset({"dtn", "crypto", "consensus", "dfs", "tools"})

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> None:
        if fullname.split(".")[0] in self.NAMES:
            raise ModuleNotFoundError(
                f"import dcis.{fullname}, not {fullname} (one namespace: dcis)",
                name=fullname,
            )
        return None


sys.meta_path.insert(0, _OneNamespace())


# A shell starts a background job (`make test &`, nohup, some CI runners) with
# SIGINT ignored, and an ignored signal stays ignored across exec: the daemons
# and commands the tests start would then never see the Ctrl-C that several
# tests send them. Catching SIGINT here makes every child start with the
# default disposition (exec resets a caught signal to SIG_DFL).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow first (otherwise in collection order): on parallel
    workers a minute-long testbed then overlaps the many short tests instead
    of starting last and running alone while the other workers idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _fsync_takes_no_virtual_time(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under trio's MockClock with autojump (the ``autojump_clock``
    fixture), a daemon's group-commit fsync runs on a real worker thread:
    while it works every task is blocked, so the clock jumps from timer to
    timer, and on a loaded machine a slow fsync let a test's 60 virtual
    seconds pass during one sync (a flake seen under load). Here virtual
    time stands still while a sync's fsync runs: the disk takes no virtual
    time, as in the simulator."""
    if "autojump_clock" not in request.fixturenames:
        return
    import math

    import trio

    from dcis.dtn.runtime import node

    clock = request.getfixturevalue("autojump_clock")
    busy = [0]

    async def sync_in_thread(fn: Callable[[], None]) -> None:
        busy[0] += 1
        clock.autojump_threshold = math.inf
        try:
            await trio.to_thread.run_sync(fn)
        finally:
            busy[0] -= 1
            if not busy[0]:
                clock.autojump_threshold = 0

    monkeypatch.setattr(node, "sync_in_thread", sync_in_thread)
