"""The C export's weight table: two models of one architecture share their code byte for byte, the
table of one runs in the code of the other with its own scores (linked in, or bound at run time),
and a table the code cannot run is refused with one line, whatever its bytes.

The models are the 32-px test SqueezeNet of test_export_c.py with random weights (seeds 0 and 1), as
int8 and as compressed builds (through ``squeezenet compress``), calibrated on even-indexed shared
images and run on odd-indexed ones.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from squeezenet.cli.main import main
from squeezenet.errors import DeployError
from squeezenet.export.c import build_c, reference, write_folder
from squeezenet.export.c.integerize import FloatConv, file_numbering
from squeezenet.export.c.pixels import normalized
from squeezenet.export.c.table import ENTRY, HEADER, TABLE_FILE, parse_table
from squeezenet.models import from_spec
from squeezenet.models.fold import fold_batchnorm
from squeezenet.models.spec import V1_1_CIFAR
from squeezenet.serving.bytedelta import make_byte_delta
from squeezenet.weights import build_model_from_weights
from squeezenet.weights.sqz_codec.layout import read_layout, write_layout
from squeezenet.weights.sqz_codec.tensors import SparseTensor
from test_export_c import ASAN, PRE_32, random_cifar_like, sample_images, tc

pytestmark = pytest.mark.slow
DEMO = ("squeezenet_example.c", "squeezenet_model.c", "squeezenet_weights.c", "squeezenet_labels.c")


@pytest.fixture(scope="module")
def images(imagenet_samples):
    calibration, _ = sample_images(imagenet_samples, PRE_32, 16, 0)
    test, _ = sample_images(imagenet_samples, PRE_32, 3, 1)
    return normalized(PRE_32, calibration), test


def _export(weights: Path, storage: str, images, folder: Path) -> tuple[Path, object, dict]:
    model = build_model_from_weights(weights).eval()
    net, files, facts = build_c(model, images[0], storage=storage)
    return write_folder(files, folder), net, facts


@pytest.fixture(scope="module", params=["int8", "compressed"])
def pair(request, images, tmp_path_factory):
    """Models A and B (other weights, same architecture), exported with the same options."""
    tmp = tmp_path_factory.mktemp(f"table-{request.param}")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        weights = random_cifar_like(tmp / f"{name}.safetensors", seed=seed)
        if request.param == "compressed":
            sqz = tmp / f"{name}.sqz"
            assert (
                main(["compress", "-w", str(weights), "-o", str(sqz), "--density", "0.5", "--method", "nearest"]) == 0
            )
            weights = sqz
        out[name] = _export(weights, request.param, images, tmp / name)
    return out


def _demo(folder: Path, out: Path, extra: tuple[str, ...] = (), units: tuple[str, ...] = DEMO) -> Path:
    sources = [str(folder / name) for name in units]
    subprocess.run(["gcc", *tc.STRICT, "-O1", *extra, *sources, "-o", str(out)], check=True)
    return out


def _ppm(pixels: np.ndarray, path: Path) -> Path:
    path.write_bytes(b"P6\n32 32\n255\n" + pixels.tobytes())
    return path


def test_the_table_file_is_the_linked_table_and_names_its_code(pair):
    folder, _, facts = pair["a"]
    blob = (folder / TABLE_FILE).read_bytes()
    parsed = parse_table(blob)
    assert len(blob) == facts["weight_bytes"] and f"{parsed.layout:08x}" == facts["layout"]
    assert f"#define SQN_LAYOUT 0x{facts['layout']}u" in (folder / "squeezenet_model.c").read_text()
    words = (folder / "squeezenet_weights.c").read_text().split("{", 1)[1].split("}", 1)[0]
    linked = np.array([int(w.strip().rstrip("u"), 16) for w in words.split(",") if w.strip()], dtype="<u4")
    assert linked.tobytes() == blob
    start = HEADER.size + ENTRY.size * len(parsed.fields)
    assert all(offset % 4 == 0 and start <= offset <= len(blob) for offset, _ in parsed.fields)


def test_same_architecture_same_code_and_the_table_alone_makes_the_model(pair, images, tmp_path):
    """B's table linked to A's code gives B's reference scores bit for bit: an update is the table."""
    (folder_a, _, facts_a), (folder_b, net_b, facts_b) = pair["a"], pair["b"]
    assert (folder_a / "squeezenet_model.c").read_bytes() == (folder_b / "squeezenet_model.c").read_bytes()
    assert facts_a["layout"] == facts_b["layout"]
    assert (folder_a / TABLE_FILE).read_bytes() != (folder_b / TABLE_FILE).read_bytes()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "squeezenet_model.c").write_bytes((folder_a / "squeezenet_model.c").read_bytes())
    for name in ("squeezenet_model.h", "squeezenet_weights.c"):
        (mixed / name).write_bytes((folder_b / name).read_bytes())
    exe = tc.compile_host(mixed, tc.harness_source(images[1]), tmp_path / "run")
    assert np.array_equal(tc.run_program([str(exe)]).scores, reference.run_batch(net_b, images[1]))


def test_the_demo_runs_a_table_file_bound_at_run_time(pair, images, tmp_path):
    folder_a, folder_b = pair["a"][0], pair["b"][0]
    demo_a, demo_b = _demo(folder_a, tmp_path / "a"), _demo(folder_b, tmp_path / "b")
    ppm = _ppm(images[1][0], tmp_path / "x.ppm")
    own = subprocess.run([str(demo_b), str(ppm)], capture_output=True, text=True, check=True).stdout
    swapped = subprocess.run([str(demo_a), str(ppm), str(folder_b / TABLE_FILE)], capture_output=True, text=True)
    assert swapped.returncode == 0 and swapped.stdout == own
    assert subprocess.run([str(demo_a), str(ppm)], capture_output=True, text=True).stdout != own


def test_code_built_without_a_table_runs_none_until_one_is_given(pair, images, tmp_path):
    """The WebAssembly build's way: no squeezenet_weights.c; squeezenet_run refuses until a table is bound."""
    folder = pair["a"][0]
    demo = _demo(
        folder,
        tmp_path / "bare",
        ("-DSQN_LINKED_TABLE=0",),
        ("squeezenet_example.c", "squeezenet_model.c", "squeezenet_labels.c"),
    )
    ppm = _ppm(images[1][0], tmp_path / "x.ppm")
    bare = subprocess.run([str(demo), str(ppm)], capture_output=True, text=True)
    assert bare.returncode == 1 and bare.stderr == "no weight table this code can run\n"
    given = subprocess.run([str(demo), str(ppm), str(folder / TABLE_FILE)], capture_output=True, text=True)
    assert given.returncode == 0 and len(given.stdout.splitlines()) == 5


def _with_crc(blob: bytearray) -> bytes:
    struct.pack_into("<I", blob, 20, zlib.crc32(bytes(blob[HEADER.size :])))
    return bytes(blob)


def _forged_field(blob: bytes, index: int, value: int) -> bytes:
    """The table with element 0 of field ``index`` (an int32 parameter block) set to value, CRC fixed."""
    out = bytearray(blob)
    offset, _ = ENTRY.unpack_from(out, HEADER.size + ENTRY.size * index)
    struct.pack_into("<i", out, offset, value)
    return _with_crc(out)


def _stem_fields(net) -> int:
    """Fields before fire2's: conv1's zero points, then its bias, weights (dense 3, a stream 2) and parameters."""
    return 1 + 1 + (3 if net.stem.codebook is None else 2) + 1


def _bad_tables(pair, images) -> dict[str, tuple[bytes, str]]:
    folder, net, _ = pair["a"]
    blob = (folder / TABLE_FILE).read_bytes()
    params = _stem_fields(net) - 1
    model = fold_batchnorm(from_spec(V1_1_CIFAR, num_classes=4).eval())
    _, other_files, _ = build_c(model, images[0], storage="int8")
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x10
    version = bytearray(blob)
    version[4] = 2
    return {
        "an int8 four-class table": (other_files[TABLE_FILE], "made for another model's code"),
        "flipped bit": (bytes(flipped), "damaged (length or CRC-32)"),
        "truncated": (blob[:-4], "damaged (length or CRC-32)"),
        "appended": (blob + b"\0\0\0\0", "damaged (length or CRC-32)"),
        "version 2": (bytes(version), "not a weight table"),
        "an image": (b"P6\n32 32\n255\n" + bytes(32 * 32 * 3), "not a weight table"),
        "bias shift 40": (_forged_field(blob, params, 40), "has a field this code cannot run"),
    }


def test_tables_the_code_cannot_run_are_refused_with_one_line(pair, images, tmp_path):
    demo = _demo(pair["a"][0], tmp_path / "demo")
    ppm = _ppm(images[1][0], tmp_path / "x.ppm")
    for name, (data, why) in _bad_tables(pair, images).items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        done = subprocess.run([str(demo), str(ppm), str(path)], capture_output=True, text=True)
        assert done.returncode == 1 and done.stdout == "", name
        assert done.stderr == f"{path}: {why}\n", name
    (tmp_path / "empty.bin").write_bytes(b"")
    for path in (tmp_path / "empty.bin", tmp_path / "absent.bin"):  # nothing to bind: refused before the binder
        done = subprocess.run([str(demo), str(ppm), str(path)], capture_output=True, text=True)
        assert done.returncode == 1 and done.stdout == "" and done.stderr == f"{path}: cannot read it\n", path


@pytest.mark.parametrize("pair", ["compressed"], indirect=True)
def test_a_compressed_table_whose_frequencies_do_not_fill_the_decoder_is_refused(pair, images, tmp_path):
    folder, net, _ = pair["a"]
    parsed = parse_table((folder / TABLE_FILE).read_bytes())
    blob = bytearray(parsed.data)
    squeeze_tables = parsed.fields[_stem_fields(net) + 2][0]  # fire2's squeeze: bias, words, tables, parameters
    blob[squeeze_tables] ^= 0x01  # its first frequency one unit off: the table no longer sums to 4096
    path = tmp_path / "freq.bin"
    path.write_bytes(_with_crc(blob))
    demo = _demo(folder, tmp_path / "demo")
    done = subprocess.run(
        [str(demo), str(_ppm(images[1][0], tmp_path / "x.ppm")), str(path)], capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr == f"{path}: has a field this code cannot run\n"


def test_the_python_reader_refuses_what_the_c_binder_refuses(pair):
    blob = (pair["a"][0] / TABLE_FILE).read_bytes()
    cases = {
        blob[:10]: "shorter than its header",
        b"XXXX" + blob[4:]: "no SQNW magic",
        blob[:4] + b"\x09" + blob[5:]: "version 9",
        blob[:-4]: "damaged",
        blob[:-1] + bytes([blob[-1] ^ 1]): "CRC-32",
    }
    for data, words in cases.items():
        with pytest.raises(DeployError, match=words):
            parse_table(data)


BINDER = r"""#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "squeezenet_model.h"

/* argv[1]: records of (uint32 length, that many bytes); prints squeezenet_use_weights's result for each */
int main(int argc, char **argv)
{
    FILE *f = argc == 2 ? fopen(argv[1], "rb") : 0;
    uint32_t n;
    if (!f) return 2;
    while (fread(&n, 4, 1, f) == 1) {
        uint8_t *table = (uint8_t *)malloc(n ? n : 1);
        if (!table || fread(table, 1, n, f) != n) return 2;
        printf("%d\n", squeezenet_use_weights(table, n));
        free(table);
    }
    fclose(f);
    return 0;
}
"""


def _mutants(blob: bytes, count: int, seed: int) -> list[bytes]:
    """Tables whose header, directory or parameters are changed at random, their CRC made right again:
    the binder's own checks are all that stands between them and the kernels."""
    rng = np.random.default_rng(seed)
    parsed = parse_table(blob)
    small = [(offset, n) for offset, n in parsed.fields if n in (1, 2, 6)]  # int32 blocks: parameters, bypass, scale
    out = []
    for _ in range(count):
        data = bytearray(blob)
        where = rng.integers(3)
        if where == 0:  # the directory: an offset or a count
            at = HEADER.size + 4 * int(rng.integers(2 * len(parsed.fields)))
        elif where == 1:  # a parameter block
            offset, n = small[int(rng.integers(len(small)))]
            at = offset + 4 * int(rng.integers(n))
        else:  # the header after its magic
            at = 4 * int(rng.integers(1, 5))
        value = int(rng.choice([0, 1, 2, 255, 256, 4096, 2**31 - 1, 2**31, 2**32 - 1, int(rng.integers(2**32))]))
        struct.pack_into("<I", data, at, value)
        out.append(_with_crc(data))
    return out


def test_forged_headers_directories_and_parameters_never_crash_the_binder(pair, tmp_path):
    """300 forged tables per build, bound by code compiled with AddressSanitizer and UBSan: each is
    refused or bound, and nothing is read outside the table."""
    folder = pair["a"][0]
    blob = (folder / TABLE_FILE).read_bytes()
    (folder / "sqn_binder.c").write_text(BINDER)
    exe = tmp_path / "binder"
    sources = [str(folder / n) for n in ("squeezenet_model.c", "squeezenet_weights.c", "sqn_binder.c")]
    subprocess.run(["gcc", *tc.STRICT, "-O1", "-g", *ASAN, *sources, "-o", str(exe)], check=True)
    tables = [*_mutants(blob, 300, seed=0), blob]
    records = tmp_path / "tables"
    records.write_bytes(b"".join(struct.pack("<I", len(t)) + t for t in tables))
    done = subprocess.run([str(exe), str(records)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = [int(line) for line in done.stdout.split()]
    assert len(results) == len(tables) and set(results) <= {0, -2, -3, -4, -5}
    assert results[-1] == 0 and results.count(0) < len(results) // 2


# ------------------------------------------------- a codebooks update: the file's numbering is kept


def test_file_numbering_keeps_the_files_indices_through_crossings_and_meetings():
    weight = np.array([0.0, 0.5, -0.2, 0.5, 0.3, 0.3, 0.0, -0.2])  # 0.3 twice under two stored indices
    stored = np.array([-1, 0, 1, 0, 2, 3, -1, 1], dtype=np.int32)  # the file: 0.5 first, then -0.2, 0.3, 0.3
    conv = FloatConv("x", weight.reshape(1, 8, 1, 1), np.zeros(1), stored_codes=stored)
    values, codes, positions = file_numbering(conv)
    assert positions.tolist() == [1, 2, 3, 4, 5, 7]
    assert values.tolist() == [0.5, -0.2, 0.3, 0.3] and codes.tolist() == [0, 1, 0, 2, 3, 1]
    assert file_numbering(FloatConv("x", weight.reshape(1, 8, 1, 1), np.zeros(1))) is None  # not from a .sqz
    two_values = stored.copy()
    two_values[4] = 0  # one stored index for 0.5 and 0.3 (conv1 folded with unequal channel scales)
    assert file_numbering(FloatConv("x", weight.reshape(1, 8, 1, 1), np.zeros(1), stored_codes=two_values)) is None


def _crossed_and_met(data: bytes) -> bytes:
    """Every squeeze layer's shared values moved as training may move them, its indices kept: two
    neighbours carried past each other, two others meeting on one value (stored unpacked: a packed
    codebook is sorted, which would renumber the codes; train --update-of keeps the base's order)."""
    layout = read_layout(data)
    for plan in layout.tensors:
        t = plan.tensor
        if isinstance(t, SparseTensor) and plan.name.endswith("squeeze.weight") and len(t.codebook) > 8:
            codebook = t.codebook.copy()
            codebook[[3, 4]] = codebook[[4, 3]]
            codebook[7] = codebook[6]
            plan.tensor, plan.packed = SparseTensor(t.shape, codebook * np.float32(1.01), t.codes, t.positions), False
    return write_layout(layout)


def test_a_codebooks_update_keeps_every_stream_and_changes_the_table_by_its_values(images, tmp_path):
    """The same layers' weights, values moved (crossed, met): the C export numbers them as the file
    does, so every layer's codes and rANS words are the base's and the table's byte delta is its
    values; the moved model still runs bit for bit as its reference."""
    base = tmp_path / "base.sqz"
    weights = random_cifar_like(tmp_path / "base.safetensors")
    assert main(["compress", "-w", str(weights), "-o", str(base), "--density", "0.5", "--method", "nearest"]) == 0
    moved = tmp_path / "moved.sqz"
    moved.write_bytes(_crossed_and_met(base.read_bytes()))
    (folder_a, net_a, _), (folder_b, net_b, _) = (
        _export(path, "compressed", images, tmp_path / path.stem) for path in (base, moved)
    )
    for a, b in zip(net_a.convs(), net_b.convs(), strict=True):
        assert np.array_equal(a.codes, b.codes) and np.array_equal(a.positions, b.positions), a.name
    crossed = [b for b in net_b.convs() if b.name.endswith("squeeze")]
    assert crossed and all(np.any(np.diff(b.codebook.astype(np.int32)) < 0) for b in crossed)  # unsorted, as stored
    old, new = ((folder / TABLE_FILE).read_bytes() for folder in (folder_a, folder_b))
    assert len(make_byte_delta(old, new)) < len(new) // 20  # the words are copied: a 20th would be one layer
    exe = tc.compile_host(folder_b, tc.harness_source(images[1]), tmp_path / "run")
    assert np.array_equal(tc.run_program([str(exe)]).scores, reference.run_batch(net_b, images[1]))
