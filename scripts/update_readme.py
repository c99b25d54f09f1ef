"""Regenerate the README's generated blocks: the status table, model/weights tables, results.

    python scripts/update_readme.py

Tables come from ``squeezenet info --markdown`` (the code's own metadata); the status
table is written from the JSON files the benchmark scripts wrote to
``benchmarks/results/`` and the results section from their Markdown files, so no figure in
the README is typed by hand (tests/test_readme.py checks all three blocks).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RESULT_ORDER = (
    "eval",
    "deploy",
    "export_c",
    "browser",
    "delta",
    "serve",
    "gpu",
    "compress",
    "compress_trained",
    "train_throughput",
    "train_cifar10",
    "train_elpv",
    "distributed",
)


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


@dataclass(frozen=True)
class Row:
    """One line of the status table: a measured figure, the target it answers (if any) and the CPU."""

    what: str
    figure: str
    target: str = ""
    verdict: str = ""
    machine: str = ""


def _cpu(r: dict) -> str:
    machine = r.get("machine")
    cpu = machine.get("cpu") if isinstance(machine, dict) else r.get("cpu")
    return cpu or "not recorded"


def _eval(r: dict) -> list[Row]:
    met = r.get("met", {})
    speed_target = f">= {r['target_images_per_second']} images/s" if "target_images_per_second" in r else ""
    return [
        Row(
            f"release weights on the {r['n']} imagenet-samples images",
            f"top-1 {_pct(r['top1'])} / top-5 {_pct(r['top5'])}",
            machine=_cpu(r),
        ),
        Row(
            "`squeezenet eval` end to end",
            f"{r['images_per_second_median']} images/s",
            speed_target,
            _verdict(met["images_per_second"]) if "images_per_second" in met else "",
            _cpu(r),
        ),
    ]


def _deploy(r: dict) -> list[Row]:
    v11 = r["archs"]["squeezenet1_1"]
    engines = {e["engine"]: e for e in v11["engines"] if "error" not in e}
    pairs = {tuple(p["pair"]): p for p in v11.get("paired", [])}
    cpu = _cpu(r)
    rows = [Row("default CPU engine, v1.1, batch 1", f"{engines['default']['b1_median_ms']:.1f} ms", machine=cpu)]
    if default_vs_ort := pairs.get(("default", "ort_fp32")):
        rows.append(
            Row(
                "default engine / plain ONNX Runtime (paired, one process)",
                f"{default_vs_ort['b1_ratio']}x (batch 1), {default_vs_ort['b32_ratio']}x (batch 32)",
                machine=cpu,
            )
        )
    if "ort_int8" in engines:
        rows.append(Row("int8 ONNX, v1.1, batch 1", f"{engines['ort_int8']['b1_median_ms']:.1f} ms", machine=cpu))
    if numpy_pair := pairs.get(("numpy_env_blas", "ort_fp32")):
        ratio = numpy_pair["b1_ratio"]
        rows.append(
            Row(
                "NumPy-only runtime, speed vs ONNX Runtime (batch 1)",
                f"{ratio}x",
                "within 3x",
                _verdict(ratio >= 1 / 3),
                cpu,
            )
        )
    return rows


def _checks(r: dict, prefix: str) -> list[Row]:
    """A result whose script lists its checks (check, measured, target, verdict)."""
    return [
        Row(f"{prefix}{c['check']}", c["measured"], c["target"], c["verdict"].replace("missed", "MISSED"), _cpu(r))
        for c in r["targets"]
    ]


def _export_c(r: dict) -> list[Row]:
    return _checks(r, "C export, ")


def _browser(r: dict) -> list[Row]:
    return _checks(r, "WebAssembly in Chromium, ")


def _delta(r: dict) -> list[Row]:
    return _checks(r, "model updates (.sqzd from `train --update-of`), ")


def _compress(r: dict) -> list[Row]:
    return _checks(r, "compression of the release (half B), ")


def _compress_trained(r: dict) -> list[Row]:
    data = r.get("data", "CIFAR-10")
    rows = []
    for name, t in r["targets"].items():
        road, _, target = name.partition(": ")
        what = f"compression of a model trained here ({data}, {r['test_images']} test images), {road}"
        rows.append(Row(what, str(t["value"]), target, _verdict(t["met"]), _cpu(r)))
    return rows


def _serve(r: dict) -> list[Row]:
    by_conc = {row["concurrency"]: row for row in r["report"]}
    top = by_conc[max(by_conc)]
    swap, cpu = r["swap"], _cpu(r)
    errors = sum(row["errors"] for row in r["report"])
    targets = r.get("targets", {})
    throughput_target = targets.get("throughput_vs_eval", 0.8)
    memory_target = targets.get("peak_rss_mb", 400)
    return [
        Row(
            f"`squeezenet serve` at concurrency {top['concurrency']}",
            f"{top['images_per_second']} images/s, {errors} errors",
            machine=cpu,
        ),
        Row(
            "`squeezenet serve` / `squeezenet eval` on the same images",
            f"{top['vs_eval']}x",
            f">= {throughput_target}x",
            _verdict(top["vs_eval"] >= throughput_target),
            cpu,
        ),
        Row(
            "model swaps under load",
            f"{swap['errors']} failed of {swap['requests']} requests",
            "0 failed",
            _verdict(swap["errors"] == 0),
            cpu,
        ),
        Row(
            "server peak memory, no PyTorch",
            f"{r['peak_rss_mb']:.0f} MB",
            f"<= {memory_target} MB",
            _verdict(r["peak_rss_mb"] <= memory_target),
            cpu,
        ),
        *_serve_hostile(r.get("hostile"), cpu),
    ]


def _serve_hostile(h: dict | None, cpu: str) -> list[Row]:
    """The hostile section's rows (#38); a record from before it has none."""
    if h is None:
        return []
    c, m, s, t = h["connections"], h["memory"], h["swaps"], h["targets"]
    return [
        Row(f"`serve`: good requests answered 200 beside {c['idle']} idle and {c['stalling']} header-stalling "
            "connections", f"{c['good_ok_share']:.1%} of {c['good_requests']}", f">= {t['good_ok_share']:.0%}",
            _verdict(c["good_ok_share"] >= t["good_ok_share"]), cpu),
        Row("`serve`: hostile connections closed within the header timeout",
            f"longest {c['hostile']['longest_life_s']} s (--header-timeout {c['header_timeout_s']:g} s), "
            f"{c['hostile']['refused_503']} refused with a JSON 503", "all",
            _verdict(c["all_closed_within_bound"]), cpu),
        Row(f"`serve`: {m['count']} simultaneous largest allowed images, peak RSS", f"{m['peak_rss_mb']:.0f} MB",
            f"< {t['peak_rss_mb']} MB", _verdict(m["peak_rss_mb"] < t["peak_rss_mb"]), cpu),
        Row("`serve`: swap of the data-free `.sqz` under 8 clients / idle", f"{s['loaded_vs_idle']}x",
            f"<= {t['loaded_vs_idle']:g}x", _verdict(s["loaded_vs_idle"] <= t["loaded_vs_idle"]), cpu),
        Row("`serve`: the weights already served sent again", f"{s['resend']['result']} in {s['resend']['seconds']} s",
            "at once, no conversion", _verdict(s["resend"]["result"] == "unchanged"), cpu),
        Row(f"`serve`: resident memory after {s['swaps']} swaps / after the first", f"{s['rss_last_vs_first']:.2f}",
            "within 10 %", _verdict(abs(s["rss_last_vs_first"] - 1) <= 0.10), cpu),
    ]  # fmt: skip


def _train_throughput(r: dict) -> list[Row]:
    best = max(r["speedup_vs_baseline"].values())
    return [
        Row(
            "training step / a plain PyTorch loop",
            f"{best:.2f}x",
            f">= {r['target_speedup']}x",
            _verdict(best >= r["target_speedup"]),
            _cpu(r),
        )
    ]


def _train_cifar10(r: dict) -> list[Row]:
    if "test_top1_last" not in r:  # a record from before the validation protocol
        return [
            Row(
                "CIFAR-10 from scratch, best epoch chosen on the test split", _pct(r["best_test_top1"]), machine=_cpu(r)
            )
        ]
    target = r["target"]
    ok = r["test_top1_last"] >= target["test_top1"] and r["minutes"] <= target["minutes"]
    return [
        Row(
            "CIFAR-10 from scratch, test split at the last epoch (held-back training images validate)",
            f"{_pct(r['test_top1_last'])} in {r['minutes']} min",
            f">= {target['test_top1']:.0%} within {target['minutes']} min",
            _verdict(ok),
            _cpu(r),
        )
    ]


def _train_elpv(r: dict) -> list[Row]:
    four, cpu = r["4_classes"], _cpu(r)
    levels = four["per_level"]
    balanced = sum(levels.values()) / len(levels)
    per_level = ", ".join(f"{k} {_pct(v)}" for k, v in levels.items())
    return [
        Row(
            f"ELPV fine-tuned, 4 defect levels of the {four['test']['n']} test cells",
            f"{_pct(four['test']['all'])} (balanced {_pct(balanced)}; {per_level}; the best plain 4-level "
            "accuracy found published: 83.5 %)",
            machine=cpu,
        ),
        Row("ELPV, defective vs functional (from the 4-level model)", _pct(r["2_from_4"]["test"]["all"]), machine=cpu),
    ]


def _distributed(r: dict) -> list[Row]:
    """bench_distributed's own verdicts, and AlexNet's efficiency beside SqueezeNet's (the paper's claim)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _distributed_report import efficiency, median_round_efficiency, round_efficiencies, verdicts

    cpu = _cpu(r)
    rows = [Row(f"two emulated nodes: {check}", measured, target, _verdict(ok), cpu)
            for check, measured, target, ok in verdicts(r)]  # fmt: skip
    for model in ("squeezenet1_1", "alexnet"):
        for compression in ("none", "bf16", "powersgd:2"):
            key = f"{model}/{compression}"
            if key in r["rates"]["100 Mbit/s"]["runs"]:
                figure = f"{efficiency(r, '100 Mbit/s', key):.1%}"
                if r.get("headline") and r["headline"]["model"] == model:  # the rounds' median first
                    median, rounds = median_round_efficiency(r, compression), len(round_efficiencies(r, compression))
                    figure = f"{median:.1%} (median of {rounds} rounds; one run {figure})"
                rows.append(Row(f"two nodes at 100 Mbit/s, {model}, {compression}: scaling efficiency", figure,
                                machine=cpu))  # fmt: skip
    return rows


def _gpu(r: dict | None) -> list[Row]:
    if r is None:
        return [Row("GPU throughput", "not measured (no GPU lent so far; `benchmarks/bench_gpu.py` is ready)")]
    best = r["engines"][r["best"]]
    return [
        Row(
            f"GPU throughput, {r['benchmark']}",
            f"{best['images_per_s']:,.0f} images/s ({r['best']}, {best['speedup']:.2f}x torchvision eager)",
            machine=r.get("device", ""),
        )
    ]


STATUS = (
    ("eval", _eval),
    ("deploy", _deploy),
    ("export_c", _export_c),
    ("browser", _browser),
    ("delta", _delta),
    ("serve", _serve),
    ("compress", _compress),
    ("compress_trained", _compress_trained),
    ("train_throughput", _train_throughput),
    ("train_cifar10", _train_cifar10),
    ("train_elpv", _train_elpv),
    ("distributed", _distributed),
)


def status_rows() -> list[Row]:
    rows = [row for name, fn in STATUS if (result := _load(name)) is not None for row in fn(result)]
    return rows + _gpu(_load("gpu"))


def status_paragraph() -> str:
    """The status table: one row per recorded figure, each read from its JSON file."""
    lines = [
        "Status, measured by the scripts in `benchmarks/` (details below; each row names the CPU it ran on):",
        "",
        "| what | figure | target | met | machine |",
        "|---|---|---|---|---|",
    ]
    for row in status_rows():
        cells = (row.what, row.figure, row.target, row.verdict, row.machine)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


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
