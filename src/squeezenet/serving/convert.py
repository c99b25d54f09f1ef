"""The child process that turns a weights file into what the server runs, and checks it.

    python -m squeezenet.serving.convert WEIGHTS OUTDIR [--calibration PATH ...] [--browser wasm|int8|fp32|none]

writes into OUTDIR:

- ``model.onnx``: the default engine's graph (``export.onnx.onnx_bytes`` rewritten by
  ``export.concat_free.split_concats``) with the class-activation maps as a second output;
- ``browser.onnx``: what the page runs in the browser; ``--browser w8a32`` (the default) the
  same graph with 8-bit weights (``serving.browser_model``), ``int8`` the int8 QDQ graph of
  ``export.onnx_int8`` calibrated on ``--calibration`` images, with the maps too; with
  ``--browser fp32`` the page downloads ``model.onnx`` itself;
- ``wasm/``: with ``--browser wasm``, what the page runs instead of an ONNX file: the folder of
  ``squeezenet export --format wasm`` (the integer C export compiled to WebAssembly, its model card
  and its loader), calibrated on ``--calibration`` images; the page keeps ``model.onnx`` for
  onnxruntime-web as the other choice;
- ``card.json``: the model card (architecture, weights SHA-256, file bytes, parameters, classes,
  wnids, preprocessing, licence, ...);
- ``weights.sqz``: the weights as given, when they are a ``.sqz`` (the server makes deltas between
  the models it kept from them);
- ``check.json``: the fp32 logits of a fixed random input, which the server compares with its
  own session's before swapping the model in.

Only this process imports PyTorch; it exits when done, so the server never holds torch's
~1 GB. The weights are read once: the bytes hashed are the bytes loaded (a copy in OUTDIR),
even if the file is replaced meanwhile. Any failure is one line on stderr,
``error: <message>``, and exit status 1: the server answers with that message and keeps
its old model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from squeezenet.serving.config import BROWSER_MODELS

PROBE_SEED = 0
KEPT_SQZ = "weights.sqz"
PROBE_SCALE = {1.0: 1.0, 255.0: 60.0}  # a probe input in the range the model expects


def probe_input(in_chans: int, side: int, pixel_range: float):
    """The fixed random input both processes run: (1, C, side, side) float32, seed ``PROBE_SEED``."""
    import numpy as np

    rng = np.random.default_rng(PROBE_SEED)
    return (rng.standard_normal((1, in_chans, side, side)) * PROBE_SCALE.get(pixel_range, 1.0)).astype(np.float32)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load_once(weights: Path, outdir: Path, name: str | None):
    """-> (file bytes, format, model): the bytes hashed are the bytes loaded (a private copy), even if
    the file is replaced meanwhile; errors name the file the user knows, not the copy."""
    from squeezenet.atomic import atomic_write_bytes
    from squeezenet.errors import WeightsError
    from squeezenet.weights import build_model_from_weights, detect_format
    from squeezenet.weights.loader import resolve_source

    source = resolve_source(weights)  # a path, or the file behind a catalogue tag
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{weights}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise WeightsError(f"{weights}: empty file")
    copy = atomic_write_bytes(outdir / ("weights" + source.suffix), data, WeightsError)
    shown = name or source.name
    kept = False
    try:
        model = build_model_from_weights(copy)
        provenance = model.weights_info.provenance
        if provenance.get("file") == copy.name:  # the loader names the file it read: the private copy
            provenance["file"] = shown
        kind = detect_format(copy)
        if kind == "sqz":  # kept: the base of the deltas to and from this model (GET /v1/model/delta)
            copy.replace(outdir / KEPT_SQZ)
            kept = True
        return data, kind, model, shown
    except WeightsError as exc:
        raise WeightsError(str(exc).replace(str(copy), name or str(weights))) from None
    finally:
        if not kept:
            copy.unlink()


def _checked_graph(model, weights: Path, threads: int | None):
    """-> (graph bytes, probe input, its logits, its maps): the served graph, checked against PyTorch."""
    import numpy as np
    import torch

    from squeezenet.errors import WeightsError
    from squeezenet.export.concat_free import split_concats
    from squeezenet.export.onnx import onnx_bytes, ort_session

    info = model.weights_info
    graph = split_concats(onnx_bytes(model, size=info.preprocessing.crop, metadata=False, cam=True))
    probe = probe_input(info.in_chans, info.preprocessing.crop, info.preprocessing.pixel_range)
    logits, cam = ort_session(graph, threads=threads).run(None, {"input": probe})
    with torch.inference_mode():
        reference = model(torch.from_numpy(probe)).numpy()
    tolerance = 1e-4 * max(1.0, float(np.abs(reference).max()))
    if not np.isfinite(logits).all() or float(np.abs(logits - reference).max()) > tolerance:
        raise WeightsError(f"{weights}: the ONNX graph does not reproduce the model (check failed)")
    if float(np.abs(cam.mean(axis=(2, 3)) - logits).max()) > tolerance:
        raise WeightsError(f"{weights}: the class-activation maps do not average to the logits (check failed)")
    return graph, probe, logits, cam


def _browser_model(browser: str, model, graph: bytes, outdir: Path, calibration, calibration_limit: int) -> bytes:
    """The bytes of the file the page runs (``graph`` itself for fp32, empty for none)."""
    import onnx

    if browser == "w8a32":
        from squeezenet.serving.browser_model import eight_bit_weights

        return eight_bit_weights(onnx.load_from_string(graph)).SerializeToString()
    if browser == "int8":
        from squeezenet.export.onnx import add_cam_output
        from squeezenet.export.onnx_int8 import calibration_arrays, quantize_model
        from squeezenet.serving.browser_model import drop_unused_initializers

        arrays = calibration_arrays(model, calibration or [], limit=calibration_limit)
        path = quantize_model(model, outdir / "int8.onnx", arrays, size=model.weights_info.preprocessing.crop)
        proto = drop_unused_initializers(add_cam_output(onnx.load(str(path))))
        path.unlink()
        return proto.SerializeToString()
    return graph if browser == "fp32" else b""  # wasm: its own folder (_wasm_build); none


def _wasm_build(model, kind: str, outdir: Path, calibration, calibration_limit: int) -> dict:
    """The WebAssembly folder (``export.wasm``) in ``outdir/wasm``; -> the card's browser entry."""
    from squeezenet.export.onnx_int8 import calibration_arrays
    from squeezenet.export.wasm import export_wasm

    arrays = calibration_arrays(model, calibration or [], limit=calibration_limit)
    result = export_wasm(model, outdir / "wasm", arrays, weights_are_compressed=kind == "sqz")
    simd = result.card["builds"]["simd"]  # every engine but the oldest: the entry's figures; "builds": each
    files = {p.name: p.stat().st_size for p in sorted(result.folder.iterdir()) if p.name != "README.md"}
    return {"bytes": simd["bytes"], "sha256": simd["sha256"], "weights": result.net.storage, "files": files,
            "builds": result.card["builds"], "table": result.card["table"]}  # fmt: skip


def _check_browser_model(data: bytes, browser: str, probe, logits, weights: Path, threads: int | None) -> float:
    """Runs it on the probe; -> its largest logit difference from the served graph."""
    import numpy as np

    from squeezenet.errors import WeightsError
    from squeezenet.export.onnx import ort_session

    small = ort_session(data, threads=threads).run(["logits"], {"input": probe})[0]
    if small.shape != logits.shape or not np.isfinite(small).all():
        raise WeightsError(f"{weights}: the {browser} browser model does not run (check failed)")
    return float(np.abs(small - logits).max())


def convert(
    weights: Path,
    outdir: Path,
    browser: str = "w8a32",
    calibration: list[str] | None = None,
    calibration_limit: int = 32,
    threads: int | None = None,
    name: str | None = None,
) -> dict:
    """Write model.onnx, browser.onnx, card.json and check.json for ``weights``; -> the card."""
    import torch

    from squeezenet.atomic import atomic_write_bytes, atomic_write_text
    from squeezenet.errors import WeightsError
    from squeezenet.serving.schemas import ModelCard

    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    data, kind, model, shown = _load_once(weights, outdir, name)
    graph, probe, logits, cam = _checked_graph(model, weights, threads)
    atomic_write_bytes(outdir / "model.onnx", graph, WeightsError)
    browser_info: dict = {"format": browser}
    if browser == "wasm":
        browser_info.update(_wasm_build(model, kind, outdir, calibration, calibration_limit))
    browser_bytes = _browser_model(browser, model, graph, outdir, calibration, calibration_limit)
    if browser_bytes and browser_bytes is not graph:
        browser_info["max_logit_difference"] = _check_browser_model(
            browser_bytes, browser, probe, logits, weights, threads
        )
        atomic_write_bytes(outdir / "browser.onnx", browser_bytes, WeightsError)
    if browser_bytes:
        browser_info.update(bytes=len(browser_bytes), sha256=_sha256(browser_bytes))
    info, digest = model.weights_info, _sha256(data)
    card = ModelCard(
        id=digest[:12],
        sha256=digest,
        file=shown,
        file_bytes=len(data),
        format=kind,
        arch=info.arch,
        parameters=sum(p.numel() for p in model.parameters()),
        num_classes=info.num_classes,
        in_chans=info.in_chans,
        input_size=info.preprocessing.crop,
        classes=list(info.classes),
        wnids=list(info.wnids),
        preprocessing=info.preprocessing.to_dict(),
        license=info.license,
        provenance=info.provenance,
        engine="onnxruntime, concat-free graph, class-activation maps as a second output",
        onnx_bytes=len(graph),
        cam_size=list(cam.shape[2:]),
        browser=browser_info,
        convert_seconds=round(time.perf_counter() - start, 2),
    ).model_dump(mode="json", exclude_none=True)
    atomic_write_text(outdir / "check.json", json.dumps({"seed": PROBE_SEED, "logits": logits[0].tolist()}))
    atomic_write_text(outdir / "card.json", json.dumps(card, indent=1))
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m squeezenet.serving.convert", description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--browser", choices=[m for m in BROWSER_MODELS if m != "auto"], default="w8a32")
    parser.add_argument("--calibration", nargs="*", default=[])
    parser.add_argument("--calibration-limit", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", help="the file name the card shows (default: the weights file's)")
    args = parser.parse_args(argv)
    from squeezenet.errors import SqueezeNetError

    try:
        convert(
            args.weights, args.outdir, args.browser, args.calibration, args.calibration_limit, args.threads, args.name
        )
    except SqueezeNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else a foreign file provokes: still one line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
