"""The load generator of ``bench_serve.py``: ``squeezenet serve`` in a subprocess, and clients that
send it images at a given concurrency, timing each answer and the CPU both sides spend."""

from __future__ import annotations

import asyncio
import itertools
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-serve-token"


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
