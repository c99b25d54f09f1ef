"""The int8 ONNX model's accuracy against fp32 on real images: which images chose what, kept apart.

The int8 design (export/onnx_int8.py: graph pre-processing, every convolution int8, the global
average pool in fp32, shared concat scales) was chosen looking at the odd-indexed images of
imagenet-samples (sorted paths), which are also the half that compression and the C export
report on. Those figures cannot show what the design does on images it was not tuned to, so
``int8_accuracy`` reports the even-indexed images left after calibration and shows the odd half
apart, labelled as such.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from squeezenet.export.formats import DEFAULT_CALIBRATION_LIMIT, DEFAULT_CALIBRATION_METHOD
from squeezenet.inference.fidelity import fidelity_from_logits

TITLE = "## int8 accuracy (real weights, imagenet-samples)"
LABELS = {
    "reported": "reported: even-indexed, after calibration (no int8 choice made on them)",
    "chose": "odd-indexed: where the int8 design was chosen (not held out)",
}


def int8_accuracy(
    weights: str | Path,
    data_dir: str | Path,
    method: str = DEFAULT_CALIBRATION_METHOD,
    calibration_images: int = DEFAULT_CALIBRATION_LIMIT,
) -> dict:
    """int8 against fp32 on an ImageNet-layout folder, three disjoint parts of its images (sorted):
    calibration = the first ``calibration_images`` even-indexed ones; the odd-indexed ones are where
    the int8 design was chosen (export/onnx_int8.py; on imagenet-samples they are also the half that
    compression and the C export report on), so they are shown apart and are not held out; the
    figures reported are those of the even-indexed images left after calibration, on which no
    int8 choice was made: top-1 of both and their top-1 agreement (a paired measure: the share of
    images whose predicted class is unchanged)."""
    from squeezenet.data import scan_class_folders
    from squeezenet.export.onnx import onnx_bytes, ort_session
    from squeezenet.export.onnx_int8 import calibration_arrays, quantize_model
    from squeezenet.inference.labels import folder_targets
    from squeezenet.weights import build_model_from_weights

    model = build_model_from_weights(weights)
    folders, samples = scan_class_folders(data_dir)
    targets = folder_targets(folders, model.weights_info, data_dir)
    x = calibration_arrays(model, [p for p, _ in samples])
    y = np.array([targets[name] for _, name in samples])
    parts = int8_parts(len(x), calibration_images)
    fp32 = _session_logits(ort_session(onnx_bytes(model)), x)
    with tempfile.TemporaryDirectory() as tmp:
        int8 = _session_logits(
            ort_session(quantize_model(model, Path(tmp) / "int8.onnx", x[parts["calibration"]], method=method)), x
        )
    reported = _int8_figures(fp32, int8, y, parts["reported"])
    return {
        "protocol": f"Calibrated ({method}, per-channel weights, every convolution int8, the global average pool in "
        f"fp32) on the first {len(parts['calibration'])} even-indexed images (sorted paths). The int8 design was "
        f"chosen on the {len(parts['chose'])} odd-indexed images (shown apart, not held out; on imagenet-samples "
        "the half that compression and the C export report on). Reported: the "
        f"{len(parts['reported'])} even-indexed images left after calibration, on which no int8 choice was made.",
        "reported": reported,
        "chose": _int8_figures(fp32, int8, y, parts["chose"]),
        "lost_points_reported": round((reported["fp32_top1"] - reported["int8_top1"]) * 100, 2),
        "images": len(x),
    }


def int8_parts(images: int, calibration_images: int) -> dict[str, np.ndarray]:
    """Indices (sorted paths) of the three disjoint parts ``int8_accuracy`` uses."""
    even = np.arange(0, images, 2)
    return {
        "calibration": even[:calibration_images],
        "reported": even[calibration_images:],
        "chose": np.arange(1, images, 2),
    }


def _session_logits(session, x: np.ndarray, batch: int = 50) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def _int8_figures(fp32: np.ndarray, int8: np.ndarray, labels: np.ndarray, part: np.ndarray) -> dict:
    if not len(part):
        return {"images": 0, "fp32_top1": float("nan"), "int8_top1": float("nan"), "agreement": float("nan")}
    fidelity = fidelity_from_logits(fp32[part], int8[part], labels[part])
    return {
        "images": len(part),
        "fp32_top1": fidelity.reference_top1,
        "int8_top1": fidelity.top1,
        "agreement": fidelity.agreement,
    }


def accuracy_markdown(acc: dict | None) -> list[str]:
    """The Markdown section of ``int8_accuracy``'s figures (none without them)."""
    if not acc:
        return []
    if "reported" not in acc:
        return _old_record_markdown(acc)
    lines = [TITLE, "", acc["protocol"], ""]
    lines += [
        "| images | count | fp32 top-1 | int8 top-1 | top-1 agreement int8 vs fp32 |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in LABELS.items():
        f = acc[key]
        lines.append(
            f"| {label} | {f['images']} | {f['fp32_top1']:.1%} | {f['int8_top1']:.1%} | {f['agreement']:.1%} |"
        )
    return [*lines, ""]


def _old_record_markdown(acc: dict) -> list[str]:
    """A record written before 2026-12-01: calibrated on even images, chosen and scored on the odd
    ones, which its protocol still calls held out."""
    lines = [TITLE, "", acc.get("protocol", ""), ""]
    lines += ["Its 'eval half' (the odd-indexed images) is where the int8 design was chosen: not held out.", ""]
    lines += [f"| model | top-1 eval half | top-1 all {acc.get('images', 500)} |", "|---|---:|---:|"]
    for key in ("fp32", "int8"):
        if key in acc:
            lines.append(f"| {key} | {acc[key]['top1_eval_half']:.1%} | {acc[key]['top1_all']:.1%} |")
    return [*lines, ""]


def accuracy_target_lines(acc: dict | None) -> list[str]:
    """The int8 row of the targets table: top-1 lost, at most one point."""
    if acc and "lost_points_reported" in acc:
        lost = acc["lost_points_reported"]
        images = f"{acc['reported']['images']} even-indexed images the design was not chosen on"
    elif acc and "lost_points_eval_half" in acc:
        lost, images = acc["lost_points_eval_half"], "the odd-indexed half the design was chosen on"
    else:
        return []
    verdict = "met" if lost <= 1.0 else "MISSED"
    return [f"| squeezenet1_0_caffe | int8 top-1 lost ({images}) | {lost} points | <= 1 | {verdict} |"]
