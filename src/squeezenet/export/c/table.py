"""The weight table: every value of a C export that training changes, in one byte string apart from the code.

A fine-tuned model (``train --update-of``) keeps the architecture, so its C code is the same and
only its weights differ. Keeping them in one table that the code binds at run time lets a device
or a page take an update as a delta of the table alone, with the code it already runs untouched.
The code knows the table's layout (how many fields, each one's type and, where the architecture
fixes it, its length); ``layout_id`` names that layout, and a table made for other code is refused.

Format (little-endian; docs/c-export.md "The weight table"):

- header, six uint32: ``b"SQNW"``, version, layout id, the table's bytes, the field count, and the
  CRC-32 (zlib's) of every byte after the header;
- the directory: per field, its offset from the table's start and its element count (two uint32);
- the fields' data, each starting at a multiple of 4 bytes (the code reads int16 and int32 in place).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from squeezenet.errors import DeployError

MAGIC = b"SQNW"
VERSION = 1
HEADER = struct.Struct("<4sIIIII")
ENTRY = struct.Struct("<II")
ALIGN = 4
TABLE_FILE = "squeezenet_weights.bin"
# per convolution: bias_shift, entries, codes, gap_alphabet, layer_mult, layer_shift (the last five: compressed layers)
PARAMS = 6


@dataclass
class ParsedTable:
    layout: int
    fields: list[tuple[int, int]]  # (offset, count)
    data: bytes


class TableBuilder:
    """Collects the fields in the order the binder (templates/table.c) reads them, and where each goes."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self.convs: list[tuple[str, int, bool]] = []  # (descriptor, first field, compressed)
        self.bypasses: list[tuple[str, int]] = []  # (Fire descriptor, field)
        self.zero_field = self.scale_field = -1

    def _add(self, values, dtype) -> int:
        self.arrays.append(np.ascontiguousarray(np.asarray(values).astype(np.dtype(dtype).newbyteorder("<")).ravel()))
        return len(self.arrays) - 1

    def add_zero_points(self, values) -> None:
        """conv1's per-channel zero points (int16, one per input channel)."""
        self.zero_field = self._add(values, np.int16)

    def add_conv(self, target: str, bias, arrays: list[tuple[object, object]], params: list[int], compressed: bool):
        """A convolution (``sqn_bind_conv``): bias, its weight arrays (dense: weights, multipliers,
        shifts; compressed: its stream's words, then its tables and codebook), its ``PARAMS``."""
        if len(params) != PARAMS:
            raise ValueError(f"{target}: {len(params)} parameters, expected {PARAMS}")
        first = self._add(bias, np.int16)
        for values, dtype in arrays:
            self._add(values, dtype)
        self._add(params, np.int32)
        self.convs.append((target, first, compressed))

    def add_score_scale(self, scale: float) -> None:
        """What one integer score is worth (the fp32 model's logit): it changes with the weights."""
        self.scale_field = self._add(np.array([scale], np.float32).view(np.uint32), np.uint32)

    def add_bypass(self, target: str, mult: int, shift: int) -> None:
        self.bypasses.append((target, self._add([mult, shift], np.int32)))

    def to_bytes(self, layout: int) -> bytes:
        start = HEADER.size + ENTRY.size * len(self.arrays)
        offsets, body = [], bytearray()
        for values in self.arrays:
            body += b"\0" * (-(start + len(body)) % ALIGN)
            offsets.append(start + len(body))
            body += values.tobytes()
        body += b"\0" * (-(start + len(body)) % ALIGN)
        directory = b"".join(
            ENTRY.pack(offset, values.size) for offset, values in zip(offsets, self.arrays, strict=True)
        )
        after_header = directory + bytes(body)
        total = HEADER.size + len(after_header)
        return HEADER.pack(MAGIC, VERSION, layout, total, len(self.arrays), zlib.crc32(after_header)) + after_header

    def bind_source(self) -> str:
        """Where the binder puts each field: data it walks (a loop, not a call per layer: smaller code)."""
        convs = ",\n".join(f"    {{&{target}, {first}u, {int(c)}}}" for target, first, c in self.convs)
        bypasses = ",\n".join(f"    {{&{target}, {field}u}}" for target, field in self.bypasses)
        text = f"""#define SQN_ZERO_FIELD {self.zero_field}u
#define SQN_SCALE_FIELD {self.scale_field}u
#define SQN_CONVS {len(self.convs)}
#define SQN_BYPASSES {len(self.bypasses)}

/* the table's fields, by descriptor: each convolution's first field, and whether it is a stream */
static const sqn_conv_binding sqn_conv_bindings[SQN_CONVS] = {{
{convs}
}};
"""
        if self.bypasses:
            text += f"""
static const sqn_bypass_binding sqn_bypass_bindings[SQN_BYPASSES] = {{
{bypasses}
}};
"""
        return text

    @property
    def field_count(self) -> int:
        return len(self.arrays)


def layout_id(code: str) -> int:
    """The layout's name: a CRC-32 of the generated code (with the id itself left out), which holds
    every shape, flag and field the binder reads; two models share it exactly when a table of one
    binds into the code of the other."""
    return zlib.crc32(code.encode())


def parse_table(data: bytes) -> ParsedTable:
    """The header and directory of a weight table, checked as the C binder checks them (one line on a defect)."""
    if len(data) < HEADER.size:
        raise DeployError(f"not a weight table: {len(data)} bytes, shorter than its header")
    magic, version, layout, total, count, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DeployError("not a weight table (no SQNW magic)")
    if version != VERSION:
        raise DeployError(f"weight table version {version}: this code reads version {VERSION}")
    if total != len(data) or HEADER.size + ENTRY.size * count > total:
        raise DeployError(f"weight table damaged: it says {total} bytes and {count} fields, the file has {len(data)}")
    if zlib.crc32(data[HEADER.size :]) != crc:
        raise DeployError("weight table damaged: its CRC-32 does not match")
    fields = [ENTRY.unpack_from(data, HEADER.size + ENTRY.size * i) for i in range(count)]
    return ParsedTable(layout, fields, bytes(data))
