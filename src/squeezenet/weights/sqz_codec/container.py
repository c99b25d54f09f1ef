"""The file: magic, version, sections (metadata, one per tensor, the rANS bundle), each with its
CRC32, then the file's length and CRC32 (docs/sqz-format.md). In the bundle each tensor with rANS
streams has its group (version 3), so a patch can copy a tensor's coded symbols with its section."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from .bundle import RansStream, decode_groups, encode_groups, rans_decode, split_groups
from .constants import DEFAULT_STEPS, MAGIC, MAX_TOTAL_NUMEL, READABLE_VERSIONS, SEC_META, SEC_RANS, SEC_TENSOR, VERSION
from .metadata import pack_metadata, unpack_metadata
from .reader import Reader, check, checked_file
from .tensors import PendingTensor, TensorPlan, decode_tensor, encode_tensor, finish_tensor, stored_codes


def _section(tag: bytes, payload: bytes) -> bytes:
    return tag + struct.pack("<I", len(payload)) + payload + struct.pack("<I", zlib.crc32(payload))


def encode_sqz(
    meta: dict, tensors: list[TensorPlan], steps: int = DEFAULT_STEPS, shared_metadata: bool = True
) -> tuple[bytes, dict]:
    """-> (file bytes, per-tensor size breakdown)."""
    sections = [pack_metadata(meta, shared_metadata)]
    groups: list[list[RansStream]] = []
    report = {"metadata": len(_section(SEC_META, sections[0]))}
    start = 0
    for plan in tensors:
        body, rs, info = encode_tensor(plan)
        sections.append(body)
        if rs:
            groups.append(rs)
        section = len(_section(SEC_TENSOR, body))
        report[plan.name] = {**info, "section": section, "rans_streams": (start, start + len(rs))}
        start += len(rs)
    bundle = bundle_payload(groups, steps)
    report["rans_bundle"] = len(_section(SEC_RANS, bundle))
    data = assemble_sqz(sections[0], sections[1:], bundle)
    report["total"] = len(data)
    return data, report


def bundle_payload(groups: list[list[RansStream]], steps: int, coded: dict[int, bytes] | None = None) -> bytes:
    """The RANS section: ``steps``, then each group's bytes; ``coded`` holds groups already coded
    (by index), which are copied."""
    coded = coded or {}
    todo = [g for g in range(len(groups)) if g not in coded]
    fresh = encode_groups([s for g in todo for s in groups[g]], [len(groups[g]) for g in todo], steps) if todo else []
    coded = {**coded, **dict(zip(todo, fresh, strict=True))}
    return struct.pack("<I", steps) + b"".join(coded[g] for g in range(len(groups)))


def assemble_sqz(meta_payload: bytes, tensor_payloads: list[bytes], bundle_payload: bytes) -> bytes:
    """The file around its sections' payloads: header, sections with their CRCs, length, CRC."""
    parts = [_section(SEC_META, meta_payload)] + [_section(SEC_TENSOR, t) for t in tensor_payloads]
    parts.append(_section(SEC_RANS, bundle_payload))
    body = MAGIC + struct.pack("<HHI", VERSION, 0, len(parts)) + b"".join(parts)
    body += struct.pack("<I", len(body) + 8)
    return body + struct.pack("<I", zlib.crc32(body))


def decode_sqz(data: bytes, expected_shapes=None) -> tuple[dict, dict[str, np.ndarray]]:
    """-> (metadata dict, {name: float32 array}); raises SqzError on any defect.

    ``expected_shapes``: {name: shape}, or a callable metadata -> {name: shape} (run before
    any tensor is allocated), to check every tensor against the architecture.
    """
    parsed = parse_sqz(data, expected_shapes)
    return parsed.meta, {p.name: finish_tensor(p, parsed.symbols) for p in parsed.tensors}


def decode_sqz_codes(data: bytes, expected_shapes=None) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``decode_sqz``, and each quantized tensor's stored codes (``stored_codes``): how the file numbers
    its codebook, which a model fine-tuned with frozen indices keeps from its base, so that an export
    that numbers its codebooks the same way changes only the values."""
    parsed = parse_sqz(data, expected_shapes)
    arrays = {p.name: finish_tensor(p, parsed.symbols) for p in parsed.tensors}
    codes = {p.name: stored_codes(p, parsed.symbols) for p in parsed.tensors if p.dense is None}
    return parsed.meta, arrays, codes


@dataclass
class ParsedSqz:
    """A checked file, its sections read and its rANS bundle decoded, before tensors are built."""

    meta: dict
    meta_payload: bytes
    tensors: list[PendingTensor]
    symbols: list[np.ndarray] | None  # the rANS bundle's streams, in file order (None: not decoded yet)
    steps: int
    version: int
    sections: list[bytes]  # the tensor sections' payloads, in file order
    streams: list[RansStream]  # the bundle's streams: sizes and tables
    bundle: bytes  # the RANS section's payload
    groups: list[memoryview] | None  # version 3: each group's bytes, in the order of the tensors with streams
    decoded: dict = field(default_factory=dict)  # ``prefetch``: stream index -> symbols

    def decode_bundle(self) -> list[np.ndarray]:
        if self.symbols is None:
            if self.groups is None:
                coded = memoryview(self.bundle)[4:]
                self.symbols = rans_decode(coded, self.streams, self.steps) if self.streams else []
            else:
                self.symbols = decode_groups(self.groups, self.streams, self.group_sizes(), self.steps)
        return self.symbols

    def prefetch(self, tensors: list[int | None]) -> None:
        """Decode the groups of these tensors (None: not in this file), together (one pass), for
        ``symbols_of``."""
        todo = [i for i in dict.fromkeys(tensors) if i is not None and self.group_of(i) is not None
                and self.tensors[i].streams[0] not in self.decoded]  # fmt: skip
        if self.symbols is not None or not todo:
            return
        own = [s for i in todo for s in self.tensors[i].streams]
        sizes = [len(self.tensors[i].streams) for i in todo]
        groups = [self.group_of(i) for i in todo]
        for s, sym in zip(own, decode_groups(groups, [self.streams[s] for s in own], sizes, self.steps), strict=True):
            self.decoded[s] = sym

    def symbols_of(self, i: int) -> list[np.ndarray | None]:
        """The symbols of tensor i's streams at their indices: its group decoded alone if it can be."""
        if not self.tensors[i].streams:
            return []
        if self.group_of(i) is None or self.symbols is not None:
            return self.decode_bundle()
        self.prefetch([i])
        return [self.decoded.get(s) for s in range(len(self.streams))]

    def group_sizes(self) -> list[int]:
        return [len(p.streams) for p in self.tensors if p.streams]

    def group_of(self, i: int) -> memoryview | None:
        """Tensor i's coded symbols as a version-3 group (None: no streams, or an older file)."""
        if self.groups is None or not self.tensors[i].streams:
            return None
        return self.groups[sum(1 for p in self.tensors[:i] if p.streams)]


def parse_sqz(data: bytes, expected_shapes=None, decode_bundle: bool = True) -> ParsedSqz:
    """Every check of ``decode_sqz``; raises SqzError on any defect. Without ``decode_bundle`` the
    rANS data waits for ``ParsedSqz.decode_bundle`` (its checks with it): a patch that copies
    every stream as it is never decodes them."""
    data = bytes(data)
    r = checked_file(data, MAGIC, ".sqz file", 20)
    version, _flags, nsec = r.unpack("HHI")
    check(version in READABLE_VERSIONS, f"unsupported .sqz version {version} (this reader knows 1 to {VERSION})")
    check(3 <= nsec <= r.left // 12, f"bad section count {nsec}")
    meta = None
    meta_payload = b""
    pending: list[PendingTensor] = []
    sections: list[bytes] = []
    rans: list[RansStream] = []
    budget = [MAX_TOTAL_NUMEL]
    bundle = None
    for i in range(nsec):
        tag = bytes(r.take(4))
        payload = r.take(r.u32())
        check(zlib.crc32(payload) == r.u32(), f"corrupted .sqz section {i} ({tag!r}: CRC32 mismatch)")
        if i == 0:
            check(tag == SEC_META, "first section is not metadata")
            meta, meta_payload = unpack_metadata(payload), bytes(payload)
            if callable(expected_shapes):
                expected_shapes = expected_shapes(meta)
        elif i == nsec - 1:
            check(tag == SEC_RANS, "last section is not the rANS bundle")
            bundle = payload
        else:
            check(tag == SEC_TENSOR, f"unknown section {tag!r}")
            pending.append(decode_tensor(payload, budget, rans, expected_shapes))
            sections.append(bytes(payload))
    r.done()
    names = [p.name for p in pending]
    check(len(set(names)) == len(names), "duplicate tensor names")
    if expected_shapes is not None:
        missing = [k for k in expected_shapes if k not in names]
        check(not missing, f"tensors missing: {missing[:3]}")
    br = Reader(bundle, "rANS section")
    steps = br.u32()
    check(1 <= steps <= 1 << 24, f"bad rANS step count {steps}")
    check(bool(rans) or br.left == 0, "unexpected rANS data")
    bundle = bytes(bundle)
    groups = None
    if version >= 3:
        sizes = [len(p.streams) for p in pending if p.streams]
        groups = split_groups(memoryview(bundle)[4:], [s.n for s in rans], sizes, steps)
    parsed = ParsedSqz(meta, meta_payload, pending, None, steps, version, sections, rans, bundle, groups)
    if decode_bundle:
        parsed.decode_bundle()
    return parsed
