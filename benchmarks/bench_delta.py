"""Model updates as small as the change: ``squeezenet train --update-of`` at each level, the
``.sqzd`` it writes against the release, and the generic diffs a user would try first.

Base: the release weights compressed data-free (``squeezenet compress -w compressed_SqueezeNet.net``,
the model the service and its page ship). Two tasks fine-tuned from it, each at every level
(``head``, ``codebooks``, ``full``) with the same settings:

- ELPV, 4 defect levels, at the release's 227 px (whole cells, the training images' mean and
  std, the ``symmetric`` augmentation: bench_train_elpv's choices), grayscale read as RGB so that
  the stem stays the base's;
- CIFAR-10 at the release's 227 px (the 32-px images resized), a short fine-tune.

Every setting is the ``finetune`` recipe's default or bench_train_elpv's; none was chosen here.
Each run validates on held-back training images (``train``'s default: a tenth of every class)
and the test split is scored once, with the update's own ``.sqz`` (what a client runs).

Per update: its bytes against three baselines on the same pair, measured in the same run: the
whole new ``.sqz``; ``xz -9e`` of the new file after the old one (the bytes the pair costs beyond
the old file alone, i.e. the old file as a preset dictionary); ``bsdiff4`` (a maintained Python
binding of bsdiff). Patch time: the median of 7 patches in this process.

    python benchmarks/bench_delta.py [--elpv-epochs 2] [--cifar-steps 40]
    python benchmarks/bench_delta.py --remeasure # bytes, baselines and patch times again, on the
                                                 # run folders' own files (no training; accuracy kept)
    python benchmarks/bench_delta.py --rewrite-updates  # each run's update written again from its
                                                 # last weights (new classifier's bits chosen on its
                                                 # validation images), its test split scored once
    python benchmarks/bench_delta.py --levels codebooks  # those levels trained again, on the same base
                                                 # (checked by its SHA-256); the other rows kept
    python benchmarks/bench_delta.py --rewrite   # the Markdown again from the recorded JSON
    python benchmarks/bench_delta.py --tiny OUT  # CI's smoke test

Writes benchmarks/results/delta.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import DATA, RESULTS, add_tiny_option, machine, test_loader, tiny_archive, write_results
from squeezenet.compression import CompressionConfig, compress
from squeezenet.training import TrainConfig, rewrite_update, train
from squeezenet.weights import build_model_from_weights
from squeezenet.weights.deltas import delta_bytes
from squeezenet.weights.sqz_codec import VERSION, SparseTensor, compiled, decode_sqz
from squeezenet.weights.sqz_codec.container import parse_sqz
from squeezenet.weights.sqz_codec.delta_file import sha256
from squeezenet.weights.sqz_codec.layout import read_layout, write_layout
from squeezenet.weights.sqz_codec.patch import apply_delta

RELEASE = DATA / "deepcompression" / "compressed_SqueezeNet.net"
LEVELS = ("head", "codebooks", "full")
TARGETS = {"codebooks_bytes": 20_000, "head_bytes": 5_000, "accuracy_gap": 1.5, "smaller_than_generic": 5.0,
           "patch_ms": 100.0}  # fmt: skip
XZ = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
PATCH_CODER = {True: "the compiled rANS loops (sqz_codec/_rans.c)", False: "the NumPy rANS coder"}


def generic_baselines(old: bytes, new: bytes) -> dict[str, int]:
    import bsdiff4

    alone = len(lzma.compress(old, format=lzma.FORMAT_XZ, filters=XZ))
    pair = len(lzma.compress(old + new, format=lzma.FORMAT_XZ, filters=XZ))
    return {"whole_sqz": len(new), "xz_with_old": pair - alone, "bsdiff4": len(bsdiff4.diff(old, new))}


def patch_ms(base: bytes, delta: bytes, new: bytes, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = apply_delta(base, delta)
        times.append((time.perf_counter() - start) * 1000)
        assert out == new, "the patch did not rebuild the update"
    return statistics.median(times)


def test_top1(weights: Path, data: str, limit: int | None) -> tuple[float, int]:
    model = build_model_from_weights(weights).eval()
    correct = seen = 0
    with torch.inference_mode():
        for batch in test_loader(data, model.weights_info, 64, 2, limit):
            images, labels = batch.images, batch.targets
            correct += int((model(images).argmax(1) == labels).sum())
            seen += len(labels)
    return correct / max(seen, 1), seen


def task_settings(task: str, args) -> dict:
    common = {"recipe": "finetune", "threads": 2, "workers": 2, "resize": 227, "image_size": 227}
    if task == "elpv":
        return {**common, "data": "elpv:4", "augment": "symmetric", "adapt_normalization": True,
                "epochs": args.elpv_epochs}  # fmt: skip
    return {**common, "data": str(args.cifar), "augment": "light", "epochs": 1, "max_steps": args.cifar_steps}


def run_level(task: str, level: str, base: Path, args) -> dict:
    settings = task_settings(task, args)
    out = args.work / f"{task}-{level}"
    shutil.rmtree(out, ignore_errors=True)  # a fresh run each time: the figures are this run's
    cfg = TrainConfig(**settings, output=str(out), update_of=str(base), update_level=level)
    if args.tiny:
        tiny = {"epochs": 1, "max_steps": 2, "batch_size": 8, "resize": 64, "image_size": 64}  # paths, not figures
        cfg = TrainConfig(**{**cfg.to_dict(), **tiny})
    start = time.perf_counter()
    result = train(cfg)
    minutes = (time.perf_counter() - start) / 60
    top1, scored = test_top1(out / "update.sqz", settings["data"], args.test_limit)
    return {
        "task": task,
        "level": level,
        **sizes(base, out / "update.sqz", repeats=1 if args.tiny else 7),
        "val_top1": result.best_top1,
        "test_top1": top1,
        "test_images": scored,
        "protocol": result.protocol,
        "images": result.images,
        "steps": result.steps,
        "minutes": minutes,
        "head_bits": result.update.get("head_bits"),
    }


def sizes(base: Path, update: Path, repeats: int = 7) -> dict:
    """The update's delta as ``squeezenet delta`` writes it now, the generic baselines on the same
    pair, and the patch time."""
    old, new = base.read_bytes(), update.read_bytes()
    delta = delta_bytes(old, new)
    return {
        "delta_bytes": len(delta.data),
        "ops": delta.report["ops"],
        "literal": delta.report["literal"],
        "sqz_bytes": len(new),
        "baselines": generic_baselines(old, new),
        "patch_ms": patch_ms(old, delta.data, new, repeats),
        "patch_coder": PATCH_CODER[compiled.COMPILED],
        "patch_ms_numpy": numpy_patch_ms(old, delta.data, new, repeats),
        "new_content": new_content(old, new),
    }


def new_content(old: bytes, new: bytes) -> dict[str, int]:
    """The bytes of NEW that are in no part of BASE, as stored (entropy-coded): its metadata
    section where it differs, its tensor sections and rANS groups that BASE has nowhere. Any
    update, ours or a generic diff, carries this information; what a generic diff spends beyond
    it is its cost of saying where the rest of BASE goes."""
    a, b = parse_sqz(old, decode_bundle=False), parse_sqz(new, decode_bundle=False)
    sections, groups = {bytes(s) for s in a.sections}, {bytes(g) for g in a.groups or []}
    return {
        "metadata": 0 if a.meta_payload == b.meta_payload else len(b.meta_payload),
        "sections": sum(len(s) for s in b.sections if bytes(s) not in sections),
        "groups": sum(len(g) for g in b.groups or [] if bytes(g) not in groups),
    }


def numpy_patch_ms(base: bytes, delta: bytes, new: bytes, repeats: int) -> float | None:
    """The same patch with the NumPy rANS coder, the reference in the same run (None: nothing to
    compare, the compiled loops were not built)."""
    return coder_patch_ms(False, base, delta, new, repeats) if compiled.COMPILED else None


def coder_patch_ms(use_compiled: bool, base: bytes, delta: bytes, new: bytes, repeats: int = 7) -> float:
    """``patch_ms`` with the compiled loops on or off, the setting restored after."""
    was, compiled.COMPILED = compiled.COMPILED, use_compiled
    try:
        return patch_ms(base, delta, new, repeats)
    finally:
        compiled.COMPILED = was


def values_only_ms(base: Path, repeats: int = 7) -> dict:
    """The patch of a change of values alone (every shared value and bias of the base x 1.01, the
    order of the values kept: synthetic, no training), which takes the fast path: BASE's sections
    and rANS bundle copied, the codebooks spliced in. Every task above replaces the classifier,
    whose codes are in the bundle, so none of them can."""
    layout = read_layout(base.read_bytes())
    for plan in layout.tensors:
        t = plan.tensor
        plan.tensor = (SparseTensor(t.shape, t.codebook * np.float32(1.01), t.codes, t.positions)
                       if isinstance(t, SparseTensor) else t * np.float32(1.01))  # fmt: skip
    old, new = base.read_bytes(), write_layout(layout)
    delta = delta_bytes(old, new)
    return {"delta_bytes": len(delta.data), "sqz_bytes": len(new), "ops": delta.report["ops"],
            "patch_ms": patch_ms(old, delta.data, new, repeats),
            "patch_coder": PATCH_CODER[compiled.COMPILED]}  # fmt: skip


def in_current_format(path: Path) -> bool:
    """A run's ``.sqz`` of an older format version written again by today's writer, its content
    unchanged (checked: every tensor and the metadata decode the same), so that the accuracies
    measured on it stand. -> whether it was rewritten."""
    data = path.read_bytes()
    layout = read_layout(data)
    if layout.version == VERSION:
        return False
    again = write_layout(layout)
    (meta, old), (meta2, new) = decode_sqz(data), decode_sqz(again)
    assert meta == meta2 and old.keys() == new.keys() and all(np.array_equal(old[k], new[k]) for k in old)
    path.write_bytes(again)
    return True


def remeasure(args) -> dict:
    """The recorded runs again without training: every size and time measured anew on the run
    folders' base and update files (in today's format, same content), the accuracies kept."""
    payload = json.loads((RESULTS / "delta.json").read_text())
    base = args.work / "base.sqz"
    runs = [args.work / f"{row['task']}-{row['level']}" / "update.sqz" for row in payload["rows"]]
    rewritten = [str(p.relative_to(args.work)) for p in [base, *runs] if in_current_format(p)]
    payload["base_bytes"], payload["base_sha256"] = base.stat().st_size, sha256(base.read_bytes())
    for row, update in zip(payload["rows"], runs, strict=True):
        row.update(sizes(base, update))
    payload["values_only"] = values_only_ms(base)
    payload["remeasured"] = {"command": "python benchmarks/bench_delta.py --remeasure", "machine": machine(),
                             "format_version": VERSION, "rewritten": rewritten}  # fmt: skip
    payload["targets"] = verdicts(payload["rows"])
    return payload


def rewrite_updates(args) -> dict:
    """Every recorded run's update written again as ``train`` writes it today (``rewrite_update``:
    nothing trains), its bytes measured anew and its ``.sqz`` scored once on the test split."""
    payload = json.loads((RESULTS / "delta.json").read_text())
    base = args.work / "base.sqz"
    in_current_format(base)
    for row in payload["rows"]:
        out = args.work / f"{row['task']}-{row['level']}"
        report = rewrite_update(json.loads((out / "config.json").read_text()))
        top1, scored = test_top1(out / "update.sqz", task_settings(row["task"], args)["data"], args.test_limit)
        row.update(sizes(base, out / "update.sqz"), test_top1=top1, test_images=scored, head_bits=report["head_bits"])
        print(f"bench: {row['task']} {row['level']}: head at {report['head_bits']['bits']} bits, "
              f"{row['delta_bytes']:,}-byte update, test top-1 {top1:.2%}", file=sys.stderr)  # fmt: skip
    payload["base_bytes"], payload["base_sha256"] = base.stat().st_size, sha256(base.read_bytes())
    payload["values_only"] = values_only_ms(base)
    payload["updates_rewritten"] = {"command": "python benchmarks/bench_delta.py --rewrite-updates",
                                    "machine": machine(), "format_version": VERSION}  # fmt: skip
    payload.pop("remeasured", None)
    payload["targets"] = verdicts(payload["rows"])
    return payload


def verdicts(rows: list[dict]) -> list[dict]:
    checks = []
    by = {(r["task"], r["level"]): r for r in rows}
    for (task, level), r in by.items():
        generic = min(r["baselines"]["xz_with_old"], r["baselines"]["bsdiff4"])
        if level == "codebooks":
            limit = TARGETS["codebooks_bytes"]
            checks.append(_check(f"{task} codebooks update bytes", r["delta_bytes"], f"<= {limit:,}",
                                 r["delta_bytes"] <= limit))  # fmt: skip
        if level == "head" and task == "elpv":  # the target is for 4 classes
            limit = TARGETS["head_bytes"]
            checks.append(_check("elpv head update bytes (4 classes)", r["delta_bytes"], f"<= {limit:,}",
                                 r["delta_bytes"] <= limit))  # fmt: skip
        if level in ("head", "codebooks"):
            ratio = generic / r["delta_bytes"]
            checks.append(_check(f"{task} {level}: best generic / update", round(ratio, 1), ">= 5x",
                                 ratio >= TARGETS["smaller_than_generic"]))  # fmt: skip
        else:
            checks.append(_check(f"{task} full: update / best generic", r["delta_bytes"], f"<= {generic:,}",
                                 r["delta_bytes"] <= generic))  # fmt: skip
        checks.append(_check(f"{task} {level} patch time (ms)", round(r["patch_ms"], 1), "< 100",
                             r["patch_ms"] < TARGETS["patch_ms"]))  # fmt: skip
    if ("elpv", "codebooks") in by and ("elpv", "full") in by:
        gap = (by[("elpv", "full")]["test_top1"] - by[("elpv", "codebooks")]["test_top1"]) * 100
        checks.append(_check("ELPV test top-1: full - codebooks (points)", round(gap, 2), "<= 1.5",
                             gap <= TARGETS["accuracy_gap"]))  # fmt: skip
    return checks


def _check(name: str, value, target: str, met: bool) -> dict:
    measured = f"{value:,}" if isinstance(value, int) else str(value)
    return {"check": name, "measured": measured, "target": target, "verdict": "met" if met else "missed"}


def _content_table(rows: list[dict]) -> list[str]:
    """Why 5x smaller than a generic diff is out of reach for a head update: what NEW holds that
    BASE does not, against the bytes such an update could have."""
    rows = [r for r in rows if r.get("new_content") and r["level"] == "head"]
    if not rows:
        return []
    lines = [
        "",
        "A `head` update against what the new `.sqz` holds that the base holds nowhere, as stored (entropy-coded, "
        "measured on the same pairs): the new metadata, the new classifier's sections (shape, codebook, table) "
        "and its rANS group (its codes, entropy-coded). Every update must carry the new classifier; one 5x smaller "
        "than the best generic diff would have to fit in the last column, fewer bytes than the classifier's coded "
        "symbols alone (a `codebooks` update carries the same classifier, and the changed values of every "
        "codebook):",
        "",
        "| task | level | metadata | sections | rANS groups | in all | update | best generic | 5x smaller |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c, b = r["new_content"], r["baselines"]
        generic = min(b["xz_with_old"], b["bsdiff4"])
        lines.append(f"| {r['task']} | {r['level']} | {c['metadata']:,} | {c['sections']:,} | {c['groups']:,} | "
                     f"{sum(c.values()):,} | {r['delta_bytes']:,} | {generic:,} | {generic // 5:,} |")  # fmt: skip
    return lines


def markdown(payload: dict) -> str:
    m = payload["machine"]
    lines = [
        "# Model updates: `.sqzd` deltas from `squeezenet train --update-of`",
        "",
        f"Command: `{payload['command']}` ({m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('date', '')})",
        "",
        f"Base: the release compressed data-free, {payload['base_bytes']:,} bytes "
        f"(sha256 {payload['base_sha256'][:16]}...).",
        "",
        "| task | level | update (.sqzd) | whole .sqz | xz -9e with old | bsdiff4 | ops (same/values/entries/whole) "
        "| patch ms | patch ms, NumPy coder | val top-1 | test top-1 (images) | steps | minutes |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        b, o = r["baselines"], r["ops"]
        val = "" if r["val_top1"] is None else f"{r['val_top1']:.2%}"
        level = f"{r['level']} (kept)" if r.get("recorded_by") else r["level"]
        slow = "" if r.get("patch_ms_numpy") is None else f"{r['patch_ms_numpy']:.1f}"
        lines.append(
            f"| {r['task']} | {level} | {r['delta_bytes']:,} | {b['whole_sqz']:,} | {b['xz_with_old']:,} | "
            f"{b['bsdiff4']:,} | {o['same']}/{o['values']}/{o['entries']}/{o['whole']} | {r['patch_ms']:.1f} | "
            f"{slow} | {val} | "
            f"{r['test_top1']:.2%} ({r['test_images']:,}) | {r['steps']} | {r['minutes']:.1f} |"
        )
    fast = payload.get("values_only")
    if fast:
        lines += [
            "",
            f"Patch of a change of values alone (every shared value and bias of the base x 1.01, synthetic: "
            f"no training), the fast path (BASE's rANS bundle copied, codebooks spliced in): "
            f"{fast['delta_bytes']:,}-byte delta, {fast['patch_ms']:.1f} ms. Every update above replaces the "
            "classifier, whose codes the patch codes afresh (its own group of the rANS section in format "
            "version 3; the whole bundle in version 2); a `full` update also decodes and codes again every "
            "layer whose codes changed. A `codebooks` update keeps every code of the base (shared values that "
            "crossed while training are pooled into their mean, `compression.updates.in_base_order`; runs "
            "before it renumbered such codebooks and re-coded their layers).",
        ]
    kept = [r for r in payload["rows"] if r.get("recorded_by")]
    if kept:
        by, made = kept[0]["recorded_by"], kept[0]["recorded_by"]["machine"]
        steps = (("updates_rewritten", "updates written again"), ("remeasured", "re-measured"))
        later = [f"{what} by `{by[key]['command']}`" for key, what in steps if key in by]
        lines += [
            "",
            "Rows marked (kept) are an earlier run's, on the same base (SHA-256 checked), kept when the other "
            f"levels trained again: `{by['command']}` ({made.get('cpu', '?')}, {made.get('date', '')})"
            + "".join(f", {x}" for x in later)
            + ".",
        ]
    coders = sorted({r["patch_coder"] for r in payload["rows"] if r.get("patch_coder")})
    if coders:
        lines += ["", "Patch times: the median of 7 patches in one process, with " + " and ".join(coders)
                  + "; the NumPy coder's column is the same patch with the pure-NumPy rANS coder, in the same run "
                  "(the codec without a C compiler)."]  # fmt: skip
    lines += _content_table(payload["rows"])
    lines += ["", "| check | measured | target | verdict |", "|---|---:|---|---|"]
    for c in payload["targets"]:
        lines.append(f"| {c['check']} | {c['measured']} | {c['target']} | {c['verdict'].replace('missed', 'MISSED')} |")
    heads = [(r, r["head_bits"]) for r in payload["rows"] if r.get("head_bits")]
    if heads:
        lines += [
            "",
            "The new classifier's bits, chosen on the validation images (fewest of "
            "4/5/6/8 whose top-1 agrees with the trained float classifier's on >= 99 % of them):",
        ]
        lines += [f"- {r['task']} {r['level']}: {h['bits']} bits ("
                  + ", ".join(f"{b}: {float(a):.1%}" for b, a in h["agreement"].items()) + f" of {h['images']:,})"
                  for r, h in heads]  # fmt: skip
    lines += ["", "Images:"] + [f"- {r['task']} {r['level']}: {r['protocol']}" for r in payload["rows"]]
    lines += [
        "",
        "Test top-1 is the update's own `.sqz` (quantized head, values in the base's precision), "
        "scored once on the test split; val top-1 is the run's best epoch on its held-back training images.",
    ]
    rewritten = payload.get("updates_rewritten")
    if rewritten:
        m3 = rewritten["machine"]
        lines += [
            "",
            f"Updates written again by `{rewritten['command']}` ({m3.get('cpu', '?')}, {m3.get('date', '')}) from "
            f"each run's last weights, in `.sqz` format version {rewritten['format_version']}, with the new "
            "classifier's bits chosen on the validation images; bytes, baselines, patch times and the test top-1 "
            "of each new file measured then (each file scored once). Training figures (val top-1, steps, minutes) "
            "are the runs'.",
        ]
    again = payload.get("remeasured")
    if again:
        m2 = again["machine"]
        rewritten = again.get("rewritten")
        lines += [
            "",
            f"Bytes, baselines and patch times re-measured by `{again['command']}` on the same files "
            f"({m2.get('cpu', '?')}, {m2.get('date', '')}), after the runs above had trained."
            + (
                f" Written again in `.sqz` format version {again['format_version']} first (same content, checked): "
                + ", ".join(rewritten)
                + "."
                if rewritten
                else ""
            ),
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elpv-epochs", type=int, default=2)
    parser.add_argument("--cifar-steps", type=int, default=40)
    parser.add_argument("--cifar", type=Path, default=DATA / "cifar10-jpeg.tar.gz")
    parser.add_argument("--test-limit", type=int, help="score this many test images (seeded draw; default all)")
    parser.add_argument("--tasks", nargs="+", default=["elpv", "cifar10"], choices=("elpv", "cifar10"))
    parser.add_argument("--work", type=Path, default=Path("runs/delta"))
    parser.add_argument("--rewrite", action="store_true")
    parser.add_argument("--remeasure", action="store_true")
    parser.add_argument("--rewrite-updates", action="store_true")
    parser.add_argument("--levels", nargs="+", choices=LEVELS, help="train these levels; the other recorded rows stay")
    add_tiny_option(parser)
    args = parser.parse_args()
    if args.rewrite_updates:
        payload = rewrite_updates(args)
        write_results("delta", payload, markdown(payload))
        return 0
    if args.rewrite or args.remeasure:
        payload = remeasure(args) if args.remeasure else json.loads((RESULTS / "delta.json").read_text())
        write_results("delta", payload, markdown(payload))
        return 0
    torch.set_num_threads(2)
    if args.tiny:
        args.work = args.tiny / "runs"
        args.work.mkdir(parents=True, exist_ok=True)
        args.cifar = tiny_archive(args.cifar, args.tiny / "cifar_tiny.tar", per_class=4)
        args.tasks, args.test_limit = ["cifar10"], 8
    args.work.mkdir(parents=True, exist_ok=True)
    base = args.work / "base.sqz"
    # the tiny run's base: the quick nearest method (the smoke test needs a .sqz, not the release's)
    config = CompressionConfig(method="nearest") if args.tiny else CompressionConfig.data_free()
    compress(str(RELEASE), config).save(base)
    recorded = json.loads((RESULTS / "delta.json").read_text()) if args.levels else None
    if recorded and recorded["base_sha256"] != sha256(base.read_bytes()):
        raise SystemExit("bench_delta: --levels: the base differs from the recorded one; run every level")
    rows = [run_level(task, level, base, args) for task in args.tasks for level in args.levels or LEVELS]
    payload = {
        "command": "python benchmarks/bench_delta.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "base_bytes": base.stat().st_size,
        "base_sha256": sha256(base.read_bytes()),
        "rows": rows,
        "values_only": values_only_ms(base, 1 if args.tiny else 7),
    }
    if recorded:  # the new rows in place of theirs; the others as recorded, with the run that made them
        new = {(r["task"], r["level"]): r for r in rows}
        kept = {k: recorded[k] for k in ("command", "machine", "updates_rewritten", "remeasured") if k in recorded}
        payload["rows"] = [new.get((r["task"], r["level"]), {**r, "recorded_by": kept}) for r in recorded["rows"]]
    payload["targets"] = verdicts(payload["rows"])
    write_results("delta", payload, markdown(payload), args.tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
