"""``.sqzd`` updates between ``.sqz`` files, for the command line and the service: the codec
(``sqz_codec.delta``) with files, one-line ``WeightsError``s and atomic writes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from squeezenet.atomic import atomic_write_bytes
from squeezenet.errors import WeightsError
from squeezenet.weights.sqz_codec import SqzError
from squeezenet.weights.sqz_codec.delta import make_delta
from squeezenet.weights.sqz_codec.delta_file import sha256
from squeezenet.weights.sqz_codec.patch import apply_delta

DELTA_SUFFIX = ".sqzd"


@dataclass
class DeltaResult:
    data: bytes
    base_sha256: str
    result_sha256: str
    report: dict
    seconds: float


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except IsADirectoryError:
        raise WeightsError(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read ({exc.strerror})") from None


def delta_bytes(base: bytes, new: bytes, base_name: str = "BASE", new_name: str = "NEW") -> DeltaResult:
    start = time.perf_counter()
    try:
        data, report = make_delta(base, new)
    except SqzError as exc:
        raise WeightsError(f"{base_name} or {new_name}: {exc}") from None
    return DeltaResult(data, sha256(base), sha256(new), report, time.perf_counter() - start)


def patch_bytes(base: bytes, delta: bytes, delta_name: str = "delta") -> DeltaResult:
    start = time.perf_counter()
    try:
        data = apply_delta(base, delta)
    except SqzError as exc:
        raise WeightsError(f"{delta_name}: {exc}") from None
    return DeltaResult(data, sha256(base), sha256(data), {}, time.perf_counter() - start)


def delta_files(base: str | Path, new: str | Path, out: str | Path) -> DeltaResult:
    result = delta_bytes(_read(base, ".sqz file"), _read(new, ".sqz file"), str(base), str(new))
    atomic_write_bytes(out, result.data, WeightsError)
    return result


def patch_files(base: str | Path, delta: str | Path, out: str | Path) -> DeltaResult:
    """NEW from BASE and the delta, written atomically: a failed patch leaves ``out`` as it was."""
    result = patch_bytes(_read(base, ".sqz file"), _read(delta, ".sqzd delta"), str(delta))
    atomic_write_bytes(out, result.data, WeightsError)
    return result
