"""The format's codes and limits (docs/sqz-format.md): the numbers a reader and a writer must agree on.

The limits are what a reader allocates at most, checked before anything is allocated, so that a
hostile file cannot ask for gigabytes."""

from __future__ import annotations

import numpy as np

MAGIC = b"SQZ\x00"
# written: 3; still read: 2 (one rANS group for the whole file) and 1 (no packed codebooks, deflated
# values or shared metadata)
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MAX_TENSOR_NUMEL = 1 << 26  # 64M elements per tensor
MAX_TOTAL_NUMEL = 1 << 27  # all tensors together
MAX_ALPHABET = 4096
MAX_META_BYTES = 1 << 24  # decompressed metadata JSON
MAX_NDIM = 8

# rANS in the file: probabilities in units of 2^-PROB_BITS; a stream of n symbols has ceil(n / steps) lanes
PROB_BITS = 15
PROB_SCALE = 1 << PROB_BITS
DEFAULT_STEPS = 4096  # symbols per lane; lanes of all streams are decoded together

CODER_RAW, CODER_HUFFMAN, CODER_RANS, CODER_RANS_Z = 0, 1, 2, 3  # 3: rANS with a deflated table (v2)
CODER_NAMES = {CODER_RAW: "raw", CODER_HUFFMAN: "huffman", CODER_RANS: "rans", CODER_RANS_Z: "rans"}
POS_ALL, POS_RELIDX4, POS_BITMASK, POS_GAPS = 0, 1, 2, 3
POS_NAMES = {POS_ALL: "all", POS_RELIDX4: "relidx4", POS_BITMASK: "bitmask", POS_GAPS: "gaps"}
KIND_DENSE, KIND_SPARSE = 0, 1
DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f2")}
DTYPE_CODES = {"float32": 0, "float16": 1}
# version 2: codebooks sorted and stored as exp-Golomb-coded gaps between their values' ordered
# bit patterns; dense values deflated. Code = plain code + 2.
PACKED = 2
META_SHARED = 3  # metadata method: raw LZMA2; values equal to a shared list (shared_values()) stored by name

SEC_META, SEC_TENSOR, SEC_RANS = b"META", b"TENS", b"RANS"
