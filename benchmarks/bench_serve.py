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
- Hostile section (issue #38; ``hostile`` in the results): on a server with the default options,
  600 idle and 20 header-stalling connections from 127.0.0.2 and .3 (opened again as the server
  closes them) while one client on 127.0.0.1 sends 200 requests (>= 99 % answered 200, the rest a
  JSON 503; every hostile connection closed within --header-timeout + 1 s), then the data-free
  ``.sqz`` swapped in on that idle server; on a fresh one, 16 simultaneous largest images (RGB, then
  RGBA PNGs at --max-pixels: peak RSS < 400 MB), the same ``.sqz`` swapped in under 8 clients
  (within 3x the idle swap), sent again (answered at once, unchanged), then 19 swaps to weights
  never seen (resident memory after the last within 10 % of after the first).
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
from collections import Counter
from pathlib import Path

import httpx

from _common import DATA, add_tiny_option, machine, write_results
from _serve_load import (
    ROOT,
    TOKEN,
    HostileClients,
    Server,
    block,
    combine,
    hostile_summary,
    largest_images,
    load,
    metric_values,
    put_weights,
    rss_mb,
    safetensors_variant,
    simultaneous,
)
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
HOSTILE_TARGETS = {"good_ok_share": 0.99, "peak_rss_mb": 400, "loaded_vs_idle": 3.0, "rss_last_vs_first": 1.10}


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


def swap_run(
    server: Server, payloads: list[bytes], new_weights: Path, requests: int, seconds: float, concurrency: int = 32
) -> dict:
    """``concurrency`` clients with a PUT of ``new_weights`` once a third of ``requests`` are
    answered, and ``requests`` more after the swap."""

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
    result = asyncio.run(load(server.url, payloads, concurrency, requests, seconds, swap=put))
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


# ---------------------------------------------------------------- hostile clients, memory, swaps
def hostile_plan(args, weights: Path, work: Path) -> dict:
    """What the hostile section sends: the full run as issue #38 asks (defaults; 600 idle and 20
    stalling connections; the data-free .sqz; 20 swaps), the tiny run a few of each (a 2 s header
    timeout; safetensors variants, quicker to make than a .sqz)."""
    alt = work / "release.safetensors"  # made by measure_reported

    def variants(count: int) -> list[Path]:
        return [safetensors_variant(alt, work / f"variant-{i}.safetensors", str(i)) for i in range(count)]

    if args.tiny:
        made = variants(3)
        return {"options": ["--header-timeout", "2", "--max-pixels", "1000000"], "header_timeout": 2.0,
                "max_pixels": 1_000_000, "idle": 100, "stalling": 5, "good": 40, "simultaneous": 4,
                "swap_files": (made[0], made[1]), "variants": made[2:]}  # fmt: skip
    sqz = work / "release.sqz"
    subprocess.run(
        [sys.executable, "-m", "squeezenet.cli.main", "compress", "--weights", str(weights), "-o", str(sqz)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    from squeezenet.serving.config import ServeConfig

    default = ServeConfig(weights=weights)
    return {"options": [], "header_timeout": default.header_timeout, "max_pixels": default.max_pixels,
            "idle": 600, "stalling": 20, "good": 200, "simultaneous": 16,
            "swap_files": (sqz, sqz), "variants": variants(19)}  # fmt: skip


def hostile_connections(server: Server, payloads: list[bytes], plan: dict) -> dict:
    """``plan['idle']`` idle and ``plan['stalling']`` stalling connections from 127.0.0.2 and .3,
    held (and opened again when closed) while one client on 127.0.0.1 sends ``plan['good']``
    requests, and at least a header timeout more; -> the good client's statuses, what the server
    did with each hostile connection, and what /metrics counted."""
    before, statuses = metric_values(server.url), Counter()
    started = time.monotonic()
    with HostileClients(server.port, plan["idle"], plan["stalling"]) as hostile:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for i in range(plan["good"]):
                response = client.post(
                    "/v1/classify", content=payloads[i % len(payloads)], headers={"Content-Type": "image/jpeg"}
                )
                kind = "" if response.status_code == 200 else response.json()["error"]["kind"]
                statuses[f"{response.status_code} {kind}".strip()] += 1
        good_seconds = time.monotonic() - started
        time.sleep(max(0.0, plan["header_timeout"] + 3 - good_seconds))  # every accepted one has timed out
    after = metric_values(server.url)
    counted = {
        f"{name.removeprefix('squeezenet_')}{{{','.join(f'{k}={v}' for k, v in labels)}}}": after[(name, labels)]
        - before.get((name, labels), 0.0)
        for name, labels in after
        if name in ("squeezenet_connections_closed_total", "squeezenet_errors_total")
    }
    summary = hostile_summary(hostile, plan["header_timeout"], slack=1.0)
    ok = statuses.get("200", 0)
    return {
        "idle": plan["idle"], "stalling": plan["stalling"], "good_requests": plan["good"],
        "good_statuses": dict(statuses), "good_ok_share": round(ok / plan["good"], 4),
        "good_seconds": round(good_seconds, 2), "header_timeout_s": plan["header_timeout"],
        "hostile": summary, "metrics_counted": {k: v for k, v in counted.items() if v},
        "all_closed_within_bound": not summary["not_closed_in_time"],
    }  # fmt: skip


def hostile_memory(server: Server, plan: dict) -> dict:
    """``plan['simultaneous']`` of each of the largest images --max-pixels allows, all at once, on a
    fresh server; -> the answers, its peak (VmHWM, start-up included) and resident memory after."""
    images = largest_images(plan["max_pixels"])
    rows = {}
    for name, data in images.items():
        answers = asyncio.run(simultaneous(server.url, [data] * plan["simultaneous"]))
        rows[name] = {"bytes": len(data), "answers": dict(Counter(f"{s} {k}".strip() for s, k in answers))}
    time.sleep(1)
    return {"images": rows, "count": plan["simultaneous"], "peak_rss_mb": round(server.peak_rss_mb(), 1),
            "rss_after_mb": round(rss_mb(server.proc.pid), 1)}  # fmt: skip


def swaps_and_memory(server: Server, payloads: list[bytes], plan: dict, idle: dict) -> dict:
    """The swap file under 8 clients (``idle``: the same swap on another, idle server), sent again
    (answered at once: the same weights), then swaps to weights never seen, resident memory after
    each (after 4 requests on the new model)."""
    _, loaded_file = plan["swap_files"]
    loaded = swap_run(server, payloads, loaded_file, 4 * len(payloads), 600.0, concurrency=8)
    resend = put_weights(server.url, loaded_file)
    rss = [_rss_after_requests(server, payloads)]
    for variant in plan["variants"]:
        put_weights(server.url, variant)
        rss.append(_rss_after_requests(server, payloads))
    return {
        "file": loaded_file.name, "file_bytes": loaded_file.stat().st_size,
        "idle_seconds": idle["seconds"], "idle_status": idle["status"],
        "loaded_seconds": loaded["swap_seconds"], "loaded_clients": 8, "loaded_errors": loaded["errors"],
        "loaded_requests": loaded["requests"], "loaded_vs_idle": round(loaded["swap_seconds"] / idle["seconds"], 2),
        "resend": resend, "swaps": len(rss), "rss_mb_after_each": rss,
        "rss_last_vs_first": round(rss[-1] / rss[0], 3),
    }  # fmt: skip


def _rss_after_requests(server: Server, payloads: list[bytes]) -> float:
    for data in payloads[:4]:
        httpx.post(server.url + "/v1/classify", content=data, headers={"Content-Type": "image/jpeg"}, timeout=120)
    time.sleep(0.5)
    return round(rss_mb(server.proc.pid), 1)


def hostile_section(args, weights: Path, report: list[Path], work: Path) -> dict:
    """Issue #38's checks: idle and stalling connections against a good client; the largest images at
    once; a swap under 8 clients against the same swap on an idle server; the same weights again;
    resident memory over many swaps. The swap is timed on two servers, neither of which had
    converted the file (a server converts the same weights only once)."""
    plan, payloads = hostile_plan(args, weights, work), [p.read_bytes() for p in report]
    first = Server(weights, plan["options"], work / "hostile-1.log")
    try:
        print("bench: hostile clients", file=sys.stderr)
        connections = hostile_connections(first, payloads, plan)
        idle = put_weights(first.url, plan["swap_files"][0])
    finally:
        first.stop()
    second = Server(weights, plan["options"], work / "hostile-2.log")
    try:
        print("bench: the largest images at once; swaps under load", file=sys.stderr)
        memory = hostile_memory(second, plan)
        swaps = swaps_and_memory(second, payloads, plan, idle)
    finally:
        second.stop()
    return {"connections": connections, "memory": memory, "swaps": swaps, "targets": HOSTILE_TARGETS}


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
    hostile = hostile_section(args, weights, report, work)
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
        "hostile": hostile,
        "torch_in_server": reported["torch"],
        "targets": TARGETS,
        "shared": args.shared,
        "machine": machine(),
    }


if __name__ == "__main__":
    sys.exit(main())
