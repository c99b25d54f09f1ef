"""The export formats and their fixed facts, importable without PyTorch (the CLI's parser reads them)."""

import functools
import re
import shutil
import subprocess
from pathlib import Path

from squeezenet.errors import DeployError

FORMATS = ("onnx", "torchscript", "c", "wasm")
INTEGER_FORMATS = ("c", "wasm")  # the integer C runtime: compiled by the user (c) or by the export (wasm)
MIN_OPSET = 17  # ceil-mode MaxPool and the ops the exporters write need opset 17
DEFAULT_OPSET = 17
WIDE_BITS = (8, 12)  # --format c --stem-bits / --squeeze-bits: uint8, or 12 bits in uint16
DEFAULT_STEM_BITS = 12
DEFAULT_SQUEEZE_BITS = 12
# int8 activation ranges (ONNX --int8 and --format c): ONNX Runtime's histogram collectors
# (percentile, entropy) or the plain maximum (minmax), on at most this many calibration images
CALIBRATION_METHODS = ("percentile", "minmax", "entropy")
DEFAULT_CALIBRATION_METHOD = "percentile"
DEFAULT_CALIBRATION_LIMIT = 128

# --format wasm compiles the C export with clang for wasm32; clang calls wasm-ld (Debian: lld)
WASM_TOOLCHAIN_HINT = "the WebAssembly export needs clang and wasm-ld (Debian: apt-get install clang lld)"


def find_clang() -> str:
    """clang and the linker it calls for wasm32, or one line saying how to install them. Here, not
    in ``export.wasm``, so that the server's options can check it without loading the C export."""
    clang = shutil.which("clang")
    if clang is None or shutil.which("wasm-ld") is None:
        raise DeployError(WASM_TOOLCHAIN_HINT)
    return clang


# the relaxed SIMD build (int8 weights) needs clang 16 or newer and the wasm-ld beside it (Debian
# bookworm's clang is 14: apt-get install clang-19 lld-19); without one, the export leaves that build out
RELAXED_MIN_CLANG = 16
RELAXED_CLANGS = ("clang", *(f"clang-{v}" for v in range(21, RELAXED_MIN_CLANG - 1, -1)))
RELAXED_TOOLCHAIN_HINT = (
    "no relaxed SIMD build: it needs clang 16 or newer with its lld (apt-get install clang-19 lld-19)"
)


@functools.cache
def find_relaxed_clang() -> str | None:
    """The first clang of ``RELAXED_CLANGS`` new enough for ``-mrelaxed-simd`` whose own wasm-ld is
    beside it (an older linker may not know the instructions), or None."""
    for name in RELAXED_CLANGS:
        path = shutil.which(name)
        if path is None or _clang_major(path) < RELAXED_MIN_CLANG:
            continue
        if (Path(path).resolve().parent / "wasm-ld").exists():
            return path
    return None


def _clang_major(path: str) -> int:
    try:
        text = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    found = re.search(r"clang version (\d+)", text)
    return int(found.group(1)) if found else 0
