"""What a device or a page fetches to move between two fine-tuned models of one task when it runs the
C export or its WebAssembly build: a byte delta of the weight table, its code untouched.

    python benchmarks/studies/table_delta.py     # after bench_delta.py; about five minutes on 2 cores

The pairs are ``bench_delta``'s recorded updates of one task (``runs/delta``): its ``head`` update
and its ``codebooks`` and ``full`` updates, made from the same release by ``train --update-of``
with the task's classes, so one architecture and class count. Each is exported as the C export does
for the page (compressed weights, calibrated on the same 32 even-indexed imagenet-samples images:
the bytes are measured, no score), and for each pair: whether the code is the same (the layout id),
the new table's bytes, the byte delta the page and a device fetch (``serving/bytedelta.py``), the
generic diffs of the two tables (``bench_delta``'s xz -9e after the old, bsdiff4), and the ``.sqzd``
between the two ``.sqz`` files for comparison. No image is scored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks' helpers

from _common import imagenet_halves, machine, page_head, write_results
from bench_delta import generic_baselines
from squeezenet.export.c import build_c
from squeezenet.export.c.table import TABLE_FILE
from squeezenet.export.onnx_int8 import calibration_arrays
from squeezenet.serving.bytedelta import make_byte_delta
from squeezenet.weights import build_model_from_weights
from squeezenet.weights.deltas import delta_bytes

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ("elpv", "cifar10")
PAIRS = (("head", "codebooks"), ("head", "full"), ("codebooks", "full"))


def export(sqz: Path, calibration_files: list[Path]) -> tuple[bytes, str]:
    """The C export's weight table of ``sqz`` (compressed weights) and its layout id."""
    model = build_model_from_weights(sqz).eval()
    arrays = calibration_arrays(model, calibration_files, limit=len(calibration_files))  # as the server does
    _, files, facts = build_c(model, arrays, weights_are_compressed=True)
    return files[TABLE_FILE], facts["layout"]


def pair_row(task: str, old: str, new: str, tables: dict, runs: Path) -> dict:
    (a, layout_a), (b, layout_b) = tables[old], tables[new]
    sqz_a, sqz_b = (runs / f"{task}-{level}" / "update.sqz" for level in (old, new))
    sqzd = delta_bytes(sqz_a.read_bytes(), sqz_b.read_bytes()).data
    return {
        "task": task,
        "from": old,
        "to": new,
        "same_code": layout_a == layout_b,
        "table_bytes": len(b),
        "table_delta_bytes": len(make_byte_delta(a, b)),
        "table_generic": generic_baselines(a, b),
        "sqzd_bytes": len(sqzd),
        "sqz_bytes": sqz_b.stat().st_size,
    }


def markdown(payload: dict) -> str:
    lines = [
        *page_head("Updates of the C export's weight table between fine-tuned models of one task", payload),
        "The pairs: bench_delta's recorded updates of each task (runs/delta), exported with compressed weights and "
        f"calibrated on the same {payload['calibration_images']} images. Bytes; generic: the smaller of xz -9e after "
        "the old table and bsdiff4.",
        "",
        "| task | from -> to | same code | new table | table delta (page, device) | generic diff of the tables "
        "| .sqzd between the .sqz | new .sqz |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        generic = min(r["table_generic"]["xz_with_old"], r["table_generic"]["bsdiff4"])
        lines.append(
            f"| {r['task']} | {r['from']} -> {r['to']} | {'yes' if r['same_code'] else 'NO'} | {r['table_bytes']:,} "
            f"| {r['table_delta_bytes']:,} | {generic:,} | {r['sqzd_bytes']:,} | {r['sqz_bytes']:,} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/delta"), help="bench_delta.py's run folders")
    ap.add_argument("--calibration", type=int, default=32)
    args = ap.parse_args()
    missing = [t for t in TASKS for level in ("head", "codebooks", "full")
               if not (args.runs / f"{t}-{level}" / "update.sqz").is_file()]  # fmt: skip
    if missing:
        raise SystemExit(f"table_delta: no update.sqz in {args.runs} for {missing[0]}: run benchmarks/bench_delta.py")
    calibration, _ = imagenet_halves(args.calibration, 0)
    rows = []
    for task in TASKS:
        tables = {level: export(args.runs / f"{task}-{level}" / "update.sqz", calibration)
                  for level in ("head", "codebooks", "full")}  # fmt: skip
        for old, new in PAIRS:
            rows.append(pair_row(task, old, new, tables, args.runs))
            print(rows[-1], file=sys.stderr, flush=True)
    payload = {"command": "python benchmarks/studies/table_delta.py", "machine": machine(),
               "calibration_images": len(calibration), "rows": rows}  # fmt: skip
    write_results("table_delta", payload, markdown(payload), RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
