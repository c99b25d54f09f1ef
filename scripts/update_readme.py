"""Regenerate the README's generated blocks: the status paragraph, model/weights tables, results.

    python scripts/update_readme.py

Tables come from ``squeezenet info --markdown`` (the code's own metadata); the status
paragraph is written from the JSON files the benchmark scripts wrote to
``benchmarks/results/`` and the results section from their Markdown files, so no figure in
the README is typed by hand (tests/test_readme.py checks all three blocks).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RESULT_ORDER = (
    "eval",
    "deploy",
    "export_c",
    "serve",
    "gpu",
    "compress",
    "compress_study",
    "compress_sequential",
    "compress_scaling",
    "compress_trained",
    "train_throughput",
    "train_cifar10",
    "train_elpv",
)


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _eval(r: dict) -> str:
    met = r.get("met", {})
    speed = f"{r['images_per_second_median']} images/s end to end"
    if met:
        speed += f" (target 35: {_verdict(met['images_per_second'])})"
    return (
        f"the Deep Compression release weights score top-1 {_pct(r['top1'])} / top-5 {_pct(r['top5'])} on the "
        f"{r['n']} imagenet-samples images at {speed}"
    )


def _deploy(r: dict) -> str:
    v11 = r["archs"]["squeezenet1_1"]
    rows = {e["engine"]: e for e in v11["engines"] if "error" not in e}
    pairs = {tuple(p["pair"]): p for p in v11.get("paired", [])}
    parts = [f"the default CPU engine runs v1.1 at {rows['default']['b1_median_ms']:.1f} ms per image"]
    default_vs_ort = pairs.get(("default", "ort_fp32"))
    if default_vs_ort:
        parts[0] += (
            f" ({default_vs_ort['b1_ratio']}x plain ONNX Runtime at batch 1, "
            f"{default_vs_ort['b32_ratio']}x at batch 32, timed paired in one process)"
        )
    if "ort_int8" in rows:
        parts.append(f"int8 ONNX at {rows['ort_int8']['b1_median_ms']:.1f} ms")
    numpy_pair = pairs.get(("numpy_env_blas", "ort_fp32"))
    if numpy_pair:
        parts.append(
            f"the NumPy-only runtime at {numpy_pair['b1_ratio']}x ONNX Runtime's speed (batch 1, AVX2 kernels; "
            "target within 3x)"
        )
    acc = r.get("accuracy", {})
    if "reported" in acc:
        rep = acc["reported"]
        parts.append(f"int8 keeps the fp32 top-1 class on {_pct(rep['agreement'])} of {rep['images']} held-out images")
    return ", ".join(parts) + f" ({r['machine']['cpu']})"


def _targets(r: dict) -> str:
    """A result whose script lists its checks: 'check measured (target: verdict)', one after another."""
    return "; ".join(
        f"{c['check']} {c['measured']} (target {c['target']}: {c['verdict'].replace('missed', 'MISSED')})"
        for c in r["targets"]
    )


def _export_c(r: dict) -> str:
    return f"the integer C export ({r['machine']['cpu']}): {_targets(r)}"


def _compress(r: dict) -> str:
    return f"compression of the release ({r['machine']['cpu']}; scored on imagenet-samples' half B): {_targets(r)}"


def _compress_trained(r: dict) -> str:
    checks = "; ".join(f"{name} {t['value']} ({_verdict(t['met'])})" for name, t in r["targets"].items())
    data = r.get("data", "CIFAR-10")
    return f"compression of a model trained here ({data}, {r['test_images']} test images): {checks}"


def _serve(r: dict) -> str:
    by_conc = {row["concurrency"]: row for row in r["report"]}
    top = by_conc[max(by_conc)]
    swap = r["swap"]
    errors = sum(row["errors"] for row in r["report"])
    return (
        f"`squeezenet serve` answers {top['images_per_second']} images/s at concurrency {top['concurrency']} "
        f"({top['vs_eval']}x `squeezenet eval` on the same images, target 0.8x) with {errors} "
        f"errors, swaps its model under load with {swap['errors']} failed of {swap['requests']} requests, and peaks "
        f"at {r['peak_rss_mb']:.0f} MB without PyTorch (target 400 MB)"
    )


def _train_throughput(r: dict) -> str:
    best = max(r["speedup_vs_baseline"].values())
    met = _verdict(best >= r["target_speedup"])
    return f"the training step runs {best:.2f}x a plain PyTorch loop (target 1.5x: {met})"


def _train_cifar10(r: dict) -> str:
    if "test_top1_last" not in r:  # a record from before the validation protocol
        return f"CIFAR-10 from scratch reached {_pct(r['best_test_top1'])} (best epoch, chosen on the test split)"
    target = r["target"]
    return (
        f"CIFAR-10 from scratch reaches {_pct(r['test_top1_last'])} on its test split at the last epoch "
        f"(10 % of the training images validate) in {r['minutes']} min on {r['machine']['cpu']} (target "
        f"{target['test_top1']:.0%} within {target['minutes']} min: "
        f"{_verdict(r['test_top1_last'] >= target['test_top1'] and r['minutes'] <= target['minutes'])})"
    )


def _train_elpv(r: dict) -> str:
    four = r["4_classes"]
    levels = four["per_level"]
    balanced = sum(levels.values()) / len(levels)
    return (
        f"ELPV fine-tuning reaches {_pct(four['test']['all'])} on the 4 defect levels of the "
        f"{four['test']['n']} test cells (balanced {_pct(balanced)}; per level "
        + ", ".join(f"{k} {_pct(v)}" for k, v in levels.items())
        + "; the best plain 4-level accuracy found published is 83.5 %) and tells defective from functional "
        f"cells at {_pct(r['2_from_4']['test']['all'])}"
    )


def _gpu(r: dict | None) -> str:
    if r is None:
        return "the GPU figure is not measured (no GPU lent so far; `benchmarks/bench_gpu.py` is ready for one)"
    return f"on {r.get('device', 'the GPU')} the fastest engine runs {r.get('summary', '')}".rstrip()


STATUS = (
    ("eval", _eval),
    ("deploy", _deploy),
    ("export_c", _export_c),
    ("serve", _serve),
    ("compress", _compress),
    ("compress_trained", _compress_trained),
    ("train_throughput", _train_throughput),
    ("train_cifar10", _train_cifar10),
    ("train_elpv", _train_elpv),
)


def status_paragraph() -> str:
    """One sentence per recorded result, each figure read from its JSON file."""
    parts = [fn(result) for name, fn in STATUS if (result := _load(name)) is not None]
    parts.append(_gpu(_load("gpu")))
    text = "Status, measured by the scripts in `benchmarks/` (details below): " + "; ".join(parts) + "."
    return "\n".join(_wrap(text))


def _wrap(text: str, width: int = 100) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line]


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md lacks the <!-- {name}:start/end --> markers")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def results_markdown() -> str:
    files = [RESULTS / f"{name}.md" for name in RESULT_ORDER if (RESULTS / f"{name}.md").is_file()]
    parts = []
    for path in files:
        body = path.read_text().split("<!-- details -->")[0].strip()  # long tables stay in the file
        body = re.sub(r"^## ", "#### ", body, flags=re.M)
        parts.append(re.sub(r"^# ", "### ", body, count=1) + f"\n\n(full output: `{path.relative_to(ROOT)}`)")
    return "\n\n".join(parts) if parts else "No benchmark has been recorded yet."


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from squeezenet.cli.info import markdown_tables

    readme = ROOT / "README.md"
    text = readme.read_text()
    text = replace_block(text, "status", status_paragraph())
    text = replace_block(text, "tables", markdown_tables())
    text = replace_block(text, "results", results_markdown())
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
