"""The on-disk share store: atomic writes, checksums, layout, recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcis.dfs.core.errors import CorruptBlock, InvalidArgument, StoreFull
from dcis.dfs.core.store import MemoryShareStore
from dcis.dfs.sharestore import HEADER, DiskShareStore

OID = bytes(range(16))


def test_write_read_list_delete(tmp_path: Path) -> None:
    s = DiskShareStore(tmp_path)
    s.put_block(OID, 3, 0, b"hello", 10)
    s.put_block(OID, 3, 1, memoryview(b"world!"), 11)
    assert s.get_block(OID, 3, 0) == b"hello"
    assert s.get_block(OID, 3, 2) is None
    assert s.chunks(OID, 3) == [0, 1]
    assert list(s.shares()) == [(OID, 3, 10)]
    assert s.used_bytes() == 11
    assert not list(tmp_path.rglob("*.tmp"))
    s.delete_block(OID, 3, 0)
    assert s.chunks(OID, 3) == [1]
    s.delete_share(OID, 3)
    assert list(s.shares()) == []
    assert s.used_bytes() == 0
    assert list(tmp_path.iterdir()) == []


def test_flipped_byte_on_disk_is_caught(tmp_path: Path) -> None:
    s = DiskShareStore(tmp_path, fsync=False)
    s.put_block(OID, 0, 7, b"x" * 100, 1)
    path = tmp_path / OID.hex() / "0" / "7.blk"
    raw = bytearray(path.read_bytes())
    raw[HEADER + 50] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptBlock):
        s.get_block(OID, 0, 7)
    path.write_bytes(b"DF")
    with pytest.raises(CorruptBlock):
        s.get_block(OID, 0, 7)


def test_reopen_counts_usage_and_drops_torn_temp_files(tmp_path: Path) -> None:
    s = DiskShareStore(tmp_path, fsync=False)
    s.put_block(OID, 1, 0, b"abc", 5)
    (tmp_path / OID.hex() / "1" / "1.blk.tmp").write_bytes(b"torn")
    s2 = DiskShareStore(tmp_path, fsync=False, capacity_bytes=5)
    assert s2.used_bytes() == 3
    assert not list(tmp_path.rglob("*.tmp"))
    assert s2.chunks(OID, 1) == [0]
    with pytest.raises(StoreFull):
        s2.put_block(OID, 1, 1, b"xyz", 6)
    s2.put_block(OID, 1, 0, b"abcde", 6)  # replacing counts the difference
    assert s2.used_bytes() == 5


def test_bad_names_rejected_and_junk_ignored(tmp_path: Path) -> None:
    s = DiskShareStore(tmp_path, fsync=False)
    with pytest.raises(InvalidArgument):
        s.put_block(b"../x", 0, 0, b"", 0)
    with pytest.raises(InvalidArgument):
        s.get_block(OID, 300, 0)
    (tmp_path / "not-hex").mkdir()
    (tmp_path / OID.hex()).mkdir()
    (tmp_path / OID.hex() / "zz").mkdir()
    assert list(s.shares()) == []


def test_same_behaviour_as_the_memory_store(tmp_path: Path) -> None:
    disk = DiskShareStore(tmp_path, fsync=False)
    mem = MemoryShareStore()
    for st in (disk, mem):
        st.put_block(OID, 2, 0, b"a", 1)
        st.put_block(OID, 2, 3, b"bb", 2)
        st.put_block(OID, 5, 1, b"ccc", 3)
        st.delete_block(OID, 2, 0)
    assert sorted(disk.shares()) == sorted(mem.shares())
    assert disk.chunks(OID, 2) == mem.chunks(OID, 2)
    assert disk.used_bytes() == mem.used_bytes()
