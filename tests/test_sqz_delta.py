""".sqzd deltas (docs/sqz-delta.md): the writer is a function of a file's content, deltas rebuild
NEW byte for byte and carry only what changed, hostile deltas fail cleanly, ``train --update-of``
keeps what its level freezes, and the service serves and accepts deltas."""

from __future__ import annotations

import hashlib
import json
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, cli_in_process
from squeezenet.compression import CompressionConfig, compress
from squeezenet.weights import load_weights
from squeezenet.weights.sqz_codec import SparseTensor, SqzError
from squeezenet.weights.sqz_codec.container import parse_sqz
from squeezenet.weights.sqz_codec.delta import make_delta
from squeezenet.weights.sqz_codec.layout import read_layout, write_layout
from squeezenet.weights.sqz_codec.patch import apply_delta
from test_export_c import random_cifar_like
from test_serving import TOKEN, ServerProcess
from test_sqz_fuzz import FUZZ


def compressed_cifar_like(folder: Path) -> Path:
    """The 32-px model with random weights, pruned to half and quantized: a small base to update."""
    weights = random_cifar_like(folder / "base.safetensors")
    path = folder / "base.sqz"
    compress(str(weights), CompressionConfig(method="nearest", densities=0.5)).save(path)
    return path


def tiny_images(root: Path) -> Path:
    """Three classes of 32-px images told apart by brightness, 12 per class in train/ and val/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k, name in enumerate(("dark", "mid", "light")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(12):
                pixels = (rng.random((32, 32, 3)) * 80 + 80 * k).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def update_run(base: Path, images: Path, out: Path, level: str):
    """``squeezenet train IMAGES --update-of BASE --update-level LEVEL`` for two short epochs."""
    from squeezenet.training import TrainConfig, train

    cfg = TrainConfig(data=str(images), output=str(out), update_of=str(base), update_level=level,
                      epochs=2, batch_size=12, lr=0.01, warmup_epochs=0, workers=0, threads=2)  # fmt: skip
    return train(cfg)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return compressed_cifar_like(tmp_path_factory.mktemp("delta"))


def _variant(base: bytes, change) -> bytes:
    layout = read_layout(base)
    for plan in layout.tensors:
        plan.tensor = change(plan.name, plan.tensor)
    return write_layout(layout)


def _scaled_codebooks(name, t):
    """Every shared value and bias 0.2 % larger in magnitude (the order of the values is kept)."""
    if isinstance(t, SparseTensor):
        return SparseTensor(t.shape, t.codebook * np.float32(1.002), t.codes, t.positions)
    return t * np.float32(1.002)


def _moved_codes(name, t):
    """A hundredth of one layer's weights moved to the next code."""
    if name != "features.3.expand3x3.weight":
        return t
    codes = t.codes.copy()
    codes[::100] = (codes[::100] + 1) % len(t.codebook)
    return SparseTensor(t.shape, t.codebook, codes, t.positions)


def test_the_writer_is_a_function_of_the_content(base):
    data = base.read_bytes()
    assert write_layout(read_layout(data)) == data


def test_a_version_1_file_is_not_rewritten_as_it_is_and_travels_whole(base):
    old = (ROOT / "tests/data/sqz_v1_lossy3.sqz").read_bytes()
    delta, report = make_delta(base.read_bytes(), old)
    assert report["literal"] and apply_delta(base.read_bytes(), delta) == old


@pytest.mark.parametrize(
    ("change", "op", "most"),
    [(_scaled_codebooks, "values", 0.05), (_moved_codes, "entries", 0.01)],
)
def test_a_delta_rebuilds_new_byte_for_byte_and_carries_only_the_change(base, change, op, most):
    old = base.read_bytes()
    new = _variant(old, change)
    delta, report = make_delta(old, new)
    assert not report["literal"] and report["ops"][op] >= 1
    assert apply_delta(old, delta) == new
    assert len(delta) < most * len(new), f"{len(delta)} bytes for a {len(new)}-byte file"


def test_a_codebook_update_keeps_the_entropy_coded_data_and_is_smaller_than_xz_of_the_pair(base):
    import lzma

    old = base.read_bytes()
    new = _variant(old, _scaled_codebooks)
    delta, report = make_delta(old, new)
    assert report["ops"]["entries"] == report["ops"]["whole"] == 0
    assert parse_sqz(old).bundle == parse_sqz(new).bundle  # the codes and their rANS data did not move
    pair = len(lzma.compress(old + new, preset=9 | lzma.PRESET_EXTREME)) - len(lzma.compress(old, preset=9))
    assert len(delta) < pair  # (a uniform 0.2 % change: ~1.5 bits of news per value; xz needs more)


def test_cli_delta_and_patch_print_both_hashes_and_refuse_a_wrong_base(base, tmp_path, capsys):
    old = base.read_bytes()
    new_path = tmp_path / "new.sqz"
    new_path.write_bytes(_variant(old, _moved_codes))
    sha_old, sha_new = (hashlib.sha256(b).hexdigest() for b in (old, new_path.read_bytes()))
    code, out, _ = cli_in_process(capsys, "delta", str(base), str(new_path), "-o", str(tmp_path / "u.sqzd"))
    assert code == 0 and sha_old in out and sha_new in out
    code, out, _ = cli_in_process(capsys, "patch", str(base), str(tmp_path / "u.sqzd"), "-o", str(tmp_path / "p.sqz"))
    assert code == 0 and sha_new in out
    assert (tmp_path / "p.sqz").read_bytes() == new_path.read_bytes()
    (tmp_path / "keep.sqz").write_bytes(b"what was there")
    code, _, err = cli_in_process(
        capsys, "patch", str(new_path), str(tmp_path / "u.sqzd"), "-o", str(tmp_path / "keep.sqz")
    )
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert sha_old[:16] in err and sha_new[:16] in err  # the base the delta needs, and the file it was given
    assert (tmp_path / "keep.sqz").read_bytes() == b"what was there"  # a failed patch writes nothing


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("delta", "missing.sqz", "missing2.sqz", "-o", "x.sqzd"), "cannot read"),
        (("patch", "{base}", "{base}", "-o", "x.sqz"), "not a .sqzd delta"),
        (("delta", "{base}", "{empty}", "-o", "x.sqzd"), "truncated .sqz"),
        (("patch", "{base}", "{dir}", "-o", "x.sqz"), "is a directory"),
    ],
)
def test_bad_files_are_one_error_line(base, tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.sqz").write_bytes(b"")
    (tmp_path / "d").mkdir()
    given_args = [a.format(base=base, empty=tmp_path / "empty.sqz", dir=tmp_path / "d") for a in args]
    code, _, err = cli_in_process(capsys, *given_args)
    assert code == 1 and words in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def sample_delta(base) -> tuple[bytes, bytes, bytes]:
    old = base.read_bytes()
    new = _variant(_variant(old, _moved_codes), _scaled_codebooks)
    return old, new, make_delta(old, new)[0]


def _expect_clean(old: bytes, delta: bytes, new: bytes) -> None:
    """The format's error or NEW itself (a mutation the checks let through must still give NEW: its
    hash is checked), in bounded time and memory."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        out = apply_delta(old, delta)
    except SqzError:
        out = new
    finally:
        seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert out == new
    # a bound against hangs and blow-ups, not a speed figure: a whole patch under tracemalloc takes
    # about a second alone, several with the other test process on the same two cores
    assert seconds < 20 and peak < 64 << 20, (seconds, peak)


@settings(FUZZ, max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_deltas_fail_with_the_formats_error(sample_delta, data):
    old, new, delta = sample_delta
    kind = data.draw(st.sampled_from(["truncate", "flip", "bytes"]))
    blob = bytearray(delta)
    if kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(blob) * 8 - 1))
            blob[i // 8] ^= 1 << (i % 8)
    else:
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i : i + 4] = data.draw(st.binary(min_size=1, max_size=4))
    _expect_clean(old, bytes(blob), new)


def _resealed(delta: bytes, plan_change=None, swap_sections: bool = False) -> bytes:
    """The delta with its plan changed or its sections swapped, every CRC made right again: what a
    checksum cannot catch must be caught by the checks of the content."""
    head, body = delta[:80], delta[80:-8]
    sections, r = [], 0
    while r < len(body):
        tag, method, size, length = body[r : r + 4], *struct.unpack("<BII", body[r + 4 : r + 13])
        sections.append([tag, method, size, body[r + 13 : r + 13 + length]])
        r += 13 + length + 4
    if plan_change is not None:
        import lzma

        from squeezenet.weights.sqz_codec.metadata import LZMA_RAW

        plan = json.loads(lzma.decompress(sections[0][3], format=lzma.FORMAT_RAW, filters=LZMA_RAW))
        raw = json.dumps(plan_change(plan)).encode()
        sections[0][1:] = [0, len(raw), raw]
    if swap_sections:
        sections.reverse()
    out = head + b"".join(
        t + struct.pack("<BII", m, s, len(p)) + p + struct.pack("<I", zlib.crc32(p)) for t, m, s, p in sections
    )
    out += struct.pack("<I", len(out) + 8)
    return out + struct.pack("<I", zlib.crc32(out))


def _tensor_op(plan, op):
    return next(t for t in plan["tensors"] if isinstance(t, dict) and t["op"] == op)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda p: {**p, "tensors": p["tensors"][::-1]}, "patched file is not the one"),
        (lambda p: {**p, "tensors": p["tensors"] + p["tensors"][:1]}, "tensor names"),
        (lambda p: {**p, "steps": 0}, "rANS steps"),
        (lambda p: {**p, "meta": {"set": {}, "drop": [], "order": ["x"]}}, "keys"),
        (lambda p: (_tensor_op(p, "entries").update(changed=[10**9, 4, 0]), p)[1], "data reference"),
        (lambda p: (_tensor_op(p, "entries").update(choices={"dtype": "int4"}), p)[1], "bad choices"),
        (lambda p: (_tensor_op(p, "entries").update(op="whole", shape=[1 << 20, 1 << 20]), p)[1], "limit"),
    ],
)
def test_reordered_or_forged_plans_fail_with_one_line(sample_delta, change, words):
    old, _, delta = sample_delta
    with pytest.raises(SqzError, match=words):
        apply_delta(old, _resealed(delta, change))


def test_swapped_sections_fail(sample_delta):
    old, _, delta = sample_delta
    with pytest.raises(SqzError, match="expected section PLAN"):
        apply_delta(old, _resealed(delta, swap_sections=True))


# ---------------------------------------------------------------- train --update-of


@pytest.fixture(scope="module")
def updates(base, tmp_path_factory) -> dict[str, Path]:
    images = tiny_images(tmp_path_factory.mktemp("tiny_images"))
    runs = {}
    for level in ("head", "codebooks", "full"):
        out = tmp_path_factory.mktemp(f"update_{level}") / "run"
        assert update_run(base, images, out, level).update["level"] == level
        runs[level] = out
    return runs


def _stored(path: Path) -> dict:
    return {p.name: p for p in read_layout(path.read_bytes()).tensors}


def test_update_levels_keep_what_they_freeze_and_the_run_folder_holds_both_files(base, updates):
    old = _stored(base)
    for level, run in updates.items():
        report = json.loads((run / "update.json").read_text())
        new_bytes, delta = (run / "update.sqz").read_bytes(), (run / "update.sqzd").read_bytes()
        assert report["sqz_bytes"] == len(new_bytes) and report["delta_bytes"] == len(delta)
        assert apply_delta(base.read_bytes(), delta) == new_bytes
        new = _stored(run / "update.sqz")
        assert new["classifier.1.weight"].tensor.shape[0] == 3  # a head for the 3 new classes
        layer = "features.3.expand3x3.weight"
        if level == "head":
            assert all(_same(old[k].tensor, new[k].tensor) for k in old if not k.startswith("classifier."))
        elif level == "codebooks":
            a, b = old[layer].tensor, new[layer].tensor
            assert np.array_equal(a.positions, b.positions) and np.array_equal(a.codes, b.codes)
            assert not np.array_equal(a.codebook, b.codebook)  # the shared values trained
        else:
            assert not _same(old[layer].tensor, new[layer].tensor)
    assert len((updates["head"] / "update.sqzd").read_bytes()) < len((updates["full"] / "update.sqzd").read_bytes())


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return all(
        np.array_equal(x, y) for x, y in ((a.codebook, b.codebook), (a.codes, b.codes), (a.positions, b.positions))
    )


def test_the_update_loads_with_the_runs_classes(updates):
    loaded = load_weights(updates["codebooks"] / "update.sqz")
    assert loaded.info.classes == ("dark", "light", "mid") and loaded.info.provenance["update_level"] == "codebooks"


def test_a_new_classifier_gets_the_fewest_bits_that_keep_its_validation_top1(updates):
    """The bits of the classifier for the new classes are chosen on the run's validation images
    (agreement with the trained float classifier), and the update stores it at those bits."""
    from squeezenet.compression.updates import HEAD_BITS
    from squeezenet.training.updates import HEAD_AGREEMENT

    for run in updates.values():
        head = json.loads((run / "update.json").read_text())["head_bits"]
        shares = {int(bits): share for bits, share in head["agreement"].items()}
        assert head["images"] == 36 and sorted(shares) == sorted(HEAD_BITS)  # tiny_images' 3 x 12 val/ images
        assert all(shares[bits] < HEAD_AGREEMENT for bits in HEAD_BITS if bits < head["bits"])
        assert shares[head["bits"]] >= HEAD_AGREEMENT or head["bits"] == HEAD_BITS[-1]
        classifier = _stored(run / "update.sqz")["classifier.1.weight"].tensor
        assert len(classifier.codebook) <= 2 ** head["bits"]
        provenance = load_weights(run / "update.sqz").info.provenance
        assert provenance["head_bits"] == {"bits": head["bits"], "chosen_on": "36 validation images"}


def test_a_finished_runs_update_is_written_again_the_same_without_training(updates):
    from squeezenet.training import rewrite_update

    run = updates["codebooks"]
    before = {name: (run / name).read_bytes() for name in ("update.sqz", "update.sqzd")}
    report = rewrite_update(json.loads((run / "config.json").read_text()))
    assert {name: (run / name).read_bytes() for name in before} == before
    assert report["head_bits"]["images"] == 36 and report["delta_bytes"] == len(before["update.sqzd"])


def test_update_options_are_checked(base, capsys):
    code, _, err = cli_in_process(capsys, "train", "x", "--update-of", str(base), "--update-level", "most")
    assert code == 2 and "invalid choice" in err
    code, _, err = cli_in_process(capsys, "train", "x", "--update-of", str(base), "--weights", "other.sqz")
    assert code == 1 and "leave --weights out" in err


# ---------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def delta_server(base):
    s = ServerProcess("-w", str(base), "--token", TOKEN, "--browser-model", "none")
    yield s
    s.stop()


def test_the_service_accepts_a_delta_and_serves_it_to_a_client_holding_the_old_model(delta_server, base):
    """One swap, by a delta (a PUT of .sqzd bytes against the model served); then the client that
    holds the old model asks for its update and gets the same file; a delta against a model that
    is no longer served is refused."""
    url, auth = delta_server.url, {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"}
    old = base.read_bytes()
    first = httpx.get(url + "/v1/model", timeout=30).json()["id"]
    new = _variant(_variant(old, _scaled_codebooks), _moved_codes)
    delta = make_delta(old, new)[0]
    put = httpx.put(url + "/v1/model", content=delta, headers=auth, timeout=240)
    assert put.status_code == 200, put.text
    second = put.json()["model"]
    assert second["sha256"] == hashlib.sha256(new).hexdigest() and second["file"] == "patched.sqz"
    got = httpx.get(url + "/v1/model/delta", params={"from": first}, timeout=60)
    assert got.status_code == 200 and got.headers["X-Model-Id"] == second["id"] and got.headers["X-Delta-From"] == first
    assert apply_delta(old, got.content) == new and len(got.content) < len(new) // 10
    for missing in (second["id"], "000000000000"):  # the current one, and one never served
        gone = httpx.get(url + "/v1/model/delta", params={"from": missing}, timeout=30)
        assert gone.status_code == 404 and gone.json()["error"]["kind"] == "no_delta"
    again = httpx.put(url + "/v1/model", content=delta, headers=auth, timeout=60)
    assert again.status_code == 422 and "this delta applies to the base" in again.json()["error"]["message"]
    assert httpx.get(url + "/v1/model", timeout=30).json()["id"] == second["id"]  # still serving


def _new_classifier(name, t):
    """A classifier for four classes: new codes, positions and codebook (a ``head`` update)."""
    if not name.startswith("classifier.1."):
        return t
    rng = np.random.default_rng(1)
    if name.endswith("bias"):
        return rng.standard_normal(4).astype(np.float32)
    positions = np.sort(rng.choice(4 * 512, 1000, replace=False))
    return SparseTensor((4, 512, 1, 1), np.linspace(-1, 1, 16, dtype=np.float32), rng.integers(0, 16, 1000), positions)


@pytest.mark.parametrize("change", [_scaled_codebooks, _moved_codes, _new_classifier])
def test_a_patch_never_decodes_the_whole_rans_bundle(base, monkeypatch, change):
    """Each tensor's rANS symbols are a group of their own (format version 3): a patch copies the
    groups of tensors whose codes stay, decodes only the group of a tensor changed by entries, and
    codes only what changed. A change of values alone takes the fast path: no entropy coding at
    all, the new codebooks spliced into BASE's sections. (A patch that decoded the whole bundle
    would fail here.)"""
    from squeezenet.weights.sqz_codec.container import ParsedSqz

    old = base.read_bytes()
    new = _variant(old, change)
    delta = make_delta(old, new)[0]

    def refuse(self):
        raise AssertionError("the rANS bundle was decoded")

    monkeypatch.setattr(ParsedSqz, "decode_bundle", refuse)
    assert apply_delta(old, delta) == new


def test_codebook_values_that_crossed_while_training_keep_the_base_order_and_patch_without_entropy_coding(
    base, monkeypatch
):
    """Fine-tuning the shared values can carry two neighbours past each other; a packed codebook is
    stored sorted, so the codes would be renumbered and the tensor re-coded whole. The update instead
    pools the pair into the mean of their weights (``in_base_order``): the codes stay the base's and
    a patch splices values alone, with no rANS decoding."""
    import torch

    from squeezenet.compression.updates import compress_update
    from squeezenet.weights.info import LoadedWeights
    from squeezenet.weights.sqz_codec.container import ParsedSqz

    old = base.read_bytes()
    name = "features.3.expand3x3.weight"
    t = {p.name: p for p in read_layout(old).tensors}[name].tensor
    counts = np.bincount(t.codes, minlength=len(t.codebook))
    order = np.argsort(t.codebook, kind="stable")
    i = next(k for k in range(len(order) - 1)
             if counts[order[k]] and counts[order[k + 1]] and t.codebook[order[k]] > 0)  # fmt: skip
    a, b = order[i], order[i + 1]
    step = float(t.codebook[b] - t.codebook[a])
    trained = t.codebook.astype(np.float32).copy()
    trained[a], trained[b] = t.codebook[b] + step, t.codebook[a] - step  # crossed while training
    dense = np.zeros(int(np.prod(t.shape)), np.float32)
    dense[t.positions] = trained[t.codes]
    loaded = load_weights(base)
    state = {**loaded.state_dict, name: torch.from_numpy(dense.reshape(t.shape))}
    new = compress_update(old, LoadedWeights(loaded.info, state), "codebooks", head=set())
    stored = {p.name: p for p in read_layout(new).tensors}[name].tensor
    assert np.array_equal(stored.codes, t.codes) and np.array_equal(stored.positions, t.positions)
    mean = (trained[a] * counts[a] + trained[b] * counts[b]) / (counts[a] + counts[b])
    assert stored.codebook[a] == stored.codebook[b] == np.float16(mean)
    others = np.setdiff1d(np.arange(len(trained)), [a, b])
    assert np.array_equal(stored.codebook[others], trained[others].astype(np.float16).astype(np.float32))
    delta = make_delta(old, new)[0]

    def refuse(self):
        raise AssertionError("the rANS bundle was decoded")

    monkeypatch.setattr(ParsedSqz, "decode_bundle", refuse)
    assert apply_delta(old, delta) == new
