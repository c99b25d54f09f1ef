"""The metadata section: the model's description as JSON, stored the smallest way. Version 2 may
refer to the ImageNet-1k class list by name and digest instead of holding its 1000 names."""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
import zlib
from pathlib import Path

from .constants import MAX_META_BYTES, META_SHARED
from .reader import SqzError, check

SHARED_LIST_FILE = "imagenet1k.tsv"  # beside the sqz_codec folder; the package ships it (squeezenet/weights/)
# metadata is small: a 1 MiB dictionary (the preset's 64 MiB would be allocated by every reader)
LZMA_RAW = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 20}]
XZ_MEMLIMIT = 96 << 20  # version-1 files used xz's preset 9 (a 64 MiB dictionary); nothing larger is read


def shared_values() -> dict[str, str]:
    """{name: metadata value} of the lists a version-2 file may refer to instead of holding:
    the ImageNet-1k class names and wnids, exactly as ``WeightsInfo.to_metadata`` writes them.
    Read once per version of the file (every file read or written asks: 2 ms a time)."""
    path = Path(__file__).parent.with_name(SHARED_LIST_FILE)
    try:
        stat = path.stat()
    except OSError:
        return {}
    return dict(_shared_values_of(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4)
def _shared_values_of(path: str, mtime_ns: int, size: int) -> dict[str, str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    rows = [[f.strip() for f in line.split("\t")] for line in lines if line.strip()]
    rows = [f for f in rows if len(f) >= 3 and f[0].isdigit()]
    return {
        "imagenet1k.names": json.dumps([f[2] for f in rows]),
        "imagenet1k.wnids": json.dumps([f[1] for f in rows]),
    }


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def pack_metadata(meta: dict, shared: bool = True) -> bytes:
    """Smallest of: plain JSON, zlib, or raw LZMA2 of {"meta", "shared"} (method 3, version 2),
    where values equal to a shared list are stored by name (when ``shared``). Method 2 (xz)
    is only read: method 3 is never larger."""
    raw = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
    options = [b"\x00" + raw, b"\x01" + zlib.compress(raw, 9)]
    names = {value: name for name, value in shared_values().items()} if shared else {}
    refs = {k: f"{names[v]}@{_digest(v)}" for k, v in meta.items() if isinstance(v, str) and v in names}
    body = {"meta": {k: v for k, v in meta.items() if k not in refs}, "shared": refs}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    options.append(bytes([META_SHARED]) + lzma.compress(text, format=lzma.FORMAT_RAW, filters=LZMA_RAW))
    return min(options, key=len)


def unpack_metadata(payload) -> dict:
    check(len(payload) >= 1, "empty metadata section")
    method, body = payload[0], bytes(payload[1:])
    try:
        if method == 0:
            raw = body
        elif method == 1:
            d = zlib.decompressobj()
            raw = d.decompress(body, MAX_META_BYTES)
            check(not d.unconsumed_tail, "metadata too large")
        elif method in (2, META_SHARED):
            if method == 2:
                d = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)
            else:
                d = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=LZMA_RAW)
            raw = d.decompress(body, MAX_META_BYTES)
            check(d.eof, "metadata truncated or too large")
        else:
            raise SqzError(f"unknown metadata compression {method}")
        meta = json.loads(raw.decode("utf-8"))
    except (zlib.error, lzma.LZMAError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SqzError(f"corrupted metadata ({exc})") from None
    check(isinstance(meta, dict), "metadata is not a JSON object")
    if method == META_SHARED:
        meta = _resolve_shared(meta)
    return meta


def _resolve_shared(body: dict) -> dict:
    meta, refs = body.get("meta"), body.get("shared")
    check(isinstance(meta, dict) and isinstance(refs, dict), "malformed shared metadata")
    values = None
    for key, ref in refs.items():
        check(isinstance(ref, str) and ref.count("@") == 1, f"malformed shared metadata reference {key!r}")
        name, digest = ref.split("@")
        if values is None:
            values = shared_values()
        check(bool(values), f"metadata {key!r} refers to {name}, which needs {SHARED_LIST_FILE} beside sqz_codec")
        check(name in values, f"metadata {key!r} refers to an unknown shared list {name!r}")
        check(_digest(values[name]) == digest, f"metadata {key!r}: {SHARED_LIST_FILE} differs from the writer's")
        meta[key] = values[name]
    return meta
