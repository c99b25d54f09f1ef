"""C export: the generated C equals the NumPy reference bit for bit (gcc, clang, 32-bit, Cortex-M3
under QEMU), agrees with the fp32 model, keeps compressed weights compressed, and refuses bad input
with one line and nothing written.

Most tests use a SqueezeNet adapted to 32 px (the CIFAR-10 benchmark's: padded 3x3 stem without a
pool, simple bypass, BatchNorm folded) with random weights, on real images cropped to 32 px: small
enough to compile and run in seconds. The v1.0 release runs at its own 227 px in two slow tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, ROOT
from conftest import cli_in_process as cli
from squeezenet.cli.main import main
from squeezenet.compression.output_aware import round_to_grid
from squeezenet.data.preprocessing import Preprocessing
from squeezenet.export.c import build_c, reference, write_folder
from squeezenet.export.c.arena import buffers, plan, plan_arena
from squeezenet.export.c.arithmetic import (
    codebook_limit,
    quantize_multiplier,
    requantize,
)
from squeezenet.export.c.pixels import crop_pixels, normalized
from squeezenet.export.c.streams import decode_layer, encode_layer
from squeezenet.models import from_spec
from squeezenet.models.fold import fold_batchnorm
from squeezenet.models.spec import V1_1_CIFAR, SqueezeNetSpec
from squeezenet.weights import build_model_from_weights
from squeezenet.weights.info import WeightsInfo
from squeezenet.weights.project_format import state_dict_to_loaded, write_safetensors

sys.path.insert(0, str(ROOT / "benchmarks"))  # the build-and-run harness lives with the benchmark that shares it
try:
    import c_toolchain as tc
finally:
    sys.path.remove(str(ROOT / "benchmarks"))

CIFAR_LIKE = V1_1_CIFAR  # squeezenet_cifar
PRE_32 = Preprocessing(resize=32, crop=32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
ASAN = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all")
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _save(model, info: WeightsInfo, path: Path) -> Path:
    return write_safetensors(state_dict_to_loaded(model, info), path)


def random_cifar_like(
    path: Path, spec: SqueezeNetSpec = CIFAR_LIKE, seed: int = 0, pre: Preprocessing = PRE_32
) -> Path:
    """Random weights with non-trivial BatchNorm statistics, folded (what training exports)."""
    torch.manual_seed(seed)
    model = from_spec(spec, num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.2)
    folded = fold_batchnorm(model) if spec.batch_norm else model
    return _save(folded, WeightsInfo("squeezenet_cifar", folded.spec, 10, 3, pre, classes=CLASSES), path)


def sample_images(folder: Path, pre: Preprocessing, count: int, parity: int) -> tuple[np.ndarray, list[Path]]:
    files = [f for i, f in enumerate(sorted(folder.rglob("*.JPEG"))) if i % 2 == parity][:count]
    return np.stack([crop_pixels(pre, f) for f in files]), files


@pytest.fixture(scope="module")
def cifar_like_path(tmp_path_factory):
    return random_cifar_like(tmp_path_factory.mktemp("cifar_like") / "cifar_like.safetensors")


@pytest.fixture(scope="module")
def cifar_like(cifar_like_path, imagenet_samples):
    """(weights path, model, calibration pixels, test pixels): calibrated on even-, tested on odd-indexed images."""
    path = cifar_like_path
    model = build_model_from_weights(path).eval()
    calibration, _ = sample_images(imagenet_samples, PRE_32, 16, 0)
    test, _ = sample_images(imagenet_samples, PRE_32, 4, 1)
    return path, model, calibration, test


@pytest.fixture(scope="module")
def cifar_like_c(cifar_like, tmp_path_factory):
    """The int8 export of the 32-px model and its reference scores on the test images."""
    _, model, calibration, test = cifar_like
    net, files, facts = build_c(model, normalized(PRE_32, calibration), storage="int8")
    folder = write_folder(files, tmp_path_factory.mktemp("c") / "cifar_like")
    return folder, net, facts, reference.run_batch(net, test)


# ----------------------------------------------------------------------------- integer formulas


@pytest.mark.parametrize("real", [1e-9, 3.1e-5, 0.0123, 0.4999999, 0.5, 0.75, 1.0, 3.7])
def test_quantize_multiplier_is_close_and_normalised(real):
    m, n = quantize_multiplier(real)
    assert 1 << 30 <= m < 1 << 31 and 1 <= n <= 62
    assert abs(m * 2.0**-n - real) <= real * 2.0**-30


def test_quantize_multiplier_refuses_what_does_not_fit():
    for bad in (0.0, -1.0, float("inf"), 2.0**32, 1e-30):
        with pytest.raises(ValueError):
            quantize_multiplier(bad)


def test_requantize_rounds_half_up_saturates_and_clamps_negatives():
    m, n = 1 << 30, 31  # times 0.5
    acc = np.array([-5, 0, 1, 2, 3, 509, 510, 511, 2**31 - 1])
    assert requantize(acc, m, n).tolist() == [0, 0, 1, 1, 2, 255, 255, 255, 255]  # 0.5 -> 1, 1.5 -> 2


def test_codebook_limit_keeps_every_sum_of_products_inside_int32():
    """A compressed layer's codebook is as wide as its accumulator allows, and no wider."""
    for products in (1, 9, 147, 576, 4608):
        limit = codebook_limit(products)
        assert products * 255 * limit < 2**30 <= products * 255 * (limit + 1) or limit == 32767
    assert codebook_limit(576) == 7310 and codebook_limit(147) == 28644 and codebook_limit(1) == 32767


def test_round_to_grid_moves_the_outputs_less_than_nearest_rounding_and_keeps_zeros():
    """Error feedback: the same int8 grid, a smaller output error on correlated inputs (what a
    convolution sees), every integer on the grid, pruned weights still zero."""
    rng = np.random.default_rng(0)
    # correlated inputs, as neighbouring pixels and channels are: 12 factors and a little noise
    x = rng.normal(size=(4000, 12)) @ rng.normal(size=(12, 48)) + 0.1 * rng.normal(size=(4000, 48))
    w = rng.normal(size=(16, 48))
    w[rng.random(w.shape) < 0.3] = 0.0
    step = np.abs(w).max(axis=1) / 127
    covariance = x.T @ x / len(x)
    q = round_to_grid(w, step, 127, covariance)
    nearest = np.round(w / step[:, None])

    def output_error(ints):
        return float(np.mean((x @ (w - ints * step[:, None]).T) ** 2))

    assert np.abs(q).max() <= 127 and q.dtype == np.int64
    assert np.all(q[w == 0] == 0)
    assert output_error(q) < 0.5 * output_error(nearest)
    # with uncorrelated inputs of equal power there is nothing to compensate through: nearest rounding
    assert np.array_equal(round_to_grid(w, step, 127, np.eye(48), damp=0.0), nearest)


# ----------------------------------------------------------------------------- weight streams


@pytest.mark.parametrize(
    ("numel", "density", "alphabet"),
    [(4096, 1.0, 200), (4096, 0.33, 90), (20000, 0.02, 7), (500, 0.5, 1), (9, 1 / 9, 2)],
)
def test_layer_stream_round_trip(numel, density, alphabet):
    rng = np.random.default_rng(numel)
    positions = np.flatnonzero(rng.random(numel) < density) if density < 1 else np.arange(numel)
    positions = positions if len(positions) else np.array([numel - 1])
    codes = rng.zipf(1.3, len(positions)) % alphabet
    stream = encode_layer(positions, codes, numel, alphabet)
    assert stream.gap_alphabet == (0 if density == 1 else stream.gap_alphabet) and stream.entries == len(codes)
    got_positions, got_codes = decode_layer(stream, numel)
    assert np.array_equal(got_positions, positions) and np.array_equal(got_codes, codes)


def test_layer_stream_is_near_the_entropy():
    rng = np.random.default_rng(1)
    codes = rng.choice(100, 30000, p=np.arange(1, 101) / 5050)
    stream = encode_layer(np.arange(30000), codes, 30000, 100)
    p = np.bincount(codes) / len(codes)
    entropy_bytes = -(p[p > 0] * np.log2(p[p > 0])).sum() * len(codes) / 8
    assert 2 * len(stream.words) < entropy_bytes * 1.01 + 8


# ----------------------------------------------------------------------------- arena planning


def test_greedy_plan_never_overlaps_live_buffers():
    from squeezenet.export.c.arena import Buffer

    rng = np.random.default_rng(2)
    bufs = [Buffer(f"b{i}", int(rng.integers(1, 5000)), f, f + int(rng.integers(0, 4))) for i, f in
            enumerate(rng.integers(0, 20, 60))]  # fmt: skip
    size = plan(bufs)
    for a in bufs:
        assert a.offset % 16 == 0 and a.offset + a.size <= size
        for b in bufs:
            if a is not b and a.overlaps_in_time(b):
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
    peak = max(sum(b.size for b in bufs if b.first <= t <= b.last) for t in range(24))
    assert peak <= size < 2 * peak


@pytest.mark.slow
def test_v1_1_at_224_fits_512_kb_with_its_measured_stack(tmp_path):
    """The issue's RAM target, measured: the planned arena, the layer descriptors the weight table is
    bound into (Cortex-M3 static data beyond the arena) and gcc's worst call chain of stack."""
    from squeezenet.weights import create_model

    model = create_model("squeezenet1_1").eval()
    calibration = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    net, files, facts = build_c(model, calibration, method="minmax", storage="int8")
    arena, bufs = plan_arena(net)
    assert facts["arena_bytes"] == arena and net.size == 224
    assert bufs["stem.ring"].size == 2 * 3 * 64 * 111  # 12-bit conv1 is never held whole (1,577,088 bytes)
    write_folder(files, tmp_path / "v11")
    stack = tc.stack_usage(tmp_path / "v11")["worst_chain_bytes"]
    assert 0 < stack < 4096
    arm = (f"-mcpu={tc.ARM_CPU}", "-mthumb", "-O2")
    obj = tc.compile_object(tmp_path / "v11" / "squeezenet_model.c", tmp_path / "m.o", "arm-none-eabi-gcc", arm)
    descriptors = tc.static_ram_bytes(tc.section_sizes(obj, "arm-none-eabi-size")) - arena  # bound to the table
    assert 0 < descriptors < 4096
    assert arena + descriptors + stack <= 512_000, (arena, descriptors, stack)


@pytest.mark.slow
def test_every_buffer_fits_its_tensor(cifar_like_c):
    _, net, _, _ = cifar_like_c
    bufs = {b.name: b for b in buffers(net)}
    assert bufs["stem.out"].size == 2 * 64 * 32 * 32  # no stem pool: conv1's 12-bit output feeds fire2
    assert bufs["fire2.squeeze"].size == 2 * 16 * 34 * 34  # 12-bit (uint16), zero border for the 3x3 expand
    assert "fire2.plane" in bufs and "fire3.plane" not in bufs  # an unpooled channel only where a Fire pools
    assert bufs["fire2.out"].size == 128 * 16 * 16  # pooled as each channel is computed
    assert bufs["fire2.out"].last == 4  # fire3's bypass reads it at fire3's expand (step 4)


# ----------------------------------------------------------------------------- compile and run


@pytest.mark.slow
@pytest.mark.parametrize(
    ("compiler", "flags"),
    [
        ("gcc", ("-O3", "-march=native")),  # the AVX-512 VNNI path where the CPU has it
        ("gcc", ("-O3", "-march=native", "-DSQN_VNNI=0")),  # the portable loops on the same CPU
        ("gcc", ("-O1", "-march=native", *ASAN)),  # no read or write outside a buffer, no undefined behaviour
        ("gcc", ("-O2", "-m32")),
        ("clang", ("-O2", "-march=native")),
    ],
    ids=["gcc-native", "gcc-portable", "gcc-native-asan", "gcc-m32", "clang-native"],
)
def test_c_equals_reference_bit_for_bit(cifar_like_c, cifar_like, compiler, flags, tmp_path):
    folder, _, _, expected = cifar_like_c
    test = cifar_like[3]
    exe = tc.compile_host(folder, tc.harness_source(test), tmp_path / "run", compiler, flags)
    got = tc.run_program([str(exe)])
    assert np.array_equal(got.scores, expected)
    assert np.array_equal(got.top1, expected.argmax(axis=1))


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.slow
def test_native_int8_build_takes_the_vnni_path_exactly_where_the_cpu_has_it(cifar_like_c, tmp_path):
    """-march=native compiles the AVX-512 VNNI kernels in on a CPU that has them and only there (the
    bit-exactness test above then covers whichever path this CPU takes); -DSQN_VNNI=0 turns them off."""
    folder = cifar_like_c[0]
    has_vnni = {"avx512f", "avx512bw", "avx512_vnni"} <= _cpu_flags()
    native = ("-O2", "-march=native")
    assert tc.takes_vnni_path("gcc", native) == has_vnni
    assert not tc.takes_vnni_path("gcc", (*native, "-DSQN_VNNI=0"))
    assert not tc.takes_vnni_path("gcc", ("-O2",))  # baseline x86-64: no AVX-512
    for flags, expected in ((native, has_vnni), ((*native, "-DSQN_VNNI=0"), False)):
        obj = tc.compile_object(folder / "squeezenet_model.c", tmp_path / "m.o", "gcc", flags)
        symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True, timeout=60, check=True).stdout
        assert ("sqn_vnni_quads" in symbols) == expected, flags


@pytest.mark.slow
def test_reference_agrees_with_fp32_on_real_images(cifar_like, cifar_like_c):
    _, model, _, test = cifar_like
    _, net, _, scores = cifar_like_c
    with torch.no_grad():
        fp32 = model(torch.from_numpy(normalized(PRE_32, test))).numpy()
    # random weights: a weak floor on top-1, a strong one on the scores themselves
    assert (fp32.argmax(axis=1) == scores.argmax(axis=1)).sum() >= 3
    for a, b in zip(fp32, scores * net.score_scale, strict=True):
        assert np.corrcoef(a, b)[0, 1] > 0.98


def test_grayscale_strided_pooled_model_with_padded_conv10_is_bit_exact(tmp_path, imagenet_samples):
    """The other geometry: 1 input channel, a strided stem with its row-by-row max pool, a pooled
    Fire without bypass, conv10 with Caffe's pad 1, an odd input side (ceil-mode windows)."""
    from squeezenet.models.spec import FireSpec

    spec = SqueezeNetSpec(8, 3, 2, (FireSpec(4, 8, 8), FireSpec(4, 8, 8), FireSpec(8, 16, 16)), (1,),
                          classifier_padding=1)  # fmt: skip
    torch.manual_seed(3)
    pre = Preprocessing(resize=43, crop=43, mean=(0.45,), std=(0.25,), channel_order="L")
    model = from_spec(spec, num_classes=5, in_chans=1).eval()
    path = _save(model, WeightsInfo("gray", spec, 5, 1, pre), tmp_path / "gray.safetensors")
    model = build_model_from_weights(path).eval()
    calibration, _ = sample_images(imagenet_samples, pre, 8, 0)
    test, _ = sample_images(imagenet_samples, pre, 3, 1)
    assert test.shape == (3, 43, 43, 1)
    with torch.no_grad():
        fp32 = model(torch.from_numpy(normalized(pre, test))).numpy()
    errors = {}
    for bits in (8, 12):  # conv1 and squeeze outputs as uint8 (quads on the VNNI path) and as uint16 (pairs)
        net, files, _ = build_c(model, normalized(pre, calibration), method="minmax", squeeze_bits=bits, stem_bits=bits)
        folder = write_folder(files, tmp_path / f"c{bits}")
        expected = reference.run_batch(net, test)
        for flags in (("-O1",), ("-O1", "-march=native", *ASAN)):  # portable loops; the VNNI path if the CPU has it
            exe = tc.compile_host(folder, tc.harness_source(test), tmp_path / "run", "gcc", flags)
            assert np.array_equal(tc.run_program([str(exe)]).scores, expected), (bits, flags)
        for a, b in zip(fp32, expected * net.score_scale, strict=True):
            assert np.corrcoef(a, b)[0, 1] > 0.95
        errors[bits] = float(np.abs(expected * net.score_scale - fp32).mean())
    assert errors[12] < errors[8], errors  # finer conv1 and squeeze outputs: scores closer to fp32


@pytest.mark.slow
def test_cortex_m3_under_qemu_gives_the_host_scores(cifar_like_c, cifar_like, tmp_path):
    """arm-none-eabi-gcc for a Cortex-M3, run on QEMU's MPS2 board with semihosting."""
    folder, _, facts, expected = cifar_like_c
    test = cifar_like[3][:2]
    elf = tc.build_arm(folder, tc.harness_source(test), tmp_path / "run.elf")
    got = tc.run_qemu(elf, timeout=300)
    assert np.array_equal(got.scores, expected[:2])
    assert got.instructions is not None and (got.instructions > 1_000_000).all()
    sizes = tc.section_sizes(tmp_path / "squeezenet_model.arm.o", "arm-none-eabi-size")
    assert sizes.get(".bss", 0) >= facts["arena_bytes"]  # the arena is the one big RAM object
    stack = tc.stack_usage(folder, "arm-none-eabi-gcc", tc.ARM_FLAGS[:3])["worst_chain_bytes"]
    assert facts["arena_bytes"] + stack <= 320_000


@pytest.fixture(scope="module")
def cifar_like_sqz(cifar_like, tmp_path_factory):
    """The same model through ``squeezenet compress`` (8-bit codebooks, half its weights pruned; the
    quick nearest-centroid method: the C export takes any codebook)."""
    path = tmp_path_factory.mktemp("sqz") / "cifar_like.sqz"
    assert main(["compress", "-w", str(cifar_like[0]), "-o", str(path), "--density", "0.5", "--method", "nearest"]) == 0
    return path


@pytest.mark.slow
def test_compressed_build_runs_the_codebook_exactly_and_keeps_weights_small(cifar_like, cifar_like_sqz, tmp_path):
    """The compressed build multiplies by the codebook's own values (no int8 rounding of them), so
    its scores follow the fp32 .sqz model more closely than the int8 build's, bit-exact with the
    reference, in about the .sqz's bytes."""
    _, _, calibration, test = cifar_like
    model = build_model_from_weights(cifar_like_sqz).eval()
    data = normalized(PRE_32, calibration)
    outputs, weight_bytes, nets = {}, {}, {}
    for storage in ("int8", "compressed"):
        nets[storage], files, _ = build_c(model, data, storage=storage)
        folder = write_folder(files, tmp_path / storage)
        exe = tc.compile_host(folder, tc.harness_source(test), tmp_path / f"{storage}.run")
        outputs[storage] = tc.run_program([str(exe)]).scores
        obj = tc.compile_object(folder / "squeezenet_weights.c", tmp_path / f"{storage}.o")
        weight_bytes[storage] = tc.data_bytes(tc.section_sizes(obj))
        assert nets[storage].storage == storage
        assert np.array_equal(outputs[storage], reference.run_batch(nets[storage], test))
    compressed = nets["compressed"]
    assert all(conv.weight.dtype == np.int16 and len(set(conv.mult)) == 1 for conv in compressed.convs()[1:])
    assert max(int(np.abs(conv.weight).max()) for conv in compressed.convs()) > 127  # wider than int8
    with torch.no_grad():
        fp32 = model(torch.from_numpy(normalized(PRE_32, test))).numpy()
    error = {s: np.abs(outputs[s] * nets[s].score_scale - fp32).mean() for s in outputs}
    assert error["compressed"] < error["int8"], error
    assert weight_bytes["compressed"] < 0.75 * weight_bytes["int8"]
    assert weight_bytes["compressed"] < 1.05 * cifar_like_sqz.stat().st_size  # about the .sqz file itself


@pytest.fixture(scope="module")
def release_sqz(dc_weights_path, tmp_path_factory):
    """The v1.0 release through ``squeezenet compress --method nearest`` (seconds; the default,
    output-aware method takes minutes here: benchmarks/bench_export_c.py records its figures)."""
    path = tmp_path_factory.mktemp("release") / "v1_0.sqz"
    assert main(["compress", "-w", str(dc_weights_path), "-o", str(path), "--method", "nearest"]) == 0
    return path


@pytest.mark.slow
def test_release_compressed_in_c_under_470_kb_bit_exact_and_agreeing(release_sqz, imagenet_samples, tmp_path):
    """The issue's flash target, and the .sqz model's fp32 top-1 on a few real 227-px images."""
    model = build_model_from_weights(release_sqz).eval()
    pre = model.weights_info.preprocessing
    calibration, _ = sample_images(imagenet_samples, pre, 16, 0)
    test, _ = sample_images(imagenet_samples, pre, 8, 1)
    net, files, _ = build_c(model, normalized(pre, calibration), storage="auto", weights_are_compressed=True)
    assert net.storage == "compressed"
    folder = write_folder(files, tmp_path / "v1_0")
    weights = tc.section_sizes(tc.compile_object(folder / "squeezenet_weights.c", tmp_path / "w.o"))
    assert tc.data_bytes(weights) <= 470_000
    assert 1_000 * 1_000 > tc.data_bytes(weights) > 400_000  # all 1000 classes: conv10 is inside
    exe = tc.compile_host(folder, tc.harness_source(test), tmp_path / "run", "gcc", ("-O3", "-march=native"))
    got = tc.run_program([str(exe)])
    assert np.array_equal(got.scores, reference.run_batch(net, test))
    with torch.no_grad():
        fp32 = model(torch.from_numpy(normalized(pre, test))).numpy()
    # the release's top-1 is fragile (docs/c-export.md: 92-95 % agreement on 250 images, while fp32
    # itself flips up to 2 % under invisible input noise): a loose floor on top-1, strict ones below it
    assert (fp32.argmax(axis=1) == got.top1).sum() >= 5
    top5 = np.argsort(-fp32, axis=1)[:, :5]
    assert all(c in row for c, row in zip(got.top1, top5, strict=True))
    for a, b in zip(fp32, got.scores * net.score_scale, strict=True):
        assert np.corrcoef(a, b)[0, 1] > 0.98


@pytest.mark.slow
def test_release_int8_at_227_is_bit_exact_on_the_native_build(imagenet_samples, tmp_path):
    """v1.0's geometry (7x7 stride-2 conv1 with its pool, pooled Fires, 1000 classes) through the
    -march=native build (the AVX-512 VNNI path where the CPU has it), under AddressSanitizer."""
    model = build_model_from_weights(DATA / "deepcompression" / "compressed_SqueezeNet.net").eval()
    pre = model.weights_info.preprocessing
    calibration, _ = sample_images(imagenet_samples, pre, 8, 0)
    test, _ = sample_images(imagenet_samples, pre, 2, 1)
    net, files, _ = build_c(model, normalized(pre, calibration), storage="int8")
    folder = write_folder(files, tmp_path / "v1_0")
    exe = tc.compile_host(folder, tc.harness_source(test), tmp_path / "run", "gcc", ("-O1", "-march=native", *ASAN))
    assert np.array_equal(tc.run_program([str(exe)]).scores, reference.run_batch(net, test))


# ----------------------------------------------------------------------------- command line


def one_error_line(rc, err: str, *fragments: str) -> str:
    assert rc not in (0, None) and "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("squeezenet: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.slow
def test_cli_exports_a_folder_whose_demo_classifies_a_ppm(capsys, cifar_like, imagenet_samples, tmp_path):
    path, _, _, test = cifar_like
    calibration = [f for i, f in enumerate(sorted(imagenet_samples.rglob("*.JPEG"))) if i % 2 == 0][:8]
    rc, out, err = cli(capsys, "export", "--format", "c", "-w", path, "-o", tmp_path / "out", "--calibration",
                       *calibration, "--calibration-method", "minmax")  # fmt: skip
    assert rc == 0, err
    assert "int8 weights" in out and "arena:" in out and "stem.out" in out
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert names == {"squeezenet_model.h", "squeezenet_model.c", "squeezenet_weights.c", "squeezenet_weights.bin",
                     "squeezenet_labels.c", "squeezenet_example.c", "README.md"}  # fmt: skip
    header = (tmp_path / "out" / "squeezenet_model.h").read_text()
    arena = int(header.split("SQUEEZENET_ARENA_BYTES ")[1].split("u")[0])
    assert f"arena: {arena:,} bytes" in out
    folder = tmp_path / "out"
    sources = [str(folder / n) for n in ("squeezenet_example.c", *tc.LIBRARY, "squeezenet_labels.c")]
    subprocess.run(["gcc", *tc.STRICT, "-O2", *sources, "-o", str(tmp_path / "demo")], check=True)
    ppm = tmp_path / "image.ppm"
    ppm.write_bytes(b"P6\n32 32\n255\n" + test[0].tobytes())
    lines = subprocess.run([str(tmp_path / "demo"), str(ppm)], capture_output=True, text=True, check=True).stdout
    best = lines.splitlines()[0].split("\t")
    assert len(lines.splitlines()) == 5 and best[3] in CLASSES
    bad = subprocess.run([str(tmp_path / "demo"), str(path)], capture_output=True, text=True)
    assert bad.returncode == 1 and "PPM" in bad.stderr


def test_cli_usage_errors_are_one_line(capsys, tmp_path):
    rc, _, err = cli(capsys, "export", "--format", "c", "-w", "x.sqz", "-o", tmp_path / "o")
    one_error_line(rc, err, "--format c needs --calibration")
    rc, _, err = cli(capsys, "export", "-w", "x.sqz", "-o", tmp_path / "o.onnx", "--c-weights", "int8")
    one_error_line(rc, err, "--c-weights: only with --format c")
    rc, _, err = cli(capsys, "export", "-w", "x.sqz", "-o", tmp_path / "o.onnx", "--squeeze-bits", "12")
    one_error_line(rc, err, "--squeeze-bits: only with --format c")
    rc, _, err = cli(capsys, "export", "-w", "x.sqz", "-o", tmp_path / "o.onnx", "--stem-bits", "8")
    one_error_line(rc, err, "--stem-bits: only with --format c")
    rc, _, err = cli(capsys, "export", "--format", "c", "-w", "x.sqz", "-o", tmp_path / "o", "--squeeze-bits", "10")
    assert rc == 2 and err.count("\n") == 1 and "--squeeze-bits: invalid choice: 10 (choose from 8, 12)" in err
    rc, _, err = cli(capsys, "export", "--format", "c", "--int8", "-w", "x.sqz", "-o", tmp_path / "o")
    one_error_line(rc, err, "--int8 needs --format onnx")
    assert list(tmp_path.iterdir()) == []


def test_cli_output_under_a_regular_file_is_one_line(capsys, cifar_like_path, imagenet_samples, tmp_path):
    """Works as root too: no permission bit is involved, a file simply cannot hold a folder."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, out, err = cli(capsys, "export", "--format", "c", "-w", cifar_like_path, "-o", blocker / "out",
                       "--calibration", imagenet_samples)  # fmt: skip
    one_error_line(rc, err, "a_file is not a folder")
    rc, out, err = cli(capsys, "export", "--format", "c", "-w", cifar_like_path, "-o", blocker,
                       "--calibration", imagenet_samples)  # fmt: skip
    one_error_line(rc, err, "exists and is not a folder")
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_cli_refuses_the_complex_bypass_and_non_codebook_compression(capsys, imagenet_samples, tmp_path):
    complex_path = random_cifar_like(tmp_path / "complex.safetensors", CIFAR_LIKE.with_bypass("complex"))
    plain_path = random_cifar_like(tmp_path / "plain.safetensors")
    image = next(imagenet_samples.rglob("*.JPEG"))
    rc, _, err = cli(
        capsys, "export", "--format", "c", "-w", complex_path, "-o", tmp_path / "a", "--calibration", image
    )
    one_error_line(rc, err, "complex bypass")
    rc, _, err = cli(capsys, "export", "--format", "c", "-w", plain_path, "-o", tmp_path / "b", "--calibration", image,
                     "--c-weights", "compressed")  # fmt: skip
    one_error_line(rc, err, "distinct weight values", "at most 256")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["complex.safetensors", "plain.safetensors"]


@pytest.mark.parametrize("storage", ["int8", "compressed"])
def test_a_squeeze_too_wide_for_12_bit_inputs_is_refused_before_anything_is_written(storage, imagenet_samples):
    """An expand 3x3 on 232 squeeze channels sums 2,088 products per output: with 12-bit inputs and
    int8 (or codebook) weights that can pass 2^30, so the export refuses it with the way out; with
    8-bit squeeze outputs the same model exports."""
    from squeezenet.errors import DeployError
    from squeezenet.models.spec import FireSpec

    spec = SqueezeNetSpec(8, 3, 1, (FireSpec(232, 8, 8),), (), stem_pool=False)
    torch.manual_seed(0)
    model = from_spec(spec, num_classes=3).eval()
    if storage == "compressed":  # a codebook of 16 values per layer
        with torch.no_grad():
            for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
                conv.weight.copy_(torch.round(conv.weight / conv.weight.abs().max() * 8) / 8)
    model.weights_info = WeightsInfo("wide", spec, 3, 3, PRE_32)
    data = normalized(PRE_32, sample_images(imagenet_samples, PRE_32, 2, 0)[0])
    refusal = r"expand3x3: 2088 .*weights per output on inputs up to 4095 .*--squeeze-bits 8"
    with pytest.raises(DeployError, match=refusal):
        build_c(model, data, storage=storage, squeeze_bits=12)
    net, _, _ = build_c(model, data, storage=storage, squeeze_bits=8)
    assert net.squeeze_max == 255


def test_a_bypass_on_the_wide_conv1_output_is_refused(imagenet_samples):
    """fire2's identity bypass would add conv1's uint16 output to a uint8 one: refused with the way
    out (conv1 at 8 bits), which exports."""
    from squeezenet.errors import DeployError
    from squeezenet.models.spec import FireSpec

    spec = SqueezeNetSpec(16, 3, 1, (FireSpec(4, 8, 8),), (), shortcuts=("identity",), stem_pool=False)
    torch.manual_seed(0)
    model = from_spec(spec, num_classes=3).eval()
    model.weights_info = WeightsInfo("bypass", spec, 3, 3, PRE_32)
    data = normalized(PRE_32, sample_images(imagenet_samples, PRE_32, 2, 0)[0])
    with pytest.raises(DeployError, match="fire2: a bypass on conv1's wide output is not supported; use --stem-bits 8"):
        build_c(model, data, stem_bits=12)
    assert build_c(model, data, stem_bits=8)[0].stem_max == 255


def test_failed_write_leaves_no_folder(tmp_path, monkeypatch):
    """Every file is generated before the first is written; a write that fails leaves nothing."""
    from squeezenet.errors import DeployError

    real_write = Path.write_text
    calls = []

    def failing(self, text, *args, **kwargs):
        calls.append(self.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing)
    with pytest.raises(DeployError, match="No space left"):
        write_folder({"a.c": "1", "b.c": "2"}, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- benchmark


@pytest.mark.slow
def test_benchmark_tiny_run(tmp_path):
    args = ["bench_export_c.py", "--tiny", str(tmp_path / "out")]
    env = {**os.environ, "SQUEEZENET_DATA": str(DATA), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / args[0]), *args[1:]], capture_output=True,
                          text=True, timeout=900, cwd=ROOT, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads((tmp_path / "out" / "export_c.json").read_text())
    assert payload["models"] and (tmp_path / "out" / "export_c.md").read_text().startswith("# ")
