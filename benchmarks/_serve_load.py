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


# ---------------------------------------------------------------- hostile clients
class HostileClients:
    """Connections a client holds without sending a request, while the ``with`` lasts: ``idle``
    ones that send nothing (bound to ``idle_host``) and ``stalling`` ones that send half a request
    head and stop (bound to ``stall_host``): other loopback addresses than a good client's
    127.0.0.1 (every 127.x address is this machine on Linux), so that the server's per-client limit
    falls on them. A connection the server closes is opened again ``reopen_s`` later, so the
    pressure lasts. Each connection's life is recorded: ``(kind, opened, closed, first bytes the
    server sent)`` (monotonic seconds; closed None if still open at the end)."""

    STALL = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"

    def __init__(self, port: int, idle: int, stalling: int, reopen_s: float = 1.0,
                 idle_host: str = "127.0.0.2", stall_host: str = "127.0.0.3") -> None:  # fmt: skip
        self.port, self.reopen_s = port, reopen_s
        self.hosts = {"idle": idle_host, "stalling": stall_host}
        self.counts = {"idle": idle, "stalling": stalling}
        self.records: list[tuple[str, float, float | None, bytes]] = []
        self.ended = None
        self._selector = None
        self._stop = None
        self._thread = None

    def __enter__(self) -> HostileClients:
        import selectors
        import threading

        self._selector, self._stop = selectors.DefaultSelector(), threading.Event()
        for kind, count in self.counts.items():
            for _ in range(count):
                self._open(kind)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.ended = time.monotonic()
        for key in list(self._selector.get_map().values()):
            kind, opened, received = key.data
            self.records.append((kind, opened, None, bytes(received)))
            key.fileobj.close()
        self._selector.close()

    def _open(self, kind: str) -> None:
        import selectors

        sock = socket.socket()
        sock.bind((self.hosts[kind], 0))
        sock.connect(("127.0.0.1", self.port))
        if kind == "stalling":
            sock.sendall(self.STALL)
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, (kind, time.monotonic(), bytearray()))

    def _run(self) -> None:
        due: list[tuple[float, str]] = []  # (when, kind) of connections to open again
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                self._read(key, due)
            now = time.monotonic()
            for entry in [d for d in due if d[0] <= now]:
                due.remove(entry)
                self._open(entry[1])

    def _read(self, key, due: list) -> None:
        kind, opened, received = key.data
        try:
            data = key.fileobj.recv(65536)
        except OSError:  # reset
            data = b""
        if data:
            received += data[: max(0, 4096 - len(received))]
            return
        self._selector.unregister(key.fileobj)
        key.fileobj.close()
        closed = time.monotonic()
        self.records.append((kind, opened, closed, bytes(received)))
        due.append((closed + self.reopen_s, kind))


def hostile_summary(clients: HostileClients, header_timeout: float, slack: float) -> dict:
    """What the server did with the hostile connections: answered at once with a JSON 503 (refused),
    closed silently (idle) or with a 408 (stalled), and whether each was closed within
    ``header_timeout`` (+ ``slack`` s for a loaded event loop) of its opening (one still open at
    the end counts if it was opened less than that before)."""
    refused, timed_out, late, other, still_open = 0, Counter(), [], 0, 0
    for kind, opened, closed, received in clients.records:
        life = (closed if closed is not None else clients.ended) - opened
        if _problem_kind(received, 503) == "overloaded":
            refused += 1
        elif received and _problem_kind(received, 408) != "header_timeout":
            other += 1
        elif life > header_timeout + slack:
            late.append((kind, round(life, 2)))
        elif closed is None:
            still_open += 1
        else:
            timed_out[kind] += 1
    lives = [c - o for k, o, c, r in clients.records if c is not None and _problem_kind(r, 503) is None]
    return {
        "connections": len(clients.records),
        "refused_503": refused,
        "closed_by_header_timeout": dict(timed_out),
        "open_at_the_end": still_open,
        "not_closed_in_time": late,
        "other_answers": other,
        "longest_life_s": round(max(lives), 2) if lives else None,
    }


def _problem_kind(received: bytes, status: int) -> str | None:
    """The problem kind of a raw response of ``status`` (None for anything else)."""
    import json

    head, _, body = received.partition(b"\r\n\r\n")
    if not head.startswith(f"HTTP/1.1 {status} ".encode()):
        return None
    try:
        return json.loads(body)["error"]["kind"]
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- hostile section helpers
def metric_values(url: str) -> dict:
    """The server's /metrics as {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=30).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def largest_images(max_pixels: int) -> dict[str, bytes]:
    """PNGs of the largest square a server's --max-pixels allows: RGB (the issue's case: a file of
    about 100 KB that decodes to 92 MB) and RGBA (the costliest common kind to decode)."""
    import io
    import math

    from PIL import Image, ImageDraw

    side = math.isqrt(max_pixels)
    image = Image.new("RGB", (side, side), (30, 120, 200))
    draw = ImageDraw.Draw(image)
    for i in range(0, side, max(1, side // 16)):
        draw.ellipse((i, i, i + side // 5, i + side // 8), fill=(i % 255, 80, 160))
    files = {}
    for mode in ("RGB", "RGBA"):
        buffer = io.BytesIO()
        image.convert(mode).save(buffer, "PNG")
        files[f"{side}x{side} {mode} PNG"] = buffer.getvalue()
    return files


async def simultaneous(url: str, payloads: list[bytes], content_type: str = "image/png") -> list[tuple[int, str]]:
    """Every payload sent at once; -> (status, problem kind or '') of each answer."""
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=len(payloads))) as c:
        responses = await asyncio.gather(
            *(c.post("/v1/classify", content=p, headers={"Content-Type": content_type}) for p in payloads)
        )
    return [(r.status_code, "" if r.status_code == 200 else r.json()["error"]["kind"]) for r in responses]


def put_weights(url: str, path: Path, name: str | None = None) -> dict:
    """PUT ``path`` as the model; -> status, result, model id and seconds."""
    started = time.perf_counter()
    response = httpx.put(
        url + "/v1/model",
        content=path.read_bytes(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"},
        params={"name": name or path.name},
        timeout=900,
    )
    body = response.json()
    return {
        "status": response.status_code,
        "result": body.get("result"),
        "model": body.get("model", {}).get("id"),
        "seconds": round(time.perf_counter() - started, 2),
    }


def safetensors_variant(source: Path, dest: Path, tag: str) -> Path:
    """``source`` (a safetensors file) with one more metadata entry: the same network in other bytes,
    another SHA-256, so a server converts it afresh."""
    import json
    import struct

    data = source.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"] = {**header.get("__metadata__", {}), "variant": tag}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    dest.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + size :])
    return dest


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
