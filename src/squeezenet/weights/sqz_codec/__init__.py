"""Pure-numpy codec of the ``.sqz`` compressed-weights format (see docs/sqz-format.md).

Every length and count is checked against the file size, the tensor shape and fixed caps before
anything is allocated; any defect raises ``SqzError``.

By concern: ``reader`` (bounds-checked bytes, ``SqzError``), ``constants`` (the format's codes
and limits); the entropy coders ``freqs`` (frequency tables), ``rans`` (also the C export's
per-layer streams), ``huffman`` (and raw bit packing), ``values`` (version 2's packed codebooks
and deflated values), ``streams`` (a symbol stream with its smallest coder), ``bundle`` (the file's
rANS lanes, one group per tensor); ``positions`` (the
sparse-position schemes and gap symbols), ``tensors``, ``metadata`` and ``container`` (the file).

The package imports nothing but the standard library and numpy, and its modules import each
other only relatively, so that the PyTorch-free runtime can load this folder by path without
running ``squeezenet/weights/__init__`` (which imports torch), in the project or copied beside
it (``imagenet1k.tsv``, the class list a version-2 file may refer to, is read from beside the
folder). Loaded by path, it must be a package whose submodules are found in the folder, and it
must be in ``sys.modules`` before it runs (its relative imports and dataclasses look it up):

    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

(``squeezenet.runtime.numpy_runtime.load_sibling`` does this for files and folders.)
"""

from __future__ import annotations

from .bundle import RansStream, decode_groups, encode_groups, rans_decode, rans_encode
from .constants import (
    CODER_HUFFMAN,
    CODER_NAMES,
    CODER_RANS,
    CODER_RANS_Z,
    CODER_RAW,
    DEFAULT_STEPS,
    DTYPE_CODES,
    DTYPES,
    KIND_DENSE,
    KIND_SPARSE,
    MAGIC,
    MAX_ALPHABET,
    MAX_META_BYTES,
    MAX_NDIM,
    MAX_TENSOR_NUMEL,
    MAX_TOTAL_NUMEL,
    META_SHARED,
    PACKED,
    POS_ALL,
    POS_BITMASK,
    POS_GAPS,
    POS_NAMES,
    POS_RELIDX4,
    PROB_BITS,
    PROB_SCALE,
    READABLE_VERSIONS,
    SEC_META,
    SEC_RANS,
    SEC_TENSOR,
    VERSION,
)
from .container import decode_sqz, decode_sqz_codes, encode_sqz
from .freqs import normalize_freqs, normalize_weights, quantize_counts, table_weights
from .huffman import HUFFMAN_MAX_LEN, huffman_decode, huffman_encode, huffman_lengths, pack_bits, unpack_bits
from .metadata import LZMA_RAW, SHARED_LIST_FILE, XZ_MEMLIMIT, pack_metadata, shared_values, unpack_metadata
from .positions import gap_symbols, gaps_to_positions
from .rans import RANS_L, Lanes, cumulative, rans_encode_slots, rans_pop, rans_push, slot_symbols
from .reader import Reader, SqzError, check
from .streams import StreamPlan, plan_rans_counts, plan_stream, read_stream, stream_bytes
from .tensors import SparseTensor, TensorPlan, decode_tensor, encode_tensor
from .values import (
    deflate,
    exp_golomb_decode,
    exp_golomb_pack,
    float_keys,
    inflate_exact,
    keys_to_floats,
    pack_codebook,
    unpack_codebook,
)

__all__ = [
    "CODER_HUFFMAN",
    "CODER_NAMES",
    "CODER_RANS",
    "CODER_RANS_Z",
    "CODER_RAW",
    "DEFAULT_STEPS",
    "DTYPES",
    "DTYPE_CODES",
    "HUFFMAN_MAX_LEN",
    "KIND_DENSE",
    "KIND_SPARSE",
    "LZMA_RAW",
    "MAGIC",
    "MAX_ALPHABET",
    "MAX_META_BYTES",
    "MAX_NDIM",
    "MAX_TENSOR_NUMEL",
    "MAX_TOTAL_NUMEL",
    "META_SHARED",
    "PACKED",
    "POS_ALL",
    "POS_BITMASK",
    "POS_GAPS",
    "POS_NAMES",
    "POS_RELIDX4",
    "PROB_BITS",
    "PROB_SCALE",
    "RANS_L",
    "READABLE_VERSIONS",
    "SEC_META",
    "SEC_RANS",
    "SEC_TENSOR",
    "SHARED_LIST_FILE",
    "VERSION",
    "XZ_MEMLIMIT",
    "Lanes",
    "RansStream",
    "Reader",
    "SparseTensor",
    "SqzError",
    "StreamPlan",
    "TensorPlan",
    "check",
    "cumulative",
    "decode_groups",
    "decode_sqz",
    "decode_sqz_codes",
    "decode_tensor",
    "deflate",
    "encode_groups",
    "encode_sqz",
    "encode_tensor",
    "exp_golomb_decode",
    "exp_golomb_pack",
    "float_keys",
    "gap_symbols",
    "gaps_to_positions",
    "huffman_decode",
    "huffman_encode",
    "huffman_lengths",
    "inflate_exact",
    "keys_to_floats",
    "normalize_freqs",
    "normalize_weights",
    "pack_bits",
    "pack_codebook",
    "pack_metadata",
    "plan_rans_counts",
    "plan_stream",
    "quantize_counts",
    "rans_decode",
    "rans_encode",
    "rans_encode_slots",
    "rans_pop",
    "rans_push",
    "read_stream",
    "shared_values",
    "slot_symbols",
    "stream_bytes",
    "table_weights",
    "unpack_bits",
    "unpack_codebook",
    "unpack_metadata",
]
