"""A faulty environment against live daemons: a 20 MB file system that
fills up (tmpfs; with and without the free-space reserve, so that real
ENOSPC errors are hit too), and bytes flipped on disk in a segment file and
in an inline SQLite row after their commit."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcis.dtn.client import Client, ClientError
from tests.adversarial.conftest import Daemon, collect, ports, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 20 MB tmpfs (root only; skipped elsewhere)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("reserve", [4 << 20, 0], ids=["reserve", "enospc"])
def test_a_full_file_system_refuses_new_bundles_and_recovers(
    tmp_path: Path, daemons: list[Daemon], small_fs: Path, reserve: int
) -> None:
    p1, p2 = ports(2)
    n1 = Daemon(
        tmp_path,
        1,
        p1,
        {2: p2},
        store_dir=small_fs,
        extra=f"[limits]\ndisk_reserve_bytes = {reserve}",
    )
    n2 = Daemon(tmp_path, 2, p2, {1: p1})
    daemons += [n1, n2]
    n1.start()
    acked: list[bytes] = []
    refused = ""
    with Client(n1.socket, timeout_s=30) as c:
        for i in range(400):  # 400 x 60 KB: far more than 20 MB
            payload = i.to_bytes(4, "big") * 15_000
            try:
                c.send("ipn:2.1", payload, source="ipn:1.1")
            except ClientError as exc:
                refused = str(exc)
                break
            acked.append(payload)
    assert refused, "the file system never filled up"
    assert "full" in refused
    assert n1.alive()
    assert acked
    n2.start()
    got = collect(n2.socket, "ipn:2.1", len(acked), timeout_s=120)
    assert sorted(b.payload for b in got) == sorted(acked)  # once each, intact
    wait_for(lambda: n1.status()["stored"] == 0, 60, "node 1 did not drain")
    # Space is back: accepted again, without a restart.
    with Client(n1.socket) as c:
        c.send("ipn:2.1", b"after", source="ipn:1.1")
    (late,) = collect(n2.socket, "ipn:2.1", 1, timeout_s=60)
    assert late.payload == b"after"
    assert n1.alive()
    assert n1.non_json_lines() == []


def _flip_first(path: Path, marker: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(marker)
    assert at >= 0, f"{marker!r} not in {path}"
    data[at + len(marker) + 3] ^= 0x20
    path.write_bytes(bytes(data))


def test_bytes_flipped_on_disk_are_store_corrupt_and_never_delivered(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    p1, p2 = ports(2)
    n1 = Daemon(tmp_path, 1, p1, {2: p2})
    n2 = Daemon(tmp_path, 2, p2, {1: p1})
    daemons += [n1, n2]
    n1.start()

    def payload(i: int) -> bytes:
        body = b"<%04d>" % i
        return body * (100 if i % 2 else 5_000)  # 600 B inline, 30 KB segments

    n = 10
    with Client(n1.socket) as c:
        for i in range(n):
            c.send("ipn:2.1", payload(i), source="ipn:1.1")
    n1.stop()  # node 2 never came up: all ten are in node 1's store
    db = n1.dir / "node1.db"
    (seg,) = sorted((n1.dir / "node1.db.segments").glob("*.seg"))
    _flip_first(seg, b"<0004>")  # bundle 4: a segment record
    _flip_first(db, b"<0003>")  # bundle 3: an inline row
    n1.start()
    n2.start()
    got = collect(n2.socket, "ipn:2.1", n - 2, timeout_s=90)
    assert sorted(b.payload for b in got) == sorted(
        payload(i) for i in range(n) if i not in (3, 4)
    )
    wait_for(lambda: n1.status()["stored"] == 0, 30, "node 1 still holds bundles")
    assert n1.status()["counters"]["store_corrupt"] == 2
    assert n1.events("store_corrupt")
    assert not n1.events("store_dropped_unsynced")
    assert n1.alive()
    with contextlib.suppress(Exception):
        n2.stop()
