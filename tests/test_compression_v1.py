"""Every ``.sqz`` written by format version 1 keeps loading: files made by the code before issue 17.

``tests/data/sqz_v1_*.sqz`` were written by the encoder as it was at commit 807bdad (see
tests/data/README.md); ``sqz_v1_expected.npz`` holds the values they must decode to.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import ROOT
from squeezenet.weights import build_model_from_weights
from squeezenet.weights import sqz_codec as C
from squeezenet.weights.sqz import read_sqz
from squeezenet.weights.sqz_codec.layout import read_layout, write_layout

FIXTURES = ROOT / "tests" / "data"
EXPECTED = np.load(FIXTURES / "sqz_v1_expected.npz")


@pytest.mark.parametrize("name", ["lossless", "lossy3"])
def test_version1_files_decode_to_their_values(name):
    path = FIXTURES / f"sqz_v1_{name}.sqz"
    data = path.read_bytes()
    assert data[4:6] == b"\x01\x00"  # written as format version 1
    _, arrays = C.decode_sqz(data)
    expected = {k.split("/", 1)[1]: EXPECTED[k] for k in EXPECTED.files if k.startswith(name + "/")}
    assert list(arrays) == list(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(arrays[k], v, err_msg=k)
    loaded = read_sqz(path)
    assert loaded.info.arch == "tiny_v1_fixture" and loaded.info.classes == ("ant", "bee", "cat", "dog", "eel")
    assert loaded.info.wnids == ("n1", "n2", "n3", "n4", "n5") and loaded.info.license == "CC0 test fixture"
    assert loaded.info.spec.stem_channels == 8 and loaded.info.num_classes == 5
    for k, v in expected.items():
        torch.testing.assert_close(loaded.state_dict[k], torch.from_numpy(v), rtol=0, atol=0)


def test_version1_lossless_file_covers_every_scheme_and_coder():
    """The fixture exercises each position scheme and symbol coder of version 1, so a decoder
    change in any of them shows up here."""
    data = (FIXTURES / "sqz_v1_lossless.sqz").read_bytes()
    _, sections = _sections(data)
    seen = set()
    for tag, payload in sections:
        if tag != C.SEC_TENSOR:
            continue
        r = C.Reader(payload)
        r.take(r.u16())
        r.unpack(f"{r.u8()}I")
        if r.u8() != C.KIND_SPARSE:
            continue
        _, _, k = r.unpack("IBH")
        r.take(4 * (k + 1))
        method = r.u8()
        if method in (C.POS_RELIDX4, C.POS_BITMASK):
            r.take(r.u32())
        elif method == C.POS_GAPS:
            seen.add(("gaps-coder", r.u8()))
            continue
        seen.add(("pos", method))
        seen.add(("codes", r.u8()))
    assert {("pos", C.POS_RELIDX4), ("pos", C.POS_BITMASK)} <= seen
    assert {("codes", c) for c in (C.CODER_RAW, C.CODER_HUFFMAN, C.CODER_RANS)} <= seen
    assert {("gaps-coder", c) for c in (C.CODER_RAW, C.CODER_HUFFMAN, C.CODER_RANS)} <= seen


def _sections(data: bytes):
    import struct

    nsec = struct.unpack_from("<I", data, 8)[0]
    pos, out = 12, []
    for _ in range(nsec):
        tag, length = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        out.append((tag, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return nsec, out


def test_version1_model_runs():
    model = build_model_from_weights(FIXTURES / "sqz_v1_lossy3.sqz")
    out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 5) and torch.isfinite(out).all()


def test_a_version2_file_keeps_loading_and_is_rewritten_as_version3_with_the_same_content():
    """``sqz_v2_lossless.sqz``: the lossless fixture written by the version-2 encoder (commit
    8a2e1d4), whose rANS bundle is one group for the file. Rewritten, each of its three tensors with
    rANS streams gets its own group: four bytes more each, the same values."""
    data = (FIXTURES / "sqz_v2_lossless.sqz").read_bytes()
    assert data[4:6] == b"\x02\x00"
    _, arrays = C.decode_sqz(data)
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], EXPECTED["lossless/" + k], err_msg=k)
    again = write_layout(read_layout(data))
    assert again[4:6] == b"\x03\x00" and len(again) == len(data) + 4 * 3
    _, arrays3 = C.decode_sqz(again)
    assert all(np.array_equal(arrays3[k], arrays[k]) for k in arrays)
