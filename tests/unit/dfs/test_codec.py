"""The pipeline: chunk, seal, erasure-code; decode from any k; repair a block."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dfs.core.codec import (
    block_from_ciphertext,
    block_len,
    chunk_hash,
    crc32c,
    decode_ciphertext,
    decrypt_chunk,
    encode_chunk,
)
from dcis.dfs.core.errors import DecodeError

KEY = bytes(range(32))
OID = bytes(16)


@given(
    plain=st.binary(max_size=3000),
    kn=st.tuples(st.integers(1, 6), st.integers(0, 5)).map(
        lambda t: (t[0], t[0] + t[1])
    ),
    data=st.data(),
)
def test_any_k_blocks_decode_and_rebuild(
    plain: bytes, kn: tuple[int, int], data: st.DataObject
) -> None:
    k, n = kn
    enc = encode_chunk(plain, key=KEY, object_id=OID, j=5, k=k, n=n)
    assert len(enc.blocks) == n
    assert all(len(b) == block_len(len(plain), k) for b in enc.blocks)
    assert enc.crcs == [crc32c(b) for b in enc.blocks]
    nums = data.draw(st.permutations(range(n))).copy()[:k]
    ct = decode_ciphertext(
        {i: bytes(enc.blocks[i]) for i in nums}, plain_len=len(plain), k=k, n=n
    )
    assert chunk_hash(ct) == enc.cipher_hash
    assert decrypt_chunk(ct, key=KEY, object_id=OID, j=5) == plain
    want = data.draw(st.integers(0, n - 1))
    assert block_from_ciphertext(ct, want, k=k, n=n) == bytes(enc.blocks[want])


def test_every_3_of_10_subset_decodes() -> None:
    plain = bytes(range(256)) * 40
    enc = encode_chunk(plain, key=KEY, object_id=OID, j=0, k=3, n=10)
    for nums in itertools.combinations(range(10), 3):
        ct = decode_ciphertext(
            {i: enc.blocks[i] for i in nums}, plain_len=len(plain), k=3, n=10
        )
        assert chunk_hash(ct) == enc.cipher_hash


def test_wrong_chunk_index_or_flip_fails_authentication() -> None:
    plain = b"x" * 100
    enc = encode_chunk(plain, key=KEY, object_id=OID, j=1, k=2, n=4)
    ct = decode_ciphertext(dict(enumerate(enc.blocks)), plain_len=100, k=2, n=4)
    with pytest.raises(DecodeError):
        decrypt_chunk(ct, key=KEY, object_id=OID, j=2)
    bad = bytearray(ct)
    bad[3] ^= 1
    with pytest.raises(DecodeError):
        decrypt_chunk(bytes(bad), key=KEY, object_id=OID, j=1)


def test_too_few_or_wrong_size_blocks() -> None:
    enc = encode_chunk(b"abc" * 50, key=KEY, object_id=OID, j=0, k=3, n=5)
    with pytest.raises(DecodeError):
        decode_ciphertext({0: enc.blocks[0], 4: enc.blocks[4]}, plain_len=150, k=3, n=5)
    with pytest.raises(DecodeError):
        decode_ciphertext({0: b"x", 1: b"y", 2: b"z"}, plain_len=150, k=3, n=5)
