"""Deep Compression: coders, sparse schemes, the .sqz round trip, pruning, reports and the CLI."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from squeezenet.compression import (
    CompressionConfig,
    MaskKeeper,
    compress,
    iterative_prune,
    kmeans_1d,
    magnitude_masks,
    paper_tables,
    requantize,
    train_codebooks,
)
from squeezenet.compression.report import baselines, markdown
from squeezenet.errors import WeightsError
from squeezenet.models import build_architecture
from squeezenet.weights import build_model_from_weights
from squeezenet.weights import sqz_codec as C
from squeezenet.weights.info import LoadedWeights
from squeezenet.weights.sqz import read_sqz


def _skewed(n, k, seed=0):
    rng = np.random.default_rng(seed)
    p = np.exp(-np.arange(k) / max(1, k / 8))
    return rng.choice(k, size=n, p=p / p.sum())


@pytest.mark.parametrize("coder", ["raw", "huffman", "rans", "auto"])
@pytest.mark.parametrize("n,k", [(1, 1), (7, 2), (1000, 256), (5000, 37)])
def test_stream_coders_round_trip(coder, n, k):
    sym = _skewed(n, k)
    plan = C.plan_stream(sym, k, coder)
    blob = C.stream_bytes(plan)
    rans: list = []
    r = C.Reader(blob)
    got_coder, alphabet, out = C.read_stream(r, n, rans)
    if got_coder == C.CODER_RANS:
        out = C.rans_decode(C.rans_encode([plan.rans]), rans)[0]
    assert alphabet == k
    np.testing.assert_array_equal(out, sym)


def test_rans_many_streams_and_entropy():
    streams = [
        C.RansStream(len(s), C.quantize_counts(np.bincount(s, minlength=k)), s)
        for s, k in [(_skewed(20000, 256, 1), 256), (_skewed(3, 4, 2), 4), (_skewed(9000, 9, 3), 9)]
    ]
    blob = C.rans_encode(streams, steps=512)
    outs = C.rans_decode(blob, [C.RansStream(s.n, s.table) for s in streams], steps=512)
    for s, o in zip(streams, outs, strict=True):
        np.testing.assert_array_equal(o, s.symbols)
    entropy = 0.0
    for st in streams:
        counts = np.bincount(st.symbols)
        p = counts[counts > 0] / counts.sum()
        entropy += -(counts[counts > 0] * np.log2(p)).sum() / 8
    assert len(blob) < entropy * 1.01 + 1000  # within 1 % of the entropy plus lane states


def _bundle_streams():
    drawn = [(20000, 256), (3, 4), (9000, 9), (0, 2), (700, 30)]  # an empty stream among them
    streams = []
    for seed, (n, k) in enumerate(drawn, 1):
        s = _skewed(n, k, seed)
        table = C.quantize_counts(np.bincount(s, minlength=k)) if n else np.ones(1, np.uint8)
        streams.append(C.RansStream(n, table, s))
    return streams


def test_rans_groups_are_the_bundles_of_their_streams_alone_and_decode_together():
    """Version 3's point: a group's bytes do not depend on the other groups (a delta copies them),
    while one pass decodes them all."""
    streams, sizes = _bundle_streams(), [2, 1, 2]
    groups = C.encode_groups(streams, sizes, steps=512)
    firsts = np.cumsum([0, *sizes])
    for g, blob in enumerate(groups):
        alone = C.encode_groups(streams[firsts[g] : firsts[g + 1]], [sizes[g]], steps=512)
        assert alone == [blob]
    bare = [C.RansStream(s.n, s.table) for s in streams]
    for out, s in zip(C.decode_groups(groups, bare, sizes, steps=512), streams, strict=True):
        np.testing.assert_array_equal(out, s.symbols)
    one = C.rans_encode(streams, steps=512)  # versions 1 and 2: one group, no word count
    assert len(one) == sum(len(b) for b in groups) - 4 * len(groups)


def test_a_damaged_rans_group_is_refused():
    streams, sizes = _bundle_streams(), [2, 1, 2]
    groups = C.encode_groups(streams, sizes, steps=512)
    bare = [C.RansStream(s.n, s.table) for s in streams]
    for g, blob in enumerate(groups):
        head = 4 * sum(-(-s.n // 512) for s in streams[int(np.sum(sizes[:g])) :][: sizes[g]])  # lane states
        no_words = blob[:head] + struct.pack("<I", 0) + blob[head + 4 :]
        for damaged in (blob[:-2], no_words, blob[:-2] + bytes([blob[-2] ^ 1, blob[-1]])):
            bad = list(groups)
            bad[g] = damaged
            with pytest.raises(C.SqzError, match="rANS"):
                C.decode_groups(bad, bare, sizes, steps=512)


def test_huffman_beats_raw_and_is_prefix_free():
    sym = _skewed(4000, 64)
    lengths = C.huffman_lengths(np.bincount(sym, minlength=64))
    assert (np.sum(2.0 ** -lengths[lengths > 0].astype(float))) <= 1.0
    assert len(C.huffman_encode(sym, lengths)) < 4000 * 6 / 8
    np.testing.assert_array_equal(C.huffman_decode(C.huffman_encode(sym, lengths), lengths, len(sym)), sym)


@pytest.mark.parametrize("n", [20, 40, 90])
def test_huffman_lengths_stay_within_the_limit_on_fibonacci_counts(n):
    # Fibonacci counts make the deepest Huffman tree (depth n - 1): the length limit must
    # flatten them in a few tries (the earlier loop crept for ever on such counts)
    fib = [1, 1]
    while len(fib) < n:
        fib.append(fib[-1] + fib[-2])
    lengths = C.huffman_lengths(np.array(fib[:n], dtype=np.int64) * 3)
    assert 0 < lengths.max() <= C.HUFFMAN_MAX_LEN and lengths.min() > 0
    assert np.sum(2.0 ** -lengths.astype(float)) <= 1.0
    sym = np.repeat(np.arange(n), np.minimum(fib[:n], 50))
    np.testing.assert_array_equal(C.huffman_decode(C.huffman_encode(sym, lengths), lengths, len(sym)), sym)


def test_huffman_lengths_refuse_more_symbols_than_the_limit_can_code():
    with pytest.raises(C.SqzError, match="9 symbols do not fit a code of at most 3 bits"):
        C.huffman_lengths(np.ones(9, dtype=np.int64), max_len=3)
    assert C.huffman_lengths(np.ones(8, dtype=np.int64), max_len=3).tolist() == [3] * 8


@pytest.mark.parametrize("scheme", ["gaps", "relidx4", "bitmask", "auto"])
def test_position_schemes_round_trip(scheme):
    rng = np.random.default_rng(0)
    shape = (40, 30, 3, 3)
    w = (rng.normal(size=shape) * (rng.random(shape) < 0.2)).astype(np.float32)
    w.flat[-1] = 0.5  # a long run then a last entry
    t = C.SparseTensor(shape, np.array([0.0, -1.0, 0.5, 2.0], np.float32), *_codes_positions(w))
    data, _ = C.encode_sqz({"x": "y"}, [C.TensorPlan("w", t, positions=scheme)])
    meta, tensors = C.decode_sqz(data)
    assert meta == {"x": "y"}
    np.testing.assert_array_equal(tensors["w"], t.to_dense())


@pytest.mark.parametrize("density", [0.9, 0.3, 0.02, 0.0005])
def test_rans_gap_streams_sized_from_counts_are_the_ones_built_from_symbols(density):
    """The writer sizes each gap alphabet's rANS stream from the gaps' counts and builds the kept
    one's symbols alone: the counts, the plan and the stream chosen are those of the symbols."""
    from squeezenet.weights.sqz_codec.positions import GAP_ALPHABETS, _gaps_candidate, gap_counts, gap_symbols

    rng = np.random.default_rng(int(density * 1e4))
    positions = np.flatnonzero(rng.random(200_000) < density)
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    for alphabet in GAP_ALPHABETS:
        symbols = gap_symbols(positions, alphabet)
        want = np.bincount(symbols, minlength=alphabet)
        lengths = np.arange(gaps.max() + 1)
        np.testing.assert_array_equal(gap_counts(gaps, alphabet), want)
        np.testing.assert_array_equal(gap_counts(lengths, alphabet, np.bincount(gaps)), want)
        built, counted = C.plan_stream(symbols, alphabet, "rans"), C.plan_rans_counts(want, alphabet)
        assert (counted.coder, counted.header, counted.estimate) == (built.coder, built.header, built.estimate)
    best = None  # the choice as made from the symbols: the first smallest, up to the largest gap
    for alphabet in GAP_ALPHABETS:
        plan = C.plan_stream(gap_symbols(positions, alphabet), alphabet, "rans")
        if best is None or len(C.stream_bytes(plan)) + plan.estimate < best[0]:
            best = (len(C.stream_bytes(plan)) + plan.estimate, plan, alphabet)
        if alphabet > gaps.max() + 1:
            break
    _, data, streams, _, estimate = _gaps_candidate(positions, np.zeros(len(positions)), "rans")
    assert (data, estimate) == (C.stream_bytes(best[1]), best[1].estimate)
    np.testing.assert_array_equal(streams[0].symbols, gap_symbols(positions, best[2]))


def _codes_positions(w):
    pos = np.flatnonzero(w)
    codes = np.where(w.flat[pos] > 0, 2, 1).astype(np.int64)
    codes[w.flat[pos] > 1] = 3
    return codes, pos


def test_kmeans_linear_init_and_requantize():
    values = np.concatenate([np.full(50, -1.0), np.full(50, 1.0), np.full(10, 3.0)])
    c, a = kmeans_1d(values, 3)
    np.testing.assert_allclose(np.sort(c), [-1.0, 1.0, 3.0])
    assert set(a.tolist()) == {0, 1, 2}
    t = C.SparseTensor((8, 32), np.linspace(-1, 1, 256).astype(np.float32), np.arange(256), np.arange(256))
    r = requantize(t, 4)
    assert len(r.codebook) <= 16 and r.bits == 4
    assert np.abs(r.to_dense() - t.to_dense()).max() < 2 / 16


def test_codec_imports_without_torch(tmp_path):
    path = ROOT / "src" / "squeezenet" / "weights" / "sqz_codec"
    t = C.SparseTensor((4, 4), np.array([0.0, 1.5], np.float32), np.ones(3, np.int64), np.array([1, 5, 9]))
    (tmp_path / "a.sqz").write_bytes(C.encode_sqz({"k": "v"}, [C.TensorPlan("w", t)])[0])
    code = (
        "import importlib.util, sys\n"
        "sys.modules['torch'] = None\n"
        f"spec = importlib.util.spec_from_file_location('sqz_codec', {str(path / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(path)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['sqz_codec'] = m; spec.loader.exec_module(m)\n"
        f"meta, t = m.decode_sqz(open({str(tmp_path / 'a.sqz')!r}, 'rb').read())\n"
        "print(meta['k'], t['w'].sum())\n"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["v", "4.5"]


def test_the_command_and_the_library_do_the_same_unasked():
    """``squeezenet compress -w W -o F`` and ``compress(W)`` start from one config (output-aware
    codes, the data-free bits), and an unnamed method is output-aware in the library too."""
    from squeezenet.cli.compress import _config
    from squeezenet.cli.main import build_parser
    from squeezenet.compression.choices import DEFAULT_METHOD, OUTPUT_AWARE

    args = build_parser().parse_args(["compress", "-w", "in.safetensors", "-o", "out.sqz"])
    assert _config(args) == CompressionConfig.data_free()
    assert CompressionConfig().method == CompressionConfig.data_free().method == DEFAULT_METHOD == OUTPUT_AWARE
    nearest = build_parser().parse_args(["compress", "-w", "in.safetensors", "-o", "out.sqz", "--method", "nearest"])
    assert _config(nearest) == CompressionConfig.data_free("nearest")
    assert CompressionConfig.lossless().method == "nearest"  # output-aware codes would move the values


def test_choices_name_every_coder_and_scheme_of_the_codec_without_torch():
    from squeezenet.compression.choices import CODERS, POSITION_SCHEMES

    assert set(CODERS) == {"auto", *C.CODER_NAMES.values()}
    assert set(POSITION_SCHEMES) == {"auto", *C.POS_NAMES.values()} - {"all"}
    code = "import sys\nimport squeezenet.compression.choices\nassert 'torch' not in sys.modules, 'torch imported'\n"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_compress_any_model_round_trip(tmp_path):
    from squeezenet.weights import state_dict_to_loaded, write_safetensors

    model = build_architecture("squeezenet1_1", num_classes=10).eval()
    path = tmp_path / "m.sqz"
    src = tmp_path / "m.safetensors"
    write_safetensors(state_dict_to_loaded(model, _info_for(model)), src)
    cm = compress(src, CompressionConfig(bits=5, densities=0.5, method="nearest"))
    report = cm.save(path)
    assert path.stat().st_size == report["total"]
    back = read_sqz(path)
    expect = cm.state_dict()
    for k, v in back.state_dict.items():
        torch.testing.assert_close(v, expect[k], rtol=0, atol=0)
    w = back.state_dict["features.0.weight"]
    assert len(torch.unique(w)) <= 33 and 0.45 < (w != 0).float().mean() < 0.55
    # .sqz -> .sqz again is exact: the quantized values are kept
    cm2 = compress(path, CompressionConfig(bits=5, codebook_dtype="float32", dense_dtype="float32", method="nearest"))
    for k, v in cm2.state_dict().items():
        torch.testing.assert_close(v, back.state_dict[k], rtol=0, atol=0)
    tables = paper_tables(cm, report)
    assert tables["table2"][-1]["bytes"] == report["total"]
    assert len(tables["table1"]) == len(back.state_dict)
    assert "| stage |" in markdown(tables, baselines(back.state_dict))


def _info_for(model):
    from squeezenet.data.preprocessing import IMAGENET_DEFAULT
    from squeezenet.weights.info import WeightsInfo

    return WeightsInfo(
        arch="squeezenet1_1",
        spec=model.spec,
        num_classes=10,
        in_chans=3,
        preprocessing=IMAGENET_DEFAULT,
        classes=tuple(f"c{i}" for i in range(10)),
        provenance={"source": "test"},
        license="test licence",
    )


def test_release_lossless(dc_weights_path, dc_model, tmp_path):
    cm = compress(dc_weights_path, CompressionConfig.lossless())
    path = tmp_path / "lossless.sqz"
    report = cm.save(path)
    back = read_sqz(path)
    for k, v in dc_model.state_dict().items():
        torch.testing.assert_close(back.state_dict[k], v, rtol=0, atol=0)
    assert back.info.to_metadata() == {
        **dc_model.weights_info.to_metadata(),
        "provenance": back.info.to_metadata()["provenance"],
    }  # the 1000 names and wnids (stored as a reference to the packaged list) and the licence
    assert report["metadata"] < 2000  # was 9,065 bytes when the names were stored
    assert path.stat().st_size < 540_000  # format version 1 needed 556,132 bytes


@pytest.mark.slow
def test_release_data_free_default(release_data_free_sqz):
    """The default (output-aware on synthetic images; ``compress(path)`` in conftest) fits the
    470,000-byte target; its fidelity is measured by benchmarks/bench_compress.py on images it never saw."""
    size = release_data_free_sqz.stat().st_size
    assert size <= 470_000, size
    from squeezenet.compression.choices import DEFAULT_METHOD

    notes = read_sqz(release_data_free_sqz).info.provenance["compression"]
    assert notes["config"]["method"] == DEFAULT_METHOD
    assert notes["calibration"] == "64 synthetic images (no data)"
    assert notes["bits"]["features.0.weight"] == 7 and notes["bits"]["classifier.1.weight"] == 8


@pytest.mark.slow
def test_pruning_masks_and_keeper():
    model = build_architecture("squeezenet1_1", num_classes=10)
    masks = magnitude_masks(model, 0.3)
    assert abs(masks["features.0.weight"].float().mean().item() - 0.3) < 0.01
    calls = []

    def train_fn(m, keeper):
        opt = keeper.wrap(torch.optim.SGD(m.parameters(), lr=0.1))
        m(torch.randn(2, 3, 64, 64)).sum().backward()
        opt.step()
        calls.append(1)

    final = iterative_prune(model, 0.3, train_fn, rounds=2)
    assert len(calls) == 2
    w = dict(model.named_parameters())["features.0.weight"]
    assert torch.all(w[~final["features.0.weight"]] == 0)


def test_mask_keeper_holds_pruned_weights_at_zero_while_training():
    """The hook zeroes the pruned weights' gradients, the wrapped optimiser re-applies the masks
    after each step (weight decay and momentum would move them), and leaving the context
    removes the hooks."""
    torch.manual_seed(0)
    model = build_architecture("squeezenet1_1", num_classes=4)
    masks = magnitude_masks(model, 0.5)
    key = "features.0.weight"
    w = dict(model.named_parameters())[key]
    pruned = ~masks[key]

    def step(opt):
        opt.zero_grad()
        model.features[0](torch.randn(2, 3, 16, 16)).square().sum().backward()  # the layer under test
        grad = w.grad.clone()
        opt.step()
        return grad

    with MaskKeeper(model, masks) as keeper:
        assert torch.all(w[pruned] == 0)  # applied on entry
        opt = keeper.wrap(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1))
        before = w.detach().clone()
        for _ in range(3):
            grad = step(opt)
            assert torch.all(grad[pruned] == 0) and grad[~pruned].abs().sum() > 0
            assert torch.all(w[pruned] == 0)
        assert not torch.equal(w[~pruned], before[~pruned])  # the kept weights do train
    grad = step(torch.optim.SGD(model.parameters(), lr=0.0))
    assert grad[pruned].abs().sum() > 0  # the hooks are gone


def test_trained_quantization_moves_only_centroids():
    model = build_architecture("squeezenet1_1", num_classes=4).eval()
    w = model.state_dict()["features.0.weight"].numpy()
    from squeezenet.compression.pipeline import quantize_weight

    q = {"features.0.weight": quantize_weight(w, 3)}
    teacher = build_architecture("squeezenet1_1", num_classes=4).eval()
    batches = [torch.randn(2, 3, 64, 64) for _ in range(2)]
    out = train_codebooks(model, q, batches, steps=2, lr=1e-2, teacher=teacher)
    t = out["features.0.weight"]
    np.testing.assert_array_equal(t.codes, q["features.0.weight"].codes)
    assert not np.array_equal(t.codebook, q["features.0.weight"].codebook)
    assert len(np.unique(model.state_dict()["features.0.weight"].numpy())) <= 9


@pytest.mark.slow
def test_cli_compress_decompress(dc_weights_path, tmp_path):
    out = tmp_path / "dc.sqz"
    r = run_cli("compress", "-w", str(dc_weights_path), "-o", str(out), "--report", str(tmp_path / "r.json"),
                "--method", "nearest")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size <= 470_000 and "wrote" in r.stdout
    st = tmp_path / "dc.safetensors"
    r = run_cli("decompress", str(out), "-o", str(st))
    assert r.returncode == 0, r.stderr
    a, b = read_sqz(out), build_model_from_weights(st)
    for k, v in b.state_dict().items():
        torch.testing.assert_close(a.state_dict[k], v, rtol=0, atol=0)
    bad = tmp_path / "bad.sqz"
    bad.write_bytes(out.read_bytes()[:-100])
    r = run_cli("decompress", str(bad), "-o", str(tmp_path / "x.safetensors"))
    assert r.returncode == 1 and "error" in r.stderr and "Traceback" not in r.stderr


def test_read_sqz_errors(tmp_path):
    p = tmp_path / "x.sqz"
    p.write_bytes(b"SQZ\x00" + b"\x01" * 10)
    with pytest.raises(WeightsError, match=r"x.sqz: truncated .sqz file \(14 bytes\)"):
        read_sqz(p)
    with pytest.raises(WeightsError, match="cannot read"):
        read_sqz(tmp_path / "missing.sqz")


def test_read_sqz_gives_loaded_weights_that_rebuild_the_model(tmp_path):
    """``read_sqz`` returns ``LoadedWeights``: the WeightsInfo the file carries and a state dict
    that loads into the model its spec describes, value for value."""
    source = read_sqz(ROOT / "tests" / "data" / "sqz_v1_lossless.sqz")  # a tiny 5-class model
    cm = compress(source, CompressionConfig(bits=4, method="nearest"))
    cm.save(tmp_path / "m.sqz")
    loaded = read_sqz(tmp_path / "m.sqz")
    assert isinstance(loaded, LoadedWeights)
    assert loaded.info.classes == source.info.classes and loaded.info.spec == source.info.spec
    rebuilt = build_model_from_weights(loaded)
    for k, v in rebuilt.state_dict().items():
        torch.testing.assert_close(v, cm.state_dict()[k], rtol=0, atol=0)
        assert v.dtype == torch.float32
