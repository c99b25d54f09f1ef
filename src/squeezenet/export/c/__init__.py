"""C export: a SqueezeNet as a self-contained integer C99 library, for hosts and microcontrollers.

``export_c`` calibrates, quantizes (``integerize``), optionally re-encodes codebook layers
into per-layer rANS streams (``streams``), plans the static arena (``arena``) and writes the
sources (``codegen``) into a folder. ``reference`` is the NumPy twin of the generated code
(same integers, bit for bit); ``benchmarks/c_toolchain.py`` (outside the package) builds and
runs the code with gcc, clang and arm-none-eabi-gcc under QEMU for the tests and the benchmark.
docs/c-export.md has the
arithmetic, the flash layout and measured sizes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from squeezenet.errors import DeployError
from squeezenet.export.formats import DEFAULT_CALIBRATION_METHOD, DEFAULT_SQUEEZE_BITS, DEFAULT_STEM_BITS
from squeezenet.weights.sqz_codec import MAGIC as SQZ_MAGIC


@dataclass
class CExport:
    folder: Path
    net: object  # QuantNet
    arena_bytes: int
    weight_bytes: int
    plan: str
    files: dict[str, str] = field(default_factory=dict)


def is_sqz(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == SQZ_MAGIC
    except OSError:
        return False


def check_output_folder(path: str | Path) -> Path:
    """Fail early (before any slow work) when the folder ``path`` cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DeployError(f"cannot write {path}: it exists and is not a folder")
    parent = path.parent if str(path.parent) else Path(".")
    for above in (parent, *parent.parents):
        if above.exists():
            if not above.is_dir():
                raise DeployError(f"cannot write {path}: {above} is not a folder")
            break
    if not parent.is_dir():
        raise DeployError(f"cannot write {path}: folder {parent} does not exist")
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise DeployError(f"cannot write {path}: permission denied")
    return path


def write_folder(files: dict[str, str | bytes], folder: str | Path) -> Path:
    """All files, whole, or none: written into a temporary folder beside ``folder``, then moved.

    A new folder is one rename; into an existing folder each file replaces its namesake
    (``os.replace``) only after every file has been written.
    """
    folder = check_output_folder(folder)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent if str(folder.parent) else "."))
    except OSError as exc:
        raise DeployError(f"cannot write {folder}: {exc.strerror or exc}") from None
    try:
        for name, content in files.items():
            if isinstance(content, bytes):
                (tmp / name).write_bytes(content)
            else:
                (tmp / name).write_text(content)
            os.chmod(tmp / name, 0o644)
        if folder.exists():
            for name in files:
                os.replace(tmp / name, folder / name)
        else:
            os.chmod(tmp, 0o755)
            os.rename(tmp, folder)
    except OSError as exc:
        raise DeployError(f"cannot write {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_c(
    model,
    calibration: np.ndarray,
    method: str = DEFAULT_CALIBRATION_METHOD,
    storage: str = "auto",
    weights_are_compressed: bool = False,
    size: int | None = None,
    squeeze_bits: int = DEFAULT_SQUEEZE_BITS,
    stem_bits: int = DEFAULT_STEM_BITS,
):
    """The integer model and its C sources, in memory: (QuantNet, files, facts)."""
    from squeezenet.export.c.arena import describe, plan_arena
    from squeezenet.export.c.codegen import generate
    from squeezenet.export.c.integerize import activation_ranges, check_supported, layer_statistics, quantize_net
    from squeezenet.export.c.streams import encode_layer

    check_supported(model)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise DeployError(f"calibration data must be a non-empty (N, C, H, W) array, got shape {calibration.shape}")
    ranges = activation_ranges(model, calibration, method)
    stats = layer_statistics(model, calibration)
    net = quantize_net(
        model, ranges, storage, weights_are_compressed, size, stats, squeeze_bits=squeeze_bits, stem_bits=stem_bits
    )
    streams = None
    if net.storage == "compressed":
        streams = {
            conv.name: encode_layer(conv.positions, conv.codes, conv.weight.size, len(conv.codebook))
            for conv in net.convs()
            if conv.codebook is not None
        }
    arena, bufs = plan_arena(net)
    files, facts = generate(net, arena, bufs, streams)
    facts["plan"] = describe(arena, bufs)
    facts["calibration"] = {"images": len(calibration), "method": method}
    facts["squeeze_bits"], facts["stem_bits"] = squeeze_bits, stem_bits
    return net, files, facts


def export_c(
    model,
    folder: str | Path,
    calibration: np.ndarray,
    method: str = DEFAULT_CALIBRATION_METHOD,
    storage: str = "auto",
    weights_are_compressed: bool = False,
    size: int | None = None,
    squeeze_bits: int = DEFAULT_SQUEEZE_BITS,
    stem_bits: int = DEFAULT_STEM_BITS,
) -> CExport:
    """Write the C library of ``model`` into ``folder`` (see the module docstring)."""
    folder = check_output_folder(folder)
    net, files, facts = build_c(
        model, calibration, method, storage, weights_are_compressed, size, squeeze_bits, stem_bits
    )
    write_folder(files, folder)
    return CExport(folder, net, facts["arena_bytes"], facts["weight_bytes"], facts["plan"], files)
