"""The fixed-members factory: it builds a working log per node."""

from __future__ import annotations

import pytest

from dcis.consensus.log.api import Put
from dcis.consensus.log.service import SERVICE_NUMBER, LogService
from dcis.consensus.logfactory import MEMBERS_ENV, factory, parse_members
from dcis.consensus.testing import Cluster
from dcis.dtn.errors import InvalidArgument


def test_parse_members() -> None:
    assert parse_members("3, 1,2,2") == (1, 2, 3)
    for bad in ("", "a,b", "0,1", ","):
        with pytest.raises(InvalidArgument):
            parse_members(bad)


def test_factory_builds_a_log_over_the_members(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMBERS_ENV, "1,2,3")
    c = Cluster([1, 2, 3], factory, seed=4)
    c.advance(8_000)
    svc = c.service(2, SERVICE_NUMBER)
    assert isinstance(svc, LogService)
    assert svc.voters() == (1, 2, 3)
    c.call(2, lambda s: s.submit(Put("k", b"v"), c.now_ms), SERVICE_NUMBER)  # type: ignore[attr-defined]
    c.advance(c.now_ms + 3_000)
    other = c.service(3, SERVICE_NUMBER)
    assert isinstance(other, LogService)
    assert other.get("k") == b"v"
