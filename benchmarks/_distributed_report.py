"""The page and the plot of ``bench_distributed.py``, from its JSON alone."""

from __future__ import annotations

import statistics
from pathlib import Path

from _distributed_model import CALIBRATION, NOMINAL_RATES, WORKERS, link_fit, link_time

HEADLINE_RATE = "100 Mbit/s"


def efficiency(result: dict, label: str, key: str) -> float:
    run = result["rates"][label]["runs"][key]
    return result["alone"]["alone"][run["model"]]["step_s"] / run["step_s"]


def hidden_share(result: dict, label: str, key: str) -> float | None:
    """The share of the all-reduce time that did not lengthen the step: 1 - (step - alone) / comm,
    comm = the link's time for each departing all-reduce at that rate (0 to 1)."""
    rate, run = result["rates"][label], result["rates"][label]["runs"][key]
    a, bandwidth = link_fit(rate["link"])
    comm = sum(link_time(size, a, bandwidth) for _, size in run["departures"])
    if comm <= 0:
        return None
    exposed = run["step_s"] - result["alone"]["alone"][run["model"]]["step_s"]
    return min(1.0, max(0.0, 1.0 - exposed / comm))


def round_efficiencies(result: dict, compression: str) -> list[float]:
    """Each headline round's one-worker step over its two-node step with ``compression``."""
    return [r["alone_s"] / r["step_s"][compression] for r in result["headline"]["rounds"]]


def median_round_efficiency(result: dict, compression: str) -> float:
    """The figure an efficiency target is judged on where a record has headline rounds."""
    return statistics.median(round_efficiencies(result, compression))


def _efficiency_verdict(result: dict, compression: str, target: float) -> tuple[str, str, str, bool]:
    """The median headline round's efficiency (with the rounds' range and the table's single run's),
    or the table's run where a record has no rounds."""
    single = efficiency(result, HEADLINE_RATE, f"squeezenet1_1/{compression}")
    check = f"squeezenet1_1 at 100 Mbit/s, {compression}: scaling efficiency"
    if not result.get("headline"):
        return check, f"{single:.1%}", f">= {target:.0%}", single >= target
    rounds = round_efficiencies(result, compression)
    median = median_round_efficiency(result, compression)
    measured = (f"{median:.1%} (median of {len(rounds)} rounds, {min(rounds):.1%} to {max(rounds):.1%}; "
                f"the table's run {single:.1%})")  # fmt: skip
    return check + ", median round", measured, f">= {target:.0%}", median >= target


def verdicts(result: dict) -> list[tuple[str, str, str, bool]]:
    """(check, measured, target, met) for the targets of the issue."""
    t, rows = result["targets"], []
    none, psgd = (f"squeezenet1_1/{c}" for c in ("none", "powersgd:2"))
    if none in result["rates"][HEADLINE_RATE]["runs"]:
        rows.append(_efficiency_verdict(result, "bf16", t["bf16_efficiency"]))
        rows.append(_efficiency_verdict(result, "powersgd:2", t["powersgd_efficiency"]))
        runs = result["rates"][HEADLINE_RATE]["runs"]
        ratio = runs[psgd]["sent_bytes_per_step"] / runs[none]["sent_bytes_per_step"]
        rows.append(
            (
                "squeezenet1_1, powersgd:2 bytes per step / uncompressed",
                f"1/{1 / ratio:.0f}",
                f"<= 1/{1 / t['powersgd_bytes_ratio']:.0f}",
                ratio <= t["powersgd_bytes_ratio"],
            )
        )
    errors = [
        abs(r["error"])
        for run in result["model"]["runs"].values()
        for label, r in run["rates"].items()
        if label != CALIBRATION
    ]
    rows.append(
        (
            "step model: largest error at 1 Gbit/s and 100 Mbit/s (every model and compression)",
            f"{max(errors):.1%}",
            f"<= {t['model_error']:.0%}",
            max(errors) <= t["model_error"],
        )
    )
    acc = result.get("accuracy") or {}
    for when, record in [("", acc), *((", earlier run", e) for e in reversed(acc.get("earlier", [])))]:
        runs = record.get("runs") or {}
        if "powersgd:2" in runs and "none" in runs and runs["none"]["val_top1"] is not None:
            gap = 100 * (runs["none"]["val_top1"] - runs["powersgd:2"]["val_top1"])
            rows.append(
                (
                    f"CIFAR-10 validation top-1, powersgd:2 below none ({record['epochs']} epochs{when})",
                    f"{gap:+.2f} points",
                    f"<= {t['accuracy_points']:g}",
                    gap <= t["accuracy_points"],
                )
            )
    return rows  # fmt: skip


def _measured_table(result: dict) -> list[str]:
    lines = [
        "| model | gradient exchange | link | step (s) | sent per step | images/s, 2 nodes | scaling "
        "efficiency | comm. hidden | model: step (s), error |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, base in result["rates"][CALIBRATION]["runs"].items():
        for label, rate in result["rates"].items():
            run = rate["runs"][key]
            model = result["model"]["runs"][key]["rates"][label]
            hidden = hidden_share(result, label, key) if run["compression"] == "none" and label != CALIBRATION else None
            fit = "calibration" if label == CALIBRATION else f"{model['predicted_s']:.3f}, {model['error']:+.1%}"
            lines.append(
                f"| {base['model']} | {base['compression']} | {label} | {run['step_s']:.3f} | "
                f"{run['sent_bytes_per_step'] / 1e6:.3f} MB | {2 * result['settings']['batch'] / run['step_s']:.1f} | "
                f"{efficiency(result, label, key):.1%} | {'' if hidden is None else f'{hidden:.0%}'} | {fit} |"
            )
    return lines  # fmt: skip


def _scaling_lines(result: dict) -> list[str]:
    shown = (2, 8, 32, 128)
    lines = ["| model | gradient exchange | link | " + " | ".join(f"{n} workers" for n in shown) + " |",
             "|---|---|---|" + "---:|" * len(shown)]  # fmt: skip
    for key, rates in result["scaling"].items():
        model, compression = key.split("/")
        for label, by_n in rates.items():
            lines.append(f"| {model} | {compression} | {label} | " + " | ".join(f"{by_n[str(n)]:.0%}" for n in shown)
                         + " |")  # fmt: skip
    return lines


ACCURACY_HEADER = ("| gradient exchange | val top-1, last epoch | val images | test top-1, once | sent per step "
                   "| minutes |", "|---|---:|---:|---:|---:|---:|")  # fmt: skip


def _accuracy_lines(result: dict) -> list[str]:
    acc = result.get("accuracy")
    if not acc:
        return ["CIFAR-10 accuracy: not measured in this run."]
    where = f"`python benchmarks/bench_distributed.py {acc.get('argv', '')}`".replace(" `", "`")
    lines = [f"Command: {where}; {acc['machine']['cpu']}, {acc['machine']['date']}." if "machine" in acc else "", "",
             f"CIFAR-10 (`{acc['data']}`), squeezenet_cifar, {acc['epochs']} epochs on the two nodes (unthrottled), "
             f"global batch {acc['global_batch']}, lr {acc['lr']}: validated on held-back training images every "
             "epoch, the test split scored once after the last epoch.", "", *ACCURACY_HEADER]  # fmt: skip
    lines += _accuracy_rows(acc["runs"])
    for e in reversed(acc.get("earlier", [])):
        command = f" (`python benchmarks/bench_distributed.py {e['argv']}`)" if e.get("argv") else ""
        when = ", ".join(v for v in (e["machine"].get("cpu"), e["machine"].get("date")) if v)
        lines += ["", f"Earlier, at {e['epochs']} epochs{command}, {when}:", "",
                  *ACCURACY_HEADER, *_accuracy_rows(e["runs"])]  # fmt: skip
    return lines


def _accuracy_rows(runs: dict) -> list[str]:
    """One row per run; its date beside the minutes, where recorded: rows kept from other commands differ."""
    dated = {name: f" ({r['date']})" if r.get("date") else "" for name, r in runs.items()}
    return [f"| {name} | {r['val_top1']:.2%} | {r['val_n']} | {r['test_top1']:.2%} | "
            f"{r['sent_bytes_per_step'] / 1e6:.3f} MB | {r['minutes']}{dated[name]} |"
            for name, r in runs.items()]  # fmt: skip


def _headline_lines(result: dict) -> list[str]:
    """The rounds behind the efficiency verdicts (none in records made before them)."""
    h = result.get("headline")
    if not h:
        return []
    names = list(h["rounds"][0]["step_s"])
    where = f"`python benchmarks/bench_distributed.py {h.get('argv', '')}`".replace(" `", "`")
    lines = [f"## {h['model']} at {h['rate']}, in rounds", "",
             f"Command: {where}; {h['machine']['cpu']}, {h['machine']['date']}. Each round: the one-worker step "
             "(two processes at once), then the two-node step with each exchange, back to back; efficiency = "
             "one worker's step / two nodes' step.", "",
             "| round | one worker (s) | " + " | ".join(f"{c}: step (s), efficiency" for c in names) + " |",
             "|---:|---:|" + "---:|" * len(names)]  # fmt: skip
    by_name = {c: round_efficiencies(result, c) for c in names}
    for i, r in enumerate(h["rounds"]):
        cells = " | ".join(f"{r['step_s'][c]:.3f}, {by_name[c][i]:.1%}" for c in names)
        lines.append(f"| {i + 1} | {r['alone_s']:.3f} | {cells} |")
    medians = " | ".join(f"{median_round_efficiency(result, c):.1%}" for c in names)
    return [*lines, f"| median |  | {medians} |", ""]


def markdown(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    alone = result["alone"]["alone"]
    lines = [
        "# Distributed training on two emulated machines: communication, scaling, gradient compression",
        "",
        f"Command: `python benchmarks/bench_distributed.py {result.get('argv', '')}`".rstrip(),
        f"Machine: {m['cpu']}, {m['cores']} cores (one worker per node, one thread each), torch {m['torch']}, "
        f"{m['date']}; bf16 autocast: {'yes' if result['alone']['amp_bf16'] else 'no'}; {s['size']} px, batch "
        f"{s['batch']} per worker, median of {s['steps']} timed steps after warm-up; random images.",
        "",
        "Two nodes: two network namespaces joined by a veth pair shaped with tc (scripts/two_nodes.py), "
        "torchrun c10d rendezvous, gloo. Scaling efficiency: two nodes' images/s over twice one worker's alone. "
        "Comm. hidden (uncompressed): the share of the all-reduce time (the link's fitted time for each bucket) "
        "that did not lengthen the step. The model is calibrated on the unthrottled run only.",
        "",
        "| target | measured | required | |",
        "|---|---|---|---|",
        *[f"| {c} | {v} | {r} | {'met' if ok else 'MISSED'} |" for c, v, r, ok in verdicts(result)],
        "",
        "| model | parameters | fp32 gradient | step alone (s) | images/s alone |",
        "|---|---:|---:|---:|---:|",
        *[f"| {k} | {v['params']:,} | {4 * v['params'] / 1e6:.2f} MB | {v['step_s']:.3f} | "
          f"{s['batch'] / v['step_s']:.1f} |" for k, v in alone.items()],
        "",
        *_measured_table(result),
        "",
        "Links (fit of all-reduces of 4 KB to 8 MB between the two nodes): " + "; ".join(
            f"{label}: {1e3 * f['a_s']:.2f} ms + {8 * f['bytes_per_s'] / 1e6:,.0f} Mbit/s"
            for label, f in result["model"]["links"].items()) + ".",
        "",
        *_headline_lines(result),
        "## Predicted scaling efficiency (ring all-reduce, the nominal rate, the unthrottled link's latency)",
        "",
        *_scaling_lines(result),
        "",
        "## Accuracy with each gradient exchange",
        "",
        *_accuracy_lines(result),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Predicted efficiency against workers, one panel per rate; the two-node measurements as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(NOMINAL_RATES), figsize=(5 * len(NOMINAL_RATES), 4), sharey=True)
    styles = {"none": "-", "bf16": "--", "powersgd:2": ":"}
    colors = {}
    for ax, label in zip(axes, NOMINAL_RATES, strict=True):
        for key, rates in result["scaling"].items():
            model, compression = key.split("/")
            color = colors.setdefault(model, f"C{len(colors)}")
            ys = [rates[label][str(n)] for n in WORKERS]
            ax.plot(WORKERS, ys, styles.get(compression, "-"), color=color, label=f"{model}, {compression}")
            if label in result["rates"]:
                ax.plot([2], [efficiency(result, label, key)], "o", color=color)
        ax.set(xscale="log", xticks=WORKERS, xticklabels=WORKERS, title=f"{label} (dots: measured, 2 nodes)",
               xlabel="workers", ylim=(0, 1.05))  # fmt: skip
    axes[0].set_ylabel("scaling efficiency")
    axes[-1].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
