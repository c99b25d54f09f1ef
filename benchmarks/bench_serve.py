"""Load benchmark of ``squeezenet serve``: throughput and latency at concurrency 1, 8 and 32,
batching on against off, a live model swap mid-run, and the server's peak memory.

    python benchmarks/bench_serve.py              # the record: results/serve.json and serve.md
    python benchmarks/bench_serve.py --tiny OUT   # CI's smoke test (8 + 8 images, short levels)

Traffic goes to 127.0.0.1 only, bounded in requests and in time per level. Real JPEG files from
imagenet-samples (sorted paths), sent as raw bodies by an async client (httpx) that runs on the
same CPU as the server: its cost is counted against the server, as a client on the machine would be.

- Images: the even-indexed half *chooses* the batching default (every setting measured on it);
  the odd-indexed half is *reported* on, with the chosen setting only: nothing is tuned on the
  images whose figures are published.
- Reference: ``squeezenet eval`` on the same reported images, model and engine (decoding
  included), paired with the server in one run: at each concurrency level, ``--pair-rounds``
  rounds of one eval run and one server block back to back (eval first in the first round, the
  server first in the second, and so on, so that a drift of the machine's speed falls on both
  alike). Each round gives the ratio of two measurements taken a minute apart; a level's figure
  is the median of its rounds' ratios (the median of each side is recorded beside it). Targets:
  at concurrency 32, >= 80 % of eval's images/s; at concurrency 1, median latency <= 1.5x eval's
  time per image. The results record the machine and its load average before and after.
- Live update: at concurrency 32, the same network as a safetensors file (other bytes, other
  SHA-256) is PUT while requests flow: zero may fail, each response names its model.
- Memory: the server's peak resident set (VmHWM of its process; the conversion child that runs
  PyTorch is a separate, short-lived process). Target: <= 400 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _common import DATA, add_tiny_option, machine, write_results
from _serve_load import ROOT, TOKEN, Server, block, combine, load
from _serve_report import markdown

LEVELS = (1, 8, 32)
# name -> serve options: batching off; on, taking what queued while the last batch ran; on, waiting
# up to 2 ms for a fuller batch; on with larger batches (ONNX Runtime's buffers grow with the batch)
SETTINGS = {
    "off (max batch 1)": ["--max-batch", "1"],
    "on (max batch 8, no wait)": ["--max-batch", "8", "--max-wait-ms", "0"],
    "on (max batch 8, wait 2 ms)": ["--max-batch", "8", "--max-wait-ms", "2"],
    "on (max batch 32, no wait)": ["--max-batch", "32", "--max-wait-ms", "0"],
}
TARGETS = {"throughput_vs_eval": 0.8, "p50_vs_eval_time": 1.5, "peak_rss_mb": 400}


def eval_images_per_second(weights: Path, folder: Path) -> float:
    """``squeezenet eval --json`` on ``folder``: its own images/s (the scoring loop, decoding included)."""
    command = [sys.executable, "-m", "squeezenet.cli.main", "eval", "--weights", str(weights), "--data", str(folder)]
    proc = subprocess.run([*command, "--json"], capture_output=True, text=True, cwd=ROOT, check=True)
    return float(json.loads(proc.stdout)["images_per_second"])


def image_tree(paths: list[Path], folder: Path) -> Path:
    """``<wnid>/<file>`` links to ``paths``: an ImageNet-validation layout eval reads."""
    for path in paths:
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / path.parent.name / path.name).symlink_to(path)
    return folder


def say(label: str, row: dict) -> None:
    print(
        f"bench:   {label}concurrency {row['concurrency']}: {row['images_per_second']} images/s, p50 {row['p50_ms']} "
        f"ms, p99 {row['p99_ms']} ms, mean batch {row['mean_batch']}, errors {row['errors']}",
        file=sys.stderr,
    )


def interleaved(servers: dict[str, Server], payloads: list[bytes], levels, requests_for, rounds: int, seconds: float):
    """Every setting at every concurrency, in ``rounds`` blocks that take turns (the order rotating
    each round), each block sending the next slice of the images: a slower spell of this shared
    machine then falls on every setting alike instead of on whichever ran at that moment."""
    table = {name: [] for name in servers}
    names = list(servers)
    for level in levels:
        per_block = max(1, requests_for(level) // rounds)
        blocks: dict[str, list] = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = (r * per_block) % len(payloads)
                sliced = payloads[start:] + payloads[:start]
                blocks[name].append(block(servers[name], sliced, level, per_block, seconds))
        for name in names:
            table[name].append(combine(blocks[name], level))
            say(f"{name}: ", table[name][-1])
    return table


def paired_level(server: Server, eval_run, payloads: list[bytes], level: int, rounds: int, seconds: float) -> dict:
    """One concurrency level against ``squeezenet eval`` (``eval_run()``: its images/s), paired:
    ``rounds`` rounds of an eval run and a server block (one pass over ``payloads``) back to back,
    the order swapped every round; -> the level's row with every round and the medians."""
    blocks, pairs = [], []
    for r in range(rounds):
        first = "eval" if r % 2 == 0 else "server"
        if first == "eval":
            evaluated = eval_run()
            served = block(server, payloads, level, len(payloads), seconds)
        else:
            served = block(server, payloads, level, len(payloads), seconds)
            evaluated = eval_run()
        blocks.append(served)
        pairs.append(paired_round(first, evaluated, served))
        print(
            f"bench:   round {r + 1}: eval {evaluated} images/s, server {served['images_per_second']}", file=sys.stderr
        )
    row = combine(blocks, level)
    row.update(pair_medians(pairs), rounds=pairs)
    return row


def paired_round(first: str, eval_ips: float, served: dict) -> dict:
    per_image_ms = 1000 / eval_ips
    return {
        "first": first,
        "eval_images_per_second": eval_ips,
        "images_per_second": served["images_per_second"],
        "p50_ms": served["p50_ms"],
        "vs_eval": round(served["images_per_second"] / eval_ips, 3),
        "p50_vs_eval_time": round(served["p50_ms"] / per_image_ms, 3) if served["p50_ms"] is not None else None,
    }


def pair_medians(pairs: list[dict]) -> dict:
    """The level's figures: the median of each side over the rounds, and the median of the rounds'
    own ratios (the paired comparison: each ratio is of two measurements taken together)."""

    def median(key: str) -> float | None:
        values = [p[key] for p in pairs if p[key] is not None]
        return round(statistics.median(values), 3) if values else None

    return {
        "images_per_second": median("images_per_second"),
        "eval_images_per_second": median("eval_images_per_second"),
        "vs_eval": median("vs_eval"),
        "p50_vs_eval_time": median("p50_vs_eval_time"),
    }


def swap_run(server: Server, payloads: list[bytes], new_weights: Path, requests: int, seconds: float) -> dict:
    """Concurrency 32 with a PUT of ``new_weights`` once a third of ``requests`` are answered, and
    ``requests`` more after the swap."""

    async def put(side: dict) -> None:
        side["put_start"] = time.perf_counter()
        async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:
            response = await client.put(
                "/v1/model",
                content=new_weights.read_bytes(),
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"},
                params={"name": new_weights.name},
            )
        side["put_end"] = time.perf_counter()
        side["status"] = response.status_code
        side["new"] = response.json()["model"]["id"] if response.status_code == 200 else response.text
        side["old"] = response.json().get("previous")

    before = httpx.get(server.url + "/v1/model").json()["id"]
    result = asyncio.run(load(server.url, payloads, 32, requests, seconds, swap=put))
    side, records = result["side"], result.pop("records")
    del result["latencies"], result["batches"]
    after_put = [r for r in records if "put_end" in side and r[0] > side["put_end"]]
    before_put = [r for r in records if "put_start" in side and r[1] < side["put_start"]]
    result.update(
        old=before,
        new=side.get("new"),
        put_status=side.get("status"),
        swap_seconds=round(side["put_end"] - side["put_start"], 2) if "put_end" in side else None,
        requests_after_swap=len(after_put),
        after_swap_all_new=all(r[2] == side.get("new") for r in after_put),
        before_swap_all_old=all(r[2] == before for r in before_put),
        model_ids_seen=sorted(result["models"]),
    )
    return result


def browser_models(weights: Path, tune: list[Path], report: list[Path], work: Path, calibration: int) -> dict:
    """The files the page can download, run here by ONNX Runtime on the reported images: bytes,
    gzip bytes, top-1 agreement with the served fp32 graph and top-1 accuracy. int8 is calibrated on
    the first ``calibration`` choosing images, and also run with graph optimizations off (its QDQ
    pattern then runs in float), which separates its integer kernels from its quantization."""
    import gzip
    import json

    import numpy as np
    import onnxruntime as ort

    from squeezenet.serving.model import ort_session
    from squeezenet.serving.preprocess import prepare

    folders = {}
    for kind, extra in (("w8a32", []), ("int8", ["--calibration", *map(str, tune[:calibration])])):
        folders[kind] = work / f"browser-{kind}"
        folders[kind].mkdir()
        command = [sys.executable, "-m", "squeezenet.serving.convert", str(weights), str(folders[kind])]
        subprocess.run([*command, "--browser", kind, *extra], check=True, capture_output=True, cwd=ROOT)
    card = json.loads((folders["w8a32"] / "card.json").read_text())
    files = {
        "fp32": folders["w8a32"] / "model.onnx",
        "int8": folders["int8"] / "browser.onnx",
        "w8a32": folders["w8a32"] / "browser.onnx",
    }
    x = np.stack([prepare(p.read_bytes(), card["preprocessing"], 10**9).array for p in report])
    labels = np.array([card["wnids"].index(p.parent.name) for p in report])

    def top1(session) -> np.ndarray:
        return np.concatenate(
            [session.run(["logits"], {"input": x[i : i + 25]})[0].argmax(1) for i in range(0, len(x), 25)]
        )

    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    predictions = {name: top1(ort_session(path.read_bytes(), 2)) for name, path in files.items()}
    emulated = top1(ort.InferenceSession(str(files["int8"]), plain, providers=["CPUExecutionProvider"]))
    rows = {}
    for name, path in files.items():
        data = path.read_bytes()
        rows[name] = {
            "bytes": len(data),
            "gzip_bytes": len(gzip.compress(data, 6, mtime=0)),
            "agreement_with_fp32": round(float((predictions[name] == predictions["fp32"]).mean()), 4),
            "top1": round(float((predictions[name] == labels).mean()), 4),
        }
    rows["int8"]["agreement_with_fp32_qdq_in_float"] = round(float((emulated == predictions["fp32"]).mean()), 4)
    return {"images": len(report), "calibration_images": calibration, "models": rows}


def choose(table: dict[str, list[dict]], rss: dict[str, float]) -> str:
    """Among the settings whose peak memory leaves room for a swap (a second session for a moment:
    at most 75 % of the target), the highest throughput at the highest concurrency; within 3 % of
    it, the lowest median latency at concurrency 1 (a wait only pays when it buys throughput)."""
    fitting = {n: rows for n, rows in table.items() if rss[n] <= 0.75 * TARGETS["peak_rss_mb"]} or table
    top = max(rows[-1]["images_per_second"] for rows in fitting.values())
    close = [name for name, rows in fitting.items() if rows[-1]["images_per_second"] >= 0.97 * top]
    return min(close, key=lambda name: fitting[name][0]["p50_ms"])


# ---------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="longest time one level may run")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the images at concurrency 8 and 32")
    parser.add_argument("--block-rounds", type=int, default=4, help="interleaved blocks per setting and level")
    parser.add_argument("--pair-rounds", type=int, default=3, help="eval and server rounds per reported level")
    parser.add_argument("--shared", action="store_true", help="say in the results that other jobs shared the CPU")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    add_tiny_option(parser)
    args = parser.parse_args()
    weights = DATA / "deepcompression" / "compressed_SqueezeNet.net"
    paths = sorted((DATA / "imagenet-samples").glob("*/*.JPEG"))
    tune, report = paths[0::2], paths[1::2]
    out = args.out
    if args.tiny:  # a smoke test: one round of everything
        tune, report, args.seconds, args.rounds, out = tune[:8], report[:8], 20.0, 1, args.tiny
        args.block_rounds = args.pair_rounds = 1
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    load_before = os.getloadavg()
    try:
        payload = run(args, weights, tune, report, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    payload["load_average"] = {"before": load_before, "after": os.getloadavg()}
    command = "python benchmarks/bench_serve.py" + (" --shared" if args.shared else "")
    payload["command"] = command if not args.tiny else "python benchmarks/bench_serve.py --tiny OUT"
    write_results("serve", payload, markdown(payload), folder=out)
    return 0


def tune_batching(args, weights: Path, tune: list[Path], work: Path) -> tuple[dict, dict]:
    """Every batching setting on the choosing images, interleaved; -> (table, peak memory by setting)."""
    settings = dict(list(SETTINGS.items())[:2]) if args.tiny else SETTINGS  # a smoke test: two are enough
    print(f"bench: batching settings on the {len(tune)} choosing images, interleaved", file=sys.stderr)
    servers = {}
    try:
        for name, options in settings.items():  # all started; an idle one takes no CPU (its threads sleep)
            servers[name] = Server(weights, options, work / f"server-{len(servers)}.log")
        payloads = [p.read_bytes() for p in tune]
        requests_for = requests_per_level(len(tune), args.rounds)
        table = interleaved(servers, payloads, LEVELS, requests_for, args.block_rounds, args.seconds)
        return table, {name: round(server.peak_rss_mb(), 1) for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


def requests_per_level(images: int, rounds: int):
    return lambda level: images if level == 1 else images * rounds


def measure_reported(args, weights: Path, options: list[str], report: list[Path], work: Path) -> dict:
    """The chosen setting on the reported images, each level paired with eval; then the live update."""
    alt = work / "release.safetensors"
    subprocess.run(
        [sys.executable, "-m", "squeezenet.cli.main", "convert", str(weights), "-o", str(alt)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    tree, payloads, evals = image_tree(report, work / "report"), [p.read_bytes() for p in report], []

    def eval_run() -> float:
        evals.append(eval_images_per_second(weights, tree))
        return evals[-1]

    server = Server(weights, options, work / "server.log")
    try:
        print(f"bench: reported images ({len(report)}), {args.pair_rounds} eval and server rounds a level",
              file=sys.stderr)  # fmt: skip
        rows = []
        for level in LEVELS:
            rows.append(paired_level(server, eval_run, payloads, level, args.pair_rounds, args.seconds))
            say("", rows[-1])
        print("bench: live update at concurrency 32", file=sys.stderr)
        swap = swap_run(server, payloads, alt, len(report), args.seconds * 5)
        return {
            "rows": rows,
            "evals": evals,
            "swap": swap,
            "peak": server.peak_rss_mb(),
            "torch": server.torch_loaded(),
        }
    finally:
        server.stop()


def why_chosen(table: dict, chosen: str) -> str:
    off = "off (max batch 1)"
    best_off, best = table[off][-1]["images_per_second"], table[chosen][-1]["images_per_second"]
    return (
        f"at concurrency 32 it served {best} images/s against {best_off} with batching off "
        f"({best / best_off:.2f}x), and at concurrency 1 a median of {table[chosen][0]['p50_ms']} ms "
        f"(off: {table[off][0]['p50_ms']} ms). Rule: the highest throughput at concurrency 32; "
        "within 3 % of it, the lowest median latency at concurrency 1; only settings whose peak memory "
        f"leaves room for a swap (<= {0.75 * TARGETS['peak_rss_mb']:.0f} MB)."
    )


def serve_default_setting() -> str | None:
    """The setting that ``squeezenet serve`` runs when told nothing."""
    from squeezenet.serving.config import ServeConfig

    default = ServeConfig(weights=Path("-"))
    for name, options in SETTINGS.items():
        given = dict(zip(options[::2], options[1::2], strict=True))
        if (
            int(given["--max-batch"]) == default.max_batch
            and float(given.get("--max-wait-ms", 0)) == default.max_wait_ms
        ):
            return name
    return None


def run(args, weights: Path, tune: list[Path], report: list[Path], work: Path) -> dict:
    table, rss = tune_batching(args, weights, tune, work)
    chosen = choose(table, rss)
    print(f"bench: chosen: {chosen}", file=sys.stderr)
    reported = measure_reported(args, weights, SETTINGS[chosen], report, work)
    ev = statistics.median(reported["evals"])
    print("bench: browser models", file=sys.stderr)
    browser = browser_models(weights, tune, report, work, calibration=4 if args.tiny else 32)
    return {
        "weights": weights.name,
        "arch": "squeezenet1_0_caffe",
        "images": {
            "tune": len(tune),
            "report": len(report),
            "tune_files": "even-indexed",
            "report_files": "odd-indexed",
        },
        "eval": {"images_per_second": round(ev, 2), "runs": reported["evals"], "ms_per_image": round(1000 / ev, 2)},
        "pair_rounds": args.pair_rounds,
        "tune": table,
        "tune_peak_rss_mb": rss,
        "block_rounds": args.block_rounds,
        "chosen": chosen,
        "serve_default": serve_default_setting(),
        "why": why_chosen(table, chosen),
        "report": reported["rows"],
        "swap": {k: v for k, v in reported["swap"].items() if k not in ("side",)},
        "peak_rss_mb": round(reported["peak"], 1),
        "browser_models": browser,
        "torch_in_server": reported["torch"],
        "targets": TARGETS,
        "shared": args.shared,
        "machine": machine(),
    }


if __name__ == "__main__":
    sys.exit(main())
