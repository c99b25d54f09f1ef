"""The compiled rANS loops (``sqz_codec/_rans.c``) against the NumPy coder, and the format's bytes
pinned: the loops, and the vectorised exp-Golomb, order and normalisation code a patch runs, must
write exactly what the writer wrote before them (``tests/data/sqz_v3_pinned.sqz``, written by the
codec of commit c7198db from ``pinned_content``)."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
from squeezenet.weights.sqz_codec import SparseTensor, SqzError, TensorPlan, compiled, decode_sqz, encode_sqz
from squeezenet.weights.sqz_codec.bundle import RansStream, decode_groups, encode_groups, split_groups
from squeezenet.weights.sqz_codec.container import parse_sqz
from squeezenet.weights.sqz_codec.delta import make_delta
from squeezenet.weights.sqz_codec.delta_file import read_delta, write_delta_file
from squeezenet.weights.sqz_codec.freqs import normalize_weights
from squeezenet.weights.sqz_codec.layout import gap_alphabets, read_layout, write_layout
from squeezenet.weights.sqz_codec.patch import apply_delta
from squeezenet.weights.sqz_codec.positions import GAP_ALPHABETS
from squeezenet.weights.sqz_codec.values import (
    _cheapest_order,
    _exp_golomb_pack_wide,
    exp_golomb_decode,
    exp_golomb_pack,
)
from test_sqz_fuzz import FUZZ

PINNED = ROOT / "tests/data/sqz_v3_pinned.sqz"
PINNED_STEPS = 512  # many lanes for a small file: the interleaving is what a coder can get wrong
PINNED_LAYERS = [  # shape, density, codebook size, codebook dtype, codes' skew
    ((64, 32, 3, 3), 0.35, 256, "float16", 0.02),
    ((128, 64, 1, 1), 0.6, 64, "float32", 0.1),
    ((16, 8, 3, 3), 0.05, 16, "float16", 0.3),
    ((10, 512, 1, 1), 1.0, 32, "float16", 0.05),
]


def pinned_content() -> tuple[dict, list[TensorPlan]]:
    """Gap, relative-index and dense positions, packed codebooks of both precisions, a dense bias."""
    rng = np.random.default_rng(2026)
    plans = []
    for i, (shape, density, k, dtype, skew) in enumerate(PINNED_LAYERS):
        numel = int(np.prod(shape))
        positions = np.sort(rng.choice(numel, int(numel * density), replace=False))
        codebook = np.sort(np.concatenate([[0.0], rng.normal(size=k - 1)])).astype(np.float32)
        codes = np.minimum(rng.geometric(skew, len(positions)) - 1, k - 1)
        plans.append(TensorPlan(f"layer{i}.weight", SparseTensor(shape, codebook, codes, positions),
                                codebook_dtype=dtype))  # fmt: skip
    plans.append(TensorPlan("layer3.bias", rng.normal(size=10).astype(np.float32), dense_dtype="float16"))
    meta = {"arch": "pinned", "classes": json.dumps([f"class {i}" for i in range(10)])}
    return meta, plans


@pytest.fixture(params=["compiled", "numpy"])
def coder(request, monkeypatch) -> str:
    if request.param == "compiled" and not compiled.AVAILABLE:
        pytest.fail("the compiled rANS loops were not built (is a C compiler installed?)")
    monkeypatch.setattr(compiled, "COMPILED", request.param == "compiled")
    return request.param


def test_the_install_compiled_the_rans_loops():
    """Where a C compiler and Python's headers are found, ``pip install`` builds ``_rans`` (setup.py)."""
    if (shutil.which("cc") or shutil.which("gcc")) and Path(sysconfig.get_paths()["include"], "Python.h").is_file():
        assert compiled.AVAILABLE


def test_the_writer_writes_the_pinned_bytes_from_the_content(coder):
    meta, plans = pinned_content()
    assert encode_sqz(meta, plans, PINNED_STEPS)[0] == PINNED.read_bytes()


def test_the_pinned_file_reads_back_to_its_content_and_writes_again_the_same(coder):
    data = PINNED.read_bytes()
    assert write_layout(read_layout(data)) == data
    _, arrays = decode_sqz(data)
    for plan in pinned_content()[1]:
        t = plan.tensor
        if isinstance(t, SparseTensor):  # the values as stored: in the codebook's precision
            stored = t.codebook.astype(plan.codebook_dtype).astype(np.float32)
            expected = SparseTensor(t.shape, stored, t.codes, t.positions).to_dense()
        else:
            expected = t.astype(plan.dense_dtype).astype(np.float32)
        np.testing.assert_array_equal(arrays[plan.name], expected)


def _streams(draw) -> tuple[list[RansStream], list[int], int]:
    """Up to five streams of skewed symbols (some empty), in up to three groups, a few steps per lane."""
    streams = []
    for _ in range(draw(st.integers(1, 5))):
        alphabet = draw(st.integers(1, 300))
        n = draw(st.sampled_from([0, 1, 7, 100, 1500]))
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        symbols = np.minimum(rng.geometric(draw(st.sampled_from([0.01, 0.2, 0.9])), n) - 1, alphabet - 1)
        table = np.zeros(alphabet, np.uint8)
        table[np.unique(symbols)] = rng.integers(1, 256, len(np.unique(symbols)))
        table[0] = max(table[0], 1)
        streams.append(RansStream(n, table, symbols))
    cuts = sorted(draw(st.sets(st.integers(1, len(streams) - 1), max_size=2))) if len(streams) > 1 else []
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, len(streams)], strict=True)]
    return streams, sizes, draw(st.sampled_from([1, 3, 16, 64, 4096]))


def _both(function) -> list:
    """``function()`` with the compiled loops and with NumPy -> [result or error line] for each."""
    was, out = compiled.COMPILED, []
    for on in (True, False):
        compiled.COMPILED = on
        try:
            out.append(function())
        except SqzError as exc:
            out.append(f"SqzError: {exc}")
        finally:
            compiled.COMPILED = was
    return out


@settings(FUZZ, max_examples=80, deadline=None)
@given(st.data())
def test_compiled_and_numpy_coders_write_and_read_the_same_bytes(data):
    assert compiled.AVAILABLE, "the compiled rANS loops were not built"
    streams, sizes, steps = _streams(data.draw)
    fast, slow = _both(lambda: encode_groups(streams, sizes, steps))
    assert fast == slow
    ns = [s.n for s in streams]
    blob = b"".join(fast)
    for decoded in _both(lambda: decode_groups(split_groups(blob, ns, sizes, steps), streams, sizes, steps)):
        for got, s in zip(decoded, streams, strict=True):
            np.testing.assert_array_equal(got, s.symbols)


@settings(FUZZ, max_examples=80, deadline=None)
@given(st.data())
def test_corrupted_bundles_fail_alike_in_both_decoders(data):
    """A changed, dropped or added word, or a changed lane state: the same symbols or the same error."""
    assert compiled.AVAILABLE, "the compiled rANS loops were not built"
    streams, sizes, steps = _streams(data.draw)
    groups = [bytearray(g) for g in encode_groups(streams, sizes, steps)]
    g = data.draw(st.integers(0, len(groups) - 1))
    at = data.draw(st.integers(0, max(0, len(groups[g]) - 1)))
    kind = data.draw(st.sampled_from(["flip", "drop", "add"]))
    if kind == "flip" and groups[g]:
        groups[g][at] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "drop" and len(groups[g]) >= 2:
        del groups[g][len(groups[g]) - 2 :]
    else:
        groups[g] += b"\x00\x01"
    bare = [RansStream(s.n, s.table) for s in streams]
    fast, slow = _both(lambda: decode_groups([bytes(x) for x in groups], bare, sizes, steps))
    if isinstance(fast, str) or isinstance(slow, str):
        assert fast == slow
    else:
        assert all(np.array_equal(a, b) for a, b in zip(fast, slow, strict=True))


def _normalize_reference(weights: np.ndarray, total: int) -> np.ndarray:
    """The normalisation as the format first wrote it (a unit at a time, in Python)."""
    w = np.asarray(weights, dtype=np.int64)
    present = w > 0
    freq = np.where(present, np.maximum(1, (w * total) // int(w.sum())), 0)
    diff = total - int(freq.sum())
    order = np.argsort(-freq, kind="stable")
    while diff:
        for i in order:
            if diff == 0:
                break
            if diff > 0:
                freq[i] += 1
                diff -= 1
            elif freq[i] > 1:
                freq[i] -= 1
                diff += 1
    return freq


@settings(FUZZ, max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**20), min_size=1, max_size=300), st.sampled_from([1 << 12, 1 << 15]))
def test_frequency_normalisation_is_the_formats(weights, total):
    weights = np.asarray(weights)
    if not (weights > 0).any() or (weights > 0).sum() > total:
        return
    np.testing.assert_array_equal(normalize_weights(weights, total), _normalize_reference(weights, total))


@settings(FUZZ, max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), max_size=300), st.integers(0, 24))
def test_exp_golomb_packing_is_the_formats_and_reads_back(values, k):
    values = np.asarray(values, np.int64)
    packed = exp_golomb_pack(values, k)
    assert packed == _exp_golomb_pack_wide(values.tolist(), k)
    np.testing.assert_array_equal(exp_golomb_decode(packed, len(values), k, 1 << 32), values)
    # the order a codebook's gaps get: the shortest code, the lowest order on a tie
    lengths = [sum(2 * int((v >> j) + 1).bit_length() - 1 + j for v in values.tolist()) for j in range(25)]
    assert _cheapest_order(values) == int(np.argmin(lengths))


@settings(FUZZ, max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), max_size=200), st.integers(0, 24), st.data())
def test_compiled_exp_golomb_reads_what_python_reads_and_fails_alike(values, k, data):
    """Packed codebooks, intact or with bits flipped, cut short, padded, or read with another count
    or limit: the same values, or the same error line."""
    assert compiled.AVAILABLE, "the compiled loops were not built"
    payload = bytearray(exp_golomb_pack(np.asarray(values, np.int64), k))
    for _ in range(data.draw(st.integers(0, 3)) if payload else 0):
        payload[data.draw(st.integers(0, len(payload) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    payload = bytes(payload[: data.draw(st.integers(0, len(payload)))]) + bytes(data.draw(st.integers(0, 2)))
    count = max(0, len(values) + data.draw(st.integers(-2, 2)))
    limit = data.draw(st.sampled_from([1 << 32, 1 << 16, 1000]))
    fast, slow = _both(lambda: exp_golomb_decode(payload, count, k, limit))
    assert fast == slow if isinstance(fast, str) or isinstance(slow, str) else np.array_equal(fast, slow)


def _moved_layer0(plan: TensorPlan) -> TensorPlan:
    t = plan.tensor
    if plan.name != "layer0.weight":
        return plan
    codes = t.codes.copy()
    codes[::7] = (codes[::7] + 1) % len(t.codebook)
    return TensorPlan(plan.name, SparseTensor(t.shape, t.codebook, codes, t.positions), codebook_dtype="float16")


def test_an_entries_delta_names_the_gap_alphabet_and_a_wrong_one_is_refused(coder):
    old = PINNED.read_bytes()
    meta, plans = pinned_content()
    new = encode_sqz(meta, [_moved_layer0(p) for p in plans], PINNED_STEPS)[0]
    delta, report = make_delta(old, new)
    assert report["ops"]["entries"] == 1 and apply_delta(old, delta) == new
    head = read_delta(delta)
    op = next(op for op in head.plan["tensors"] if isinstance(op, dict))
    assert op["alphabet"] == gap_alphabets(parse_sqz(new))["layer0.weight"] in GAP_ALPHABETS
    other = next(a for a in GAP_ALPHABETS if a != op["alphabet"])  # valid, but not the writer's choice
    for alphabet, words in ((other, "not the one the delta names"), (3, "bad gap alphabet"), (2.0, "bad gap alphabet")):
        op["alphabet"] = alphabet
        forged = write_delta_file(old, new, head.plan, head.data)
        with pytest.raises(SqzError, match=words):
            apply_delta(old, forged)


def test_the_compiled_loops_refuse_arguments_they_cannot_walk():
    """Called wrongly (the codec never does), the C functions raise or return an error status, and
    read nothing outside their arrays: arrays of another type, lengths that disagree, a lane
    whose symbols lie past the output, a symbol outside its alphabet."""
    assert compiled.AVAILABLE, "the compiled rANS loops were not built"
    rans = compiled._rans
    z, one = np.zeros(1, np.int64), np.ones(1, np.int64)
    with pytest.raises(TypeError):
        rans.decode_steps(z, z, z, z, z, z, z, z, z, z, z, z, z)  # the probability bits missing
    with pytest.raises(TypeError):
        rans.decode_steps(*[np.zeros(1, np.int32)] * 13, 15)  # not int64
    freq, cum, offsets = np.array([1 << 15], np.int64), np.zeros(1, np.int64), np.array([0, 1], np.int64)
    lane = dict(group=z, count=one * 3, pos=z, stride=one, stream=z)
    out = np.zeros(2, np.int64)  # three symbols do not fit
    args = (one * 65536, out, z.copy(), z, np.array([0, 0], np.int64), *lane.values(), freq, cum, offsets, 15)
    assert rans.decode_steps(*args) == -1
    assert rans.decode_steps(*args[:-1], 17) == -1  # more probability bits than a word
    x, words, per_group = np.zeros(1, np.int64), np.zeros(4, np.int64), np.zeros(1, np.int64)
    symbols = np.array([0, 1, 0], np.int64)  # 1 is outside a one-symbol alphabet
    assert rans.encode_steps(x, words, per_group, symbols, z, one, one * 3, z, one, z, freq, cum, 15) == -1
    assert rans.encode_steps(x, words, per_group, symbols, z, one, one * 4, z, one, z, freq, cum, 15) == -3
