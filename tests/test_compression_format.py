"""Format version 2 of ``.sqz``: packed codebooks, deflated values and tables, shared metadata.

Each saves bytes that cost no accuracy; each must round-trip exactly and fail cleanly.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from squeezenet.weights import sqz_codec as C


def _sparse(rng, shape=(8, 6, 3, 3), k=40, density=0.4, dtype=np.float32):
    mask = rng.random(shape) < density
    positions = np.flatnonzero(mask)
    codebook = np.sort(rng.normal(size=k)).astype(dtype).astype(np.float32)
    codes = rng.integers(0, k, len(positions))
    return C.SparseTensor(shape, codebook, codes, positions)


def _roundtrip(plans, meta=None):
    data, report = C.encode_sqz(meta or {"k": "v"}, plans, steps=64)
    return data, report, C.decode_sqz(data)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_packed_codebook_is_exact_and_smaller(dtype):
    rng = np.random.default_rng(0)
    t = _sparse(rng, k=200)
    t.codebook[:3] = [-0.0, 0.0, 0.0]  # signed zeros and a duplicate value
    t.codebook = t.codebook[rng.permutation(len(t.codebook))]  # not sorted: the encoder sorts and remaps
    plan = C.TensorPlan("w", t, codebook_dtype=dtype)
    _, report, (_, arrays) = _roundtrip([plan])
    expect = np.zeros(int(np.prod(t.shape)), np.float32)
    expect[t.positions] = t.codebook.astype(dtype).astype(np.float32)[t.codes]
    np.testing.assert_array_equal(arrays["w"].ravel(), expect)
    raw = C.encode_sqz({"k": "v"}, [C.TensorPlan("w", t, codebook_dtype=dtype, packed=False)], steps=64)[1]
    assert report["w"]["codebook"] < 0.75 * raw["w"]["codebook"]


def test_float_keys_order_every_float16():
    values = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    values = values[np.isfinite(values)]
    keys = C.float_keys(values, np.float16)
    order = np.argsort(keys, kind="stable")
    assert np.all(np.diff(values[order].astype(np.float64)) >= 0)  # keys sort like the values
    np.testing.assert_array_equal(C.keys_to_floats(keys, np.float16).view(np.uint16), values.view(np.uint16))


@pytest.mark.parametrize("k", [0, 3, 9])
def test_exp_golomb_round_trip(k):
    values = np.array([0, 1, 2, 7, 255, 1000, 65535, 3], np.int64)
    payload = C.exp_golomb_pack(values, k)
    np.testing.assert_array_equal(C.exp_golomb_decode(payload, len(values), k, 1 << 17), values)
    with pytest.raises(C.SqzError, match="ends early"):
        C.exp_golomb_decode(payload[:1], len(values), k, 1 << 17)
    with pytest.raises(C.SqzError, match="out of range"):
        C.exp_golomb_decode(payload, len(values), k, 1000)


def test_deflated_dense_values_and_rans_tables():
    rng = np.random.default_rng(1)
    bias = np.repeat(rng.normal(size=8).astype(np.float32), 64)  # compressible
    t = _sparse(rng, shape=(64, 32, 3, 3), k=256, density=0.5)
    t.codes = np.minimum(rng.geometric(0.03, len(t.codes)) - 1, 255)  # skewed: rANS, smooth table
    data, report, (_, arrays) = _roundtrip([C.TensorPlan("b", bias), C.TensorPlan("w", t, codes_coder="rans")])
    np.testing.assert_array_equal(arrays["b"], bias)
    np.testing.assert_array_equal(arrays["w"], t.to_dense())
    assert report["b"]["values"] < bias.nbytes / 4
    # the codes' table was deflated (coder 3), smaller than one byte per symbol
    assert _codes_coder(data, "w") == C.CODER_RANS_Z


def _codes_coder(data: bytes, name: str) -> int:
    pos, nsec = 12, struct.unpack_from("<I", data, 8)[0]
    for _ in range(nsec):
        length = struct.unpack_from("<I", data, pos + 4)[0]
        payload = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if data[pos - 12 - length : pos - 8 - length] != C.SEC_TENSOR:
            continue
        r = C.Reader(payload)
        if bytes(r.take(r.u16())).decode() != name:
            continue
        r.unpack(f"{r.u8()}I")
        assert r.u8() == C.KIND_SPARSE
        _, dt, k = r.unpack("IBH")
        r.take(r.u32() if dt >= C.PACKED else C.DTYPES[dt].itemsize * (k + 1))
        method = r.u8()
        if method in (C.POS_RELIDX4, C.POS_BITMASK):
            r.take(r.u32())
        elif method == C.POS_GAPS:
            coder, _, _ = r.unpack("BHI")
            if coder == C.CODER_RAW:
                r.u8()
            elif coder == C.CODER_RANS_Z:
                r.take(r.u16())
            r.take(r.u32())
        return r.u8()
    raise AssertionError(name)


def test_shared_metadata_refers_to_the_packaged_class_list(monkeypatch, tmp_path):
    shared = C.shared_values()
    names, wnids = shared["imagenet1k.names"], shared["imagenet1k.wnids"]
    assert len(json.loads(names)) == 1000 and json.loads(wnids)[0] == "n01440764"
    meta = {"arch": "x", "classes": names, "wnids": wnids, "license": "L"}
    packed = C.pack_metadata(meta)
    assert packed[0] == C.META_SHARED and len(packed) < 200  # the 1000 names cost a reference
    assert C.unpack_metadata(packed) == meta
    assert len(C.pack_metadata(meta, shared=False)) > 7000
    # a reader whose list differs, or that has none, says so instead of mislabelling
    other = tmp_path / "imagenet1k.tsv"
    other.write_text("index\twnid\tname\n0\tn0\tsomething else\n")
    monkeypatch.setattr(C.metadata, "__file__", str(tmp_path / "sqz_codec" / "metadata.py"))
    with pytest.raises(C.SqzError, match=r"imagenet1k\.tsv differs from the writer's"):
        C.unpack_metadata(packed)
    other.unlink()
    with pytest.raises(C.SqzError, match=r"needs imagenet1k\.tsv beside sqz_codec"):
        C.unpack_metadata(packed)


def test_version_3_is_written_and_unknown_versions_refused():
    data = C.encode_sqz({"k": "v"}, [C.TensorPlan("b", np.ones(3, np.float32))])[0]
    assert struct.unpack_from("<H", data, 4)[0] == 3
    bad = bytearray(data)
    struct.pack_into("<H", bad, 4, 4)
    body = bytes(bad[:-4])
    bad[-4:] = struct.pack("<I", __import__("zlib").crc32(body))
    with pytest.raises(C.SqzError, match=r"unsupported \.sqz version 4"):
        C.decode_sqz(bytes(bad))


def test_inflate_exact_refuses_wrong_sizes():
    packed = C.deflate(b"x" * 100)
    assert C.inflate_exact(packed, 100, "v") == b"x" * 100
    with pytest.raises(C.SqzError, match="wrong length"):
        C.inflate_exact(packed, 99, "v")
    with pytest.raises(C.SqzError):
        C.inflate_exact(packed, 101, "v")
    with pytest.raises(C.SqzError):
        C.inflate_exact(b"\xff\xff\xff", 10, "v")
