"""Hostile .sqz files: every truncation, bit flip or byte mutation must either fail with the
format's own error (``SqzError``, or ``WeightsError`` from the torch-side reader) or decode to
tensors whose shapes match the architecture the file describes; each decode is bounded in
time and memory. Mutated: a small synthetic file that uses every section type and coder of
both format versions, the version-1 fixture, and a real ``.sqz`` of the release."""

from __future__ import annotations

import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from conftest import ROOT
from squeezenet.errors import WeightsError
from squeezenet.weights import sqz_codec as C
from squeezenet.weights.sqz import decode_sqz_bytes

# Hypothesis keeps its examples in a temporary folder, never in the checkout
settings.register_profile(
    "sqz-fuzz", database=DirectoryBasedExampleDatabase(tempfile.mkdtemp(prefix="sqz-fuzz-hypothesis-"))
)
FUZZ = settings.get_profile("sqz-fuzz")
SMALL_LIMITS = (2.0, 32 << 20)  # seconds, bytes allocated at the peak (tracemalloc)
RELEASE_LIMITS = (10.0, 256 << 20)


def _sample() -> tuple[bytes, dict[str, tuple[int, ...]]]:
    rng = np.random.default_rng(0)
    plans = []
    schemes = [("gaps", "rans"), ("relidx4", "huffman"), ("bitmask", "raw"), ("gaps", "huffman"), ("auto", "auto")]
    for i, (scheme, coder) in enumerate(schemes):
        shape = (6, 5, 3, 3)
        mask = rng.random(shape) < 0.3
        pos = np.flatnonzero(mask)
        codes = rng.integers(1, 8, len(pos))
        cb = np.linspace(-1, 1, 8).astype(np.float32)
        cb[0] = 0.0
        t = C.SparseTensor(shape, cb, codes, pos)
        plans.append(C.TensorPlan(f"w{i}", t, positions=scheme, codes_coder=coder, gaps_coder=coder))
    # version 2: a packed codebook, a rANS table worth deflating, deflated dense values
    codes = np.minimum(rng.geometric(0.05, 800) - 1, 199)
    positions = np.sort(rng.choice(1600, 800, replace=False))
    big = C.SparseTensor((40, 40), np.sort(rng.normal(size=200)).astype(np.float32), codes, positions)
    plans.append(C.TensorPlan("packed", big, codebook_dtype="float16", codes_coder="rans"))
    plans.append(C.TensorPlan("b", np.repeat(rng.normal(size=3), 4).astype(np.float32)))
    meta = {"name": "fuzz", "classes": C.shared_values()["imagenet1k.names"]}  # shared metadata (v2)
    data = C.encode_sqz(meta, plans, steps=16)[0]
    return data, {p.name: tuple(np.shape(p.tensor) if isinstance(p.tensor, np.ndarray) else p.tensor.shape)
                  for p in plans}  # fmt: skip


SAMPLE, SHAPES = _sample()
V1_FIXTURE = (ROOT / "tests" / "data" / "sqz_v1_lossless.sqz").read_bytes()


@pytest.fixture(scope="module")
def release_sqz(dc_weights_path) -> bytes:
    """The release weights as a real .sqz (8-bit codebooks: the release's own values)."""
    from squeezenet.compression import CompressionConfig, compress

    return compress(dc_weights_path, CompressionConfig(bits=8, method="nearest")).to_bytes()


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


def _bounded(decode, data: bytes, limits: tuple[float, int]):
    """decode(data) -> its result, or None when it failed with the format's own error; asserts
    that it took less than the time and memory limits."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = decode(data)
    except (C.SqzError, WeightsError):
        result = None
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert seconds < limits[0], f"decode took {seconds:.1f} s"
    assert peak < limits[1], f"decode allocated {peak >> 20} MiB at its peak"
    return result


def _check_sample(data: bytes) -> None:
    """A mutant of the synthetic file: an error, or exactly the tensors and shapes it declares."""
    out = _bounded(lambda d: C.decode_sqz(d, expected_shapes=SHAPES), data, SMALL_LIMITS)
    if out is not None:
        _, tensors = out
        assert {k: v.shape for k, v in tensors.items()} == SHAPES


def _check_model_file(data: bytes, limits=SMALL_LIMITS) -> None:
    """A mutant of a model file: an error, or weights whose shapes are those of its spec's model."""
    loaded = _bounded(decode_sqz_bytes, data, limits)
    if loaded is not None:
        import torch

        from squeezenet.models import from_spec

        info = loaded.info
        with torch.device("meta"):
            model = from_spec(info.spec, num_classes=info.num_classes, in_chans=info.in_chans)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in loaded.state_dict.items()} == expected


def _mutate(rng, data: bytes) -> bytes:
    data = bytearray(data)
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
    return _refresh_crcs(data) if rng.random() < 0.8 else bytes(data)


def test_samples_decode():
    meta, tensors = C.decode_sqz(SAMPLE, expected_shapes=SHAPES)
    assert meta["name"] == "fuzz" and len(meta["classes"]) > 10_000 and len(tensors) == 7
    assert struct.unpack_from("<H", SAMPLE, 4)[0] == C.VERSION and struct.unpack_from("<H", V1_FIXTURE, 4)[0] == 1
    _check_model_file(V1_FIXTURE)


@settings(FUZZ, max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255), st.booleans())
def test_hypothesis_byte_mutation(offset, value, fix_crc):
    data = bytearray(SAMPLE)
    data[offset] = value
    _check_sample(_refresh_crcs(data) if fix_crc else bytes(data))


@settings(FUZZ, max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(V1_FIXTURE) - 1), st.integers(0, 255))
def test_hypothesis_version1_fixture_mutation(offset, value):
    data = bytearray(V1_FIXTURE)
    data[offset] = value
    _check_model_file(_refresh_crcs(data))


@settings(FUZZ, max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_hypothesis_garbage(blob):
    _check_sample(C.MAGIC + blob)
    for version in (1, 2):
        _check_sample(_refresh_crcs(bytearray(C.MAGIC + struct.pack("<HHI", version, 0, 3) + blob + b"\0" * 8)))


def test_random_mutations_and_truncations():
    rng = np.random.default_rng(1)
    for _ in range(200):  # a fixed count, not a time budget: every run tries the same mutants
        _check_sample(_mutate(rng, SAMPLE))


def test_release_file_mutations(release_sqz):
    """A few mutants of the real release file in every run; the slow test below tries many."""
    rng = np.random.default_rng(2)
    _check_model_file(release_sqz, RELEASE_LIMITS)
    for _ in range(3):
        _check_model_file(_mutate(rng, release_sqz), RELEASE_LIMITS)


@pytest.mark.slow
def test_release_file_many_mutations(release_sqz):
    rng = np.random.default_rng(3)
    for _ in range(20):
        _check_model_file(_mutate(rng, release_sqz), RELEASE_LIMITS)
    # mutations aimed at the headers, where lengths and counts live
    for _ in range(20):
        data = bytearray(release_sqz)
        i = int(rng.integers(0, 4000))
        data[i] = int(rng.integers(256))
        _check_model_file(_refresh_crcs(data), RELEASE_LIMITS)


def test_torch_wrapper_gives_weights_error():
    with pytest.raises(WeightsError):
        decode_sqz_bytes(SAMPLE[:-3])
    with pytest.raises(WeightsError, match="metadata"):
        decode_sqz_bytes(SAMPLE)  # valid container, but no architecture in the metadata


def test_hypothesis_keeps_its_examples_outside_the_checkout():
    """Each fuzz test's example database lies in a temporary folder, not in the checkout (the
    default, ``.hypothesis/`` in the working folder, would be the project root in CI). It once
    was checked by looking for "*sqz*" files in ``.hypothesis/``, which Hypothesis names by hash:
    that check could not fail."""
    root = Path(ROOT).resolve()
    fuzzed = [test_hypothesis_byte_mutation, test_hypothesis_version1_fixture_mutation, test_hypothesis_garbage]
    for test in fuzzed:
        database = test._hypothesis_internal_use_settings.database
        folder = Path(database.path).resolve()
        assert folder != root and root not in folder.parents, f"{test.__name__} keeps examples in {folder}"
    default = settings.get_profile("default").database  # what a test without FUZZ would use
    assert root in Path(default.path).resolve().parents or not hasattr(default, "path")


def test_codec_folder_loads_by_path_without_torch_or_squeezenet(tmp_path):
    """What the torch-free runtime does (the recipe in the package's docstring): the codec's folder,
    loaded by path as a package, decodes the sample with neither torch nor squeezenet importable."""
    folder = ROOT / "src" / "squeezenet" / "weights" / "sqz_codec"
    (tmp_path / "a.sqz").write_bytes(SAMPLE)
    code = (
        "import importlib.util, sys\n"
        "sys.modules['torch'] = sys.modules['squeezenet'] = None\n"
        f"spec = importlib.util.spec_from_file_location('codec', {str(folder / '__init__.py')!r},\n"
        f"                                              submodule_search_locations=[{str(folder)!r}])\n"
        "codec = sys.modules['codec'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(codec)\n"
        f"meta, tensors = codec.decode_sqz(open({str(tmp_path / 'a.sqz')!r}, 'rb').read())\n"
        "print(meta['name'], len(tensors), sum(float(abs(t).sum()) for t in tensors.values()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    tensors = C.decode_sqz(SAMPLE)[1]
    assert out.stdout.split() == ["fuzz", "7", str(sum(float(abs(t).sum()) for t in tensors.values()))]


def test_a_cut_file_is_called_truncated_without_a_number_read_from_its_last_bytes():
    """The recorded length lives in the last 8 bytes: in a cut file those are other data, so
    the message once said "header says 2772906385"."""
    data, _ = _sample()
    with pytest.raises(C.SqzError) as caught:
        C.decode_sqz(data[: len(data) - 100])
    message = str(caught.value)
    assert message == f"truncated or padded .sqz file ({len(data) - 100:,} bytes do not match its recorded length)"
