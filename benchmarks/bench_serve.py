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
  included), run in this benchmark between the server runs (median of three runs); targets: at
  concurrency 32, >= 80 % of its images/s; at concurrency 1, median latency <= 1.5x its time per image.
- Live update: at concurrency 32, the same network as a safetensors file (other bytes, other
  SHA-256) is PUT while requests flow: zero may fail, each response names its model.
- Memory: the server's peak resident set (VmHWM of its process; the conversion child that runs
  PyTorch is a separate, short-lived process). Target: <= 400 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from _common import DATA, add_tiny_option, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-serve-token"
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


# ---------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Server:
    """``squeezenet serve`` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, weights: Path, options: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "squeezenet.cli.main", "serve", "-w", str(weights), "--port", str(self.port)]
        command += ["--browser-model", "none", "--token", TOKEN, *options]
        self.log = log.open("w")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited: {log.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise SystemExit("the server did not start")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def torch_loaded(self) -> bool:
        return "libtorch" in Path(f"/proc/{self.proc.pid}/maps").read_text()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def eval_images_per_second(weights: Path, folder: Path) -> float:
    """``squeezenet eval --json`` on ``folder``: its own images/s (the scoring loop, decoding included)."""
    import json

    command = [sys.executable, "-m", "squeezenet.cli.main", "eval", "--weights", str(weights), "--data", str(folder)]
    proc = subprocess.run([*command, "--json"], capture_output=True, text=True, cwd=ROOT, check=True)
    return float(json.loads(proc.stdout)["images_per_second"])


def image_tree(paths: list[Path], folder: Path) -> Path:
    """``<wnid>/<file>`` links to ``paths``: an ImageNet-validation layout eval reads."""
    for path in paths:
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / path.parent.name / path.name).symlink_to(path)
    return folder


# ---------------------------------------------------------------- load
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def load(url: str, payloads: list[bytes], concurrency: int, requests: int, seconds: float, swap=None) -> dict:
    """``requests`` classifications (the payloads in turn) by ``concurrency`` clients, stopped after
    ``seconds``. With ``swap`` (a coroutine function taking a dict), it starts once a third of the
    requests are answered, and the run goes on until ``requests`` more are answered after it ended."""
    latencies, statuses, models, batch, records = [], Counter(), Counter(), [], []
    deadline = time.monotonic() + seconds
    side: dict = {}
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        for i in range(concurrency):  # warm the connections and the model, untimed
            await client.post(
                "/v1/classify", content=payloads[i % len(payloads)], headers={"Content-Type": "image/jpeg"}
            )
        counter = itertools.count()

        async def worker() -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                i = next(counter)
                if swap is None and i >= requests:
                    return
                start = time.perf_counter()
                try:
                    response = await client.post(
                        "/v1/classify", content=payloads[i % len(payloads)], headers={"Content-Type": "image/jpeg"}
                    )
                    status = response.status_code
                    body = response.json() if status == 200 else {}
                except httpx.HTTPError as exc:
                    status, body = type(exc).__name__, {}
                end = time.perf_counter()
                statuses[status] += 1
                if status == 200:
                    latencies.append(end - start)
                    models[body["model"]["id"]] += 1
                    batch.append(body["timing"]["batch_size"])
                    records.append((start, end, body["model"]["id"]))

        async def swapper() -> None:
            while len(latencies) < requests // 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await swap(side)
            answered = sum(statuses.values())
            while sum(statuses.values()) < answered + requests and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            stop.set()

        client_cpu, started = own_cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)), *([swapper()] if swap else []))
        wall = time.perf_counter() - started
        client_cpu = own_cpu_seconds() - client_cpu
    ok = statuses.get(200, 0)
    return {
        "concurrency": concurrency,
        "requests": sum(statuses.values()),
        "errors": sum(statuses.values()) - ok,
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": round(wall, 3),
        "images_per_second": round(ok / wall, 2) if wall else 0.0,
        "p50_ms": round(1000 * percentile(latencies, 50), 2) if latencies else None,
        "p99_ms": round(1000 * percentile(latencies, 99), 2) if latencies else None,
        "mean_batch": round(statistics.mean(batch), 2) if batch else None,
        "client_cpu_seconds": round(client_cpu, 2),
        "models": dict(models),
        "side": side,
        "records": records,
        "latencies": latencies,
        "batches": batch,
    }


def combine(blocks: list[dict], level: int) -> dict:
    """Blocks of one setting at one concurrency as one row: images/s = answered / time, percentiles
    over every latency."""
    latencies = [x for b in blocks for x in b["latencies"]]
    batches = [x for b in blocks for x in b["batches"]]
    wall = sum(b["seconds"] for b in blocks)
    return {
        "concurrency": level,
        "requests": sum(b["requests"] for b in blocks),
        "errors": sum(b["errors"] for b in blocks),
        "seconds": round(wall, 3),
        "images_per_second": round(len(latencies) / wall, 2) if wall else 0.0,
        "p50_ms": round(1000 * percentile(latencies, 50), 2) if latencies else None,
        "p99_ms": round(1000 * percentile(latencies, 99), 2) if latencies else None,
        "mean_batch": round(statistics.mean(batches), 2) if batches else None,
        "server_cpu_seconds": round(sum(b["server_cpu_seconds"] for b in blocks), 2),
        "client_cpu_seconds": round(sum(b["client_cpu_seconds"] for b in blocks), 2),
        "blocks": len(blocks),
    }


def block(server: Server, payloads: list[bytes], level: int, requests: int, seconds: float) -> dict:
    cpu = cpu_seconds(server.proc.pid)
    result = asyncio.run(load(server.url, payloads, level, requests, seconds))
    result["server_cpu_seconds"] = cpu_seconds(server.proc.pid) - cpu
    return result


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


# ---------------------------------------------------------------- report
def markdown(p: dict) -> str:
    m = p["machine"]
    ev = p["eval"]
    lines = [
        "# Serving: `squeezenet serve` under load",
        "",
        f"Command: `{p['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, onnxruntime {m.get('onnxruntime')}, {m['date']}; "
        "client and server on the same CPU"
        + (" (the machine was shared with other engineers' jobs)" if p.get("shared") else ""),
        "",
        f"Model: `{p['weights']}` ({p['arch']}, 227 px), served by the default engine (ONNX Runtime, "
        "concat-free graph); images: imagenet-samples, the "
        f"{p['images']['tune']} even-indexed files chose the batching default, the {p['images']['report']} "
        "odd-indexed files are reported on. Reference: `squeezenet eval` on the reported files, same model "
        "and engine, decoding included, run before and after each level (runs: "
        f"{', '.join(map(str, ev['runs']))} images/s); each level is compared with the mean of the two runs "
        "around it. The batching settings were measured in interleaved blocks (see the last table).",
        "",
        f"## Reported images, batching {p['chosen']}",
        "",
        f"`squeezenet serve`'s default: batching {p['serve_default']}"
        + (" (the setting chosen below)." if p["serve_default"] == p["chosen"] else " (NOT the one chosen below)."),
        "",
        "| concurrency | requests | errors | images/s | eval around it | vs eval | p50 ms | p99 ms | mean batch "
        "| target | verdict |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in p["report"]:
        target, verdict = "", ""
        if row["concurrency"] == 32:
            target = f"images/s >= {TARGETS['throughput_vs_eval']:.0%} of eval"
            verdict = "met" if row["vs_eval"] >= TARGETS["throughput_vs_eval"] else "MISSED"
        elif row["concurrency"] == 1:
            per_image = 1000 / row["eval_around"]
            target = f"p50 <= {TARGETS['p50_vs_eval_time']}x eval's {per_image:.1f} ms per image"
            verdict = "met" if row["p50_vs_eval_time"] <= TARGETS["p50_vs_eval_time"] else "MISSED"
        lines.append(
            f"| {row['concurrency']} | {row['requests']} | {row['errors']} | {row['images_per_second']} | "
            f"{row['eval_around']} | {row['vs_eval']:.2f}x | {row['p50_ms']} | {row['p99_ms']} | {row['mean_batch']} "
            f"| {target} | {verdict} |"
        )
    s = p["swap"]
    lines += [
        "",
        f"Live update at concurrency 32: `PUT /v1/model` of the same network as safetensors, "
        f"{s['requests']} requests in all; the swap took {s['swap_seconds']} s (conversion in a child process at lower "
        f"priority); failed requests: {s['errors']}; responses by model: "
        + ", ".join(f"`{k}` {v}" for k, v in s["models"].items())
        + f"; every request sent after the swap got the new model: {'yes' if s['after_swap_all_new'] else 'NO'}"
        f" ({s['requests_after_swap']} requests); {s['images_per_second']} images/s over the run.",
        "",
        f"Server peak memory (VmHWM, after the swap, which holds two sessions for a moment): "
        f"{p['peak_rss_mb']:.0f} MB (target <= {TARGETS['peak_rss_mb']} MB: "
        f"{'met' if p['peak_rss_mb'] <= TARGETS['peak_rss_mb'] else 'MISSED'}); PyTorch loaded in the server: "
        f"{'yes' if p['torch_in_server'] else 'no'}.",
        "",
        "## Browser models (run by ONNX Runtime here, on the reported images)",
        "",
        f"int8 calibrated on {p['browser_models']['calibration_images']} of the choosing images; agreement: "
        "the share of images whose top-1 class is the served fp32 graph's.",
        "",
        "| file | bytes | gzip bytes (on the wire) | top-1 agreement with fp32 | top-1 |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {row['bytes']:,} | {row['gzip_bytes']:,} | {row['agreement_with_fp32']:.1%}"
            + (
                f" (QDQ run in float: {row['agreement_with_fp32_qdq_in_float']:.1%})"
                if "agreement_with_fp32_qdq_in_float" in row
                else ""
            )
            + f" | {row['top1']:.1%} |"
            for name, row in p["browser_models"]["models"].items()
        ),
        "",
        f"## Batching on against off (the images that chose; {p['block_rounds']} interleaved blocks per cell)",
        "",
        "| setting | concurrency | images/s | p50 ms | p99 ms | mean batch | errors | server CPU s | client CPU s "
        "| server peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in p["tune"].items():
        for row in rows:
            lines.append(
                f"| {name} | {row['concurrency']} | {row['images_per_second']} | {row['p50_ms']} | {row['p99_ms']} | "
                f"{row['mean_batch']} | {row['errors']} | {row['server_cpu_seconds']} | {row['client_cpu_seconds']} | "
                f"{p['tune_peak_rss_mb'][name] if row is rows[-1] else ''} |"
            )
    lines += ["", f"Chosen: batching {p['chosen']}; {p['why']}"]
    return "\n".join(lines)


# ---------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="longest time one level may run")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the images at concurrency 8 and 32")
    parser.add_argument("--block-rounds", type=int, default=4, help="interleaved blocks per setting and level")
    parser.add_argument("--shared", action="store_true", help="say in the results that other jobs shared the CPU")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    add_tiny_option(parser)
    args = parser.parse_args()
    weights = DATA / "deepcompression" / "compressed_SqueezeNet.net"
    paths = sorted((DATA / "imagenet-samples").glob("*/*.JPEG"))
    tune, report = paths[0::2], paths[1::2]
    out = args.out
    if args.tiny:
        tune, report, args.seconds, args.rounds, out = tune[:8], report[:8], 20.0, 1, args.tiny
        args.block_rounds = 1
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        payload = run(args, weights, tune, report, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = "python benchmarks/bench_serve.py" + (" --shared" if args.shared else "")
    payload["command"] = command if not args.tiny else "python benchmarks/bench_serve.py --tiny OUT"
    write_results("serve", payload, markdown(payload), folder=out)
    return 0


def run(args, weights: Path, tune: list[Path], report: list[Path], work: Path) -> dict:
    tune_payloads = [p.read_bytes() for p in tune]
    report_payloads = [p.read_bytes() for p in report]
    report_tree = image_tree(report, work / "report")

    def requests_for(images: int):
        return lambda level: images if level == 1 else images * args.rounds

    table, rss = {}, {}
    settings = dict(list(SETTINGS.items())[:2]) if args.tiny else SETTINGS  # a smoke test: two are enough
    print(f"bench: batching settings on the {len(tune)} choosing images, interleaved", file=sys.stderr)
    servers = {}
    try:
        for name, options in settings.items():  # all started; an idle one takes no CPU (its threads sleep)
            servers[name] = Server(weights, options, work / f"server-{len(servers)}.log")
        table = interleaved(servers, tune_payloads, LEVELS, requests_for(len(tune)), args.block_rounds, args.seconds)
        rss = {name: round(server.peak_rss_mb(), 1) for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    chosen = choose(table, rss)
    print(f"bench: chosen: {chosen}", file=sys.stderr)

    alt = work / "release.safetensors"
    subprocess.run(
        [sys.executable, "-m", "squeezenet.cli.main", "convert", str(weights), "-o", str(alt)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    evals = [eval_images_per_second(weights, report_tree)]
    print(f"bench: eval {evals[-1]} images/s", file=sys.stderr)
    server = Server(weights, SETTINGS[chosen], work / "server.log")
    rows = []
    try:
        print(f"bench: reported images ({len(report)}), batching {chosen}, eval before and after each", file=sys.stderr)
        for level in LEVELS:
            blocks = [block(server, report_payloads, level, requests_for(len(report))(level), args.seconds)]
            rows.append(combine(blocks, level))
            say("", rows[-1])
            if not args.tiny:  # a smoke test compares every level with the one eval run before them
                evals.append(eval_images_per_second(weights, report_tree))
                print(f"bench: eval {evals[-1]} images/s", file=sys.stderr)
        for i, row in enumerate(rows):
            around = (evals[min(i, len(evals) - 2)] + evals[min(i + 1, len(evals) - 1)]) / 2
            row.update(
                eval_around=round(around, 2),
                vs_eval=round(row["images_per_second"] / around, 3),
                p50_vs_eval_time=round(row["p50_ms"] / (1000 / around), 3),
            )
        print("bench: live update at concurrency 32", file=sys.stderr)
        swap = swap_run(server, report_payloads, alt, len(report), args.seconds * 5)
        peak, torch_loaded = server.peak_rss_mb(), server.torch_loaded()
    finally:
        server.stop()
    ev = statistics.median(evals)
    print("bench: browser models", file=sys.stderr)
    browser = browser_models(weights, tune, report, work, calibration=4 if args.tiny else 32)
    best_off = table["off (max batch 1)"][-1]["images_per_second"]
    best = table[chosen][-1]["images_per_second"]
    why = (
        f"at concurrency 32 it served {best} images/s against {best_off} with batching off "
        f"({best / best_off:.2f}x), and at concurrency 1 a median of {table[chosen][0]['p50_ms']} ms "
        f"(off: {table['off (max batch 1)'][0]['p50_ms']} ms). Rule: the highest throughput at concurrency 32; "
        "within 3 % of it, the lowest median latency at concurrency 1; only settings whose peak memory "
        f"leaves room for a swap (<= {0.75 * TARGETS['peak_rss_mb']:.0f} MB)."
    )
    from squeezenet.serving.config import ServeConfig

    default = ServeConfig(weights=weights)
    default_name = next(
        (
            n
            for n, o in SETTINGS.items()
            if o[1] == str(default.max_batch) and (len(o) < 4 or float(o[3]) == default.max_wait_ms)
        ),
        None,
    )
    return {
        "weights": weights.name,
        "arch": "squeezenet1_0_caffe",
        "images": {
            "tune": len(tune),
            "report": len(report),
            "tune_files": "even-indexed",
            "report_files": "odd-indexed",
        },
        "eval": {"images_per_second": round(ev, 2), "runs": evals, "ms_per_image": round(1000 / ev, 2)},
        "tune": table,
        "tune_peak_rss_mb": rss,
        "block_rounds": args.block_rounds,
        "chosen": chosen,
        "serve_default": default_name,
        "why": why,
        "report": rows,
        "swap": {k: v for k, v in swap.items() if k not in ("side",)},
        "peak_rss_mb": round(peak, 1),
        "browser_models": browser,
        "torch_in_server": torch_loaded,
        "targets": TARGETS,
        "shared": args.shared,
        "machine": machine(),
    }


if __name__ == "__main__":
    sys.exit(main())
