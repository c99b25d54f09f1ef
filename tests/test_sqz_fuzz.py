"""Hostile .sqz files: every truncation, bit flip or byte mutation must end in SqzError/WeightsError."""

from __future__ import annotations

import contextlib
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squeezenet.errors import WeightsError
from squeezenet.weights import sqz_codec as C
from squeezenet.weights.sqz import decode_sqz_bytes


def _sample() -> bytes:
    rng = np.random.default_rng(0)
    plans = []
    for i, (scheme, coder) in enumerate(
        [("gaps", "rans"), ("relidx4", "huffman"), ("bitmask", "raw"), ("gaps", "huffman"), ("auto", "auto")]
    ):
        shape = (6, 5, 3, 3)
        mask = rng.random(shape) < 0.3
        pos = np.flatnonzero(mask)
        codes = rng.integers(1, 8, len(pos))
        cb = np.linspace(-1, 1, 8).astype(np.float32)
        cb[0] = 0.0
        t = C.SparseTensor(shape, cb, codes, pos)
        plans.append(C.TensorPlan(f"w{i}", t, positions=scheme, codes_coder=coder, gaps_coder=coder))
    plans.append(C.TensorPlan("b", rng.normal(size=6).astype(np.float32)))
    return C.encode_sqz({"name": "fuzz"}, plans, steps=16)[0]


SAMPLE = _sample()


def _refresh_crcs(data: bytearray) -> bytes:
    """Recompute section and file CRCs so a mutation reaches the parsers behind them."""
    pos = 12
    try:
        nsec = struct.unpack_from("<I", data, 8)[0]
        for _ in range(min(nsec, 64)):
            length = struct.unpack_from("<I", data, pos + 4)[0]
            end = pos + 8 + length
            if end + 4 > len(data) - 8:
                break
            struct.pack_into("<I", data, end, zlib.crc32(bytes(data[pos + 8 : end])))
            pos = end + 4
    except struct.error:
        pass
    if len(data) >= 8:
        struct.pack_into("<I", data, len(data) - 8, len(data))
        struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def _decode(data: bytes) -> None:
    with contextlib.suppress(C.SqzError):
        C.decode_sqz(data)


def test_sample_decodes():
    meta, tensors = C.decode_sqz(SAMPLE)
    assert meta == {"name": "fuzz"} and len(tensors) == 6


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255), st.booleans())
def test_hypothesis_byte_mutation(offset, value, fix_crc):
    data = bytearray(SAMPLE)
    data[offset] = value
    _decode(_refresh_crcs(data) if fix_crc else bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_hypothesis_garbage(blob):
    _decode(C.MAGIC + blob)
    _decode(_refresh_crcs(bytearray(C.MAGIC + struct.pack("<HHI", 1, 0, 3) + blob + b"\0" * 8)))


def test_random_mutations_and_truncations():
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    n = 0
    while n < 3000 and time.perf_counter() - start < 4.0:
        data = bytearray(SAMPLE)
        kind = rng.integers(4)
        if kind == 0:
            data = data[: rng.integers(0, len(data))]
        elif kind == 1:
            for _ in range(rng.integers(1, 4)):
                data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        elif kind == 2:
            i = rng.integers(len(data) - 4)
            struct.pack_into("<I", data, i, int(rng.choice([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])))
        else:
            i = rng.integers(len(data))
            data[i:i] = bytes(rng.integers(0, 256, rng.integers(1, 16), dtype=np.uint8))
        _decode(_refresh_crcs(data) if rng.random() < 0.8 else bytes(data))
        n += 1
    assert n >= 500


def test_torch_wrapper_gives_weights_error():
    with pytest.raises(WeightsError):
        decode_sqz_bytes(SAMPLE[:-3])
    with pytest.raises(WeightsError, match="metadata"):
        decode_sqz_bytes(SAMPLE)  # valid container, but no architecture in the metadata
