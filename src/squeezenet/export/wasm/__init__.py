"""WebAssembly export: the integer C export compiled for ``wasm32``, its weight table beside it, and an ES
module that runs them.

A browser that classifies in the page then downloads the model (about the size of its ``.sqz``),
not a general runtime many times larger. The C sources are ``build_c``'s, unchanged but for
``glue.c`` (the entry points a WebAssembly host can call); clang compiles them with no C library.
The module holds the code alone (built without ``squeezenet_weights.c``): the loader writes the
weight table (``squeezenet_weights.bin``, export.c.table) into its memory and binds it, so that a
model fine-tuned from this one reaches a page as a new table for the module it already holds.
Two builds: one with WASM SIMD128 (every current browser and Node.js; the hot convolutions then
run the kernels of ``kernels_wasm.c``), one without (engines that lack SIMD128); for int8 weights a
third, with relaxed SIMD too (``kernels_relaxed.c``: int8 dot products, one vpdpbusd on x86 CPUs with
AVX-VNNI), where a clang new enough for it is installed. The loader picks the first the engine runs.
All give the integers of ``squeezenet.export.c.reference``, bit for bit.

The folder: ``squeezenet.wasm``, ``squeezenet-portable.wasm`` (and ``squeezenet-relaxed.wasm``);
``squeezenet_weights.bin``; ``squeezenet.json``, the model card (shape, classes, preprocessing, score
scale, each build's and the table's size and SHA-256, the table's layout id); ``squeezenet.js``, the
loader (no dependency beyond ``preprocess.js``, the project's preprocessing in JavaScript, copied
beside it); ``README.md``. docs/wasm.md has the API and measured figures.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from squeezenet.errors import DeployError
from squeezenet.export.c import build_c, check_output_folder, write_folder
from squeezenet.export.c.pixels import input_settings
from squeezenet.export.c.table import TABLE_FILE
from squeezenet.export.formats import RELAXED_TOOLCHAIN_HINT, WASM_TOOLCHAIN_HINT, find_clang, find_relaxed_clang

CARD_FILE = "squeezenet.json"
LOADER_FILE = "squeezenet.js"
PREPROCESS_FILE = "preprocess.js"
CARD_FORMAT = "squeezenet-wasm"
CARD_VERSION = 2  # 2: the weights are a table beside the modules
# build name -> (file, clang flags beyond the common ones); the loader takes the first the engine validates
BUILDS = {
    "relaxed": ("squeezenet-relaxed.wasm", ("-msimd128", "-mrelaxed-simd")),  # int8 weights only
    "simd": ("squeezenet.wasm", ("-msimd128",)),
    "portable": ("squeezenet-portable.wasm", ()),
}
EXPORTS = (
    "squeezenet_classify",
    "squeezenet_image",
    "squeezenet_scores",
    "squeezenet_input_size",
    "squeezenet_input_channels",
    "squeezenet_num_classes",
    "squeezenet_dots",
    "squeezenet_table",
    "squeezenet_use_table",
)
# -nostdlib: no C library; -mbulk-memory: memset/memcpy as instructions, not calls into one
# SQN_LINKED_TABLE=0: the weight table is not compiled in (the loader binds squeezenet_weights.bin)
COMMON_FLAGS = (
    "--target=wasm32",
    "-O2",
    "-std=c99",
    "-nostdlib",
    "-mbulk-memory",
    "-Wall",
    "-Wextra",
    "-DSQN_LINKED_TABLE=0",
)
LINK_FLAGS = ("-Wl,--no-entry", "-Wl,--strip-all", "-Wl,-z,stack-size=131072", *(f"-Wl,--export={e}" for e in EXPORTS))


@dataclass
class WasmExport:
    folder: Path
    net: object  # QuantNet
    card: dict
    files: dict[str, bytes | str]
    sources: dict[str, str]  # the C export it was compiled from (to build it natively beside)


def _package_file(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text()


def compile_wasm(sources: dict[str, str], build: str, extra_flags: tuple[str, ...] = ()) -> bytes:
    """The ``.wasm`` of the C export's ``sources`` (file name -> text) for ``build`` (``BUILDS``)."""
    clang = find_relaxed_clang() if build == "relaxed" else find_clang()
    if clang is None:
        raise DeployError(RELAXED_TOOLCHAIN_HINT)
    with tempfile.TemporaryDirectory(prefix="squeezenet-wasm-") as tmp:
        folder = Path(tmp)
        for name, text in {**sources, "squeezenet_wasm.c": _package_file(__name__, "glue.c")}.items():
            if isinstance(text, str):
                (folder / name).write_text(text)
        units = ["squeezenet_model.c", "squeezenet_wasm.c"]
        out = folder / "out.wasm"
        command = [clang, *COMMON_FLAGS, *BUILDS[build][1], *extra_flags, *LINK_FLAGS, *units, "-o", str(out)]
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            first = next((line for line in lines if "error" in line), lines[0] if lines else "no message")
            if "wasm32" in first or "wasm-ld" in first:
                raise DeployError(f"{WASM_TOOLCHAIN_HINT}: {first.strip()}")
            raise DeployError(f"clang could not build the WebAssembly module: {first.strip()}")
        return out.read_bytes()


def builds_for(storage: str) -> list[str]:
    """The builds of ``BUILDS`` an export of ``storage`` weights gets: relaxed SIMD's int8 products
    only help int8 weights (a compressed build's codebook values are wider), and need clang 16+."""
    relaxed = storage == "int8" and find_relaxed_clang() is not None
    return [name for name in BUILDS if name != "relaxed" or relaxed]


def _build_facts(data: bytes, file: str) -> dict:
    return {"file": file, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def model_card(net, preprocessing: dict, builds: dict[str, dict], table: dict, calibration: dict) -> dict:
    """What the loader needs besides the module: the input it takes, what the scores mean, the builds."""
    return {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "arch": net.arch,
        "weights": net.storage,
        "input_size": net.size,
        "input_channels": net.in_chans,
        "num_classes": net.num_classes,
        "score_scale": net.score_scale,
        "preprocessing": preprocessing,
        "classes": list(net.classes or [f"class {i}" for i in range(net.num_classes)]),
        "builds": builds,
        "table": table,
        "calibration": calibration,
    }


def _readme(card: dict) -> str:
    sizes = ", ".join(f"`{b['file']}` {b['bytes']:,} bytes" for b in card["builds"].values())
    return f"""# {card["arch"]} as WebAssembly ({card["weights"]} weights)

Generated by `squeezenet export --format wasm`: the integer C export compiled for wasm32 ({sizes}),
and its weight table (`{TABLE_FILE}`, {card["table"]["bytes"]:,} bytes), which the loader writes into
the module's memory: a model fine-tuned from this one is a new table for the same module. In a
browser (a module Web Worker keeps the page responsive), in Node.js, or in any engine that runs
WebAssembly with SIMD128 (else the portable build):

```js
import {{ loadModel }} from "./{LOADER_FILE}";
const model = await loadModel(new URL("./", import.meta.url));  // fetches {CARD_FILE}, the .wasm, the table
const {{ top }} = model.classify(imageData);  // ImageData (any size: resized and cropped here) or
                                               // {card["input_size"]}x{card["input_size"]} pixels (Uint8Array)
```

The scores are the integers of the C export; `score` is the fp32 model's logit they stand for
(`score_scale` {card["score_scale"]:.6g}).
"""


def export_wasm(model, folder: str | Path, calibration: np.ndarray, **options) -> WasmExport:
    """Write the WebAssembly builds of ``model``, its card and its loader into ``folder``; ``options``
    are ``build_c``'s (method, storage, weights_are_compressed, size, squeeze_bits, stem_bits)."""
    folder = check_output_folder(folder)
    find_clang()  # before the slow part
    net, sources, facts = build_c(model, calibration, **options)
    binaries = {name: compile_wasm(sources, name) for name in builds_for(net.storage)}
    builds = {name: _build_facts(data, BUILDS[name][0]) for name, data in binaries.items()}
    preprocessing = json.loads(json.dumps(input_settings(model.weights_info.preprocessing, net.size)))
    table = {**_build_facts(sources[TABLE_FILE], TABLE_FILE), "layout": facts["layout"]}
    card = model_card(net, preprocessing, builds, table, facts["calibration"])
    files: dict[str, bytes | str] = {BUILDS[name][0]: data for name, data in binaries.items()}
    files[TABLE_FILE] = sources[TABLE_FILE]
    files[CARD_FILE] = json.dumps(card, indent=1) + "\n"
    files[LOADER_FILE] = _package_file(__name__, "squeezenet.js")
    files[PREPROCESS_FILE] = _package_file("squeezenet.data", "preprocess.js")
    files["README.md"] = _readme(card)
    write_folder(files, folder)
    return WasmExport(folder, net, card, files, sources)
