"""The step-time model of ``bench_distributed.py``: what the link adds to a worker's own step.

Calibrated on the unthrottled two-node run only, so that its predictions at 1 Gbit/s and
100 Mbit/s are checked against measurements it did not see:

- the link: an all-reduce of S bytes between two nodes takes ``a + S / B`` (least squares over
  all-reduces of 4 KB to 8 MB at that rate); for N workers a ring all-reduce takes
  ``2 (N-1) alpha + 2 (N-1) / N * S / B`` with ``alpha = a / 2``;
- when each all-reduce can leave: the unthrottled run's departures (seconds after the backward
  pass started, and their sizes), counted where the hook hands them over. DDP's buckets leave as
  the backward pass readies them and the link serves them in turn; PowerSGD's three all-reduces
  form a chain (each waits for the one before, then for the compression work between them,
  which the unthrottled run measures as the gap);
- the step: the worker's own step (measured alone) + what the link still has to do once the
  backward pass is over + the overhead the unthrottled run shows beyond both (hooks, memory
  shared by the two workers).
"""

from __future__ import annotations

NOMINAL_RATES = {"1 Gbit/s": 1e9, "10 Gbit/s": 10e9, "100 Gbit/s": 100e9}
WORKERS = (2, 4, 8, 16, 32, 64, 128)
CALIBRATION = "unthrottled"


def link_fit(rows: list[dict]) -> tuple[float, float]:
    """(a seconds, B bytes/s) of ``t = a + S / B`` by least squares over the measured all-reduces."""
    n = len(rows)
    xs, ys = [r["bytes"] for r in rows], [r["s"] for r in rows]
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return max(my - slope * mx, 0.0), 1.0 / max(slope, 1e-15)


def link_time(size: float, a: float, bandwidth: float, workers: int = 2) -> float:
    """A ring all-reduce of ``size`` bytes among ``workers`` (2: exactly the fitted line)."""
    return (workers - 1) * a + 2 * (workers - 1) / workers * size / bandwidth


def _is_chain(compression: str) -> bool:
    return compression.startswith("powersgd")


def after_backward(departures: list, compression: str, transfer, gaps: list[float] | None = None) -> float:
    """Seconds the link still works once the backward pass is over (``transfer(size)`` each)."""
    if not departures:
        return 0.0
    if _is_chain(compression):  # after the single bucket is ready: all-reduce, compress, all-reduce...
        busy = 0.0
        for i, (_, size) in enumerate(departures):
            busy += transfer(size) + ((gaps or [])[i] if i < len(gaps or []) else 0.0)
        return busy
    finish = 0.0
    for depart, size in departures:  # buckets leave as they are ready; the link takes them in turn
        finish = max(depart, finish) + transfer(size)
    return max(0.0, finish - departures[-1][0])


def chain_gaps(departures: list, transfer) -> list[float]:
    """The compression work between PowerSGD's all-reduces, as the unthrottled run shows it."""
    return [max(0.0, departures[i + 1][0] - departures[i][0] - transfer(departures[i][1]))
            for i in range(len(departures) - 1)]  # fmt: skip


def calibrate(run: dict, alone_s: float, a: float, bandwidth: float) -> dict:
    """What the unthrottled run fixes: the departures, the chain's gaps and the overhead."""
    departures = [tuple(d) for d in run["departures"]]
    transfer = lambda size: link_time(size, a, bandwidth)  # noqa: E731
    gaps = chain_gaps(departures, transfer) if _is_chain(run["compression"]) else []
    link = after_backward(departures, run["compression"], transfer, gaps)
    return {"departures": departures, "gaps": gaps, "overhead_s": run["step_s"] - alone_s - link}


def predicted_step(cal: dict, compression: str, alone_s: float, a: float, bandwidth: float, workers: int = 2):
    transfer = lambda size: link_time(size, a, bandwidth, workers)  # noqa: E731
    return alone_s + cal["overhead_s"] + after_backward(cal["departures"], compression, transfer, cal["gaps"])


def predict_runs(result: dict) -> dict:
    """For every model and compression: the calibration, the predicted and measured step at each
    emulated rate, and the prediction's error."""
    base = result["rates"][CALIBRATION]
    a_u, b_u = link_fit(base["link"])
    out = {"links": {label: dict(zip(("a_s", "bytes_per_s"), link_fit(r["link"]), strict=True))
                     for label, r in result["rates"].items()}, "runs": {}}  # fmt: skip
    for key, run in base["runs"].items():
        alone_s = result["alone"]["alone"][run["model"]]["step_s"]
        cal = calibrate(run, alone_s, a_u, b_u)
        rows = {}
        for label, rate in result["rates"].items():
            measured = rate["runs"][key]["step_s"]
            a, bandwidth = out["links"][label]["a_s"], out["links"][label]["bytes_per_s"]
            predicted = predicted_step(cal, run["compression"], alone_s, a, bandwidth)
            rows[label] = {"predicted_s": predicted, "measured_s": measured, "error": predicted / measured - 1}
        out["runs"][key] = {"overhead_s": cal["overhead_s"], "gaps_s": cal["gaps"], "rates": rows}
    return out


def scaling_table(result: dict) -> dict:
    """Predicted scaling efficiency (a worker's images/s among N, over its images/s alone) for 2 to
    128 workers at 1, 10 and 100 Gbit/s: the unthrottled calibration, the nominal rate, and the
    latency term of the unthrottled link."""
    base = result["rates"][CALIBRATION]
    a_u, b_u = link_fit(base["link"])
    table = {}
    for key, run in base["runs"].items():
        alone_s = result["alone"]["alone"][run["model"]]["step_s"]
        cal = calibrate(run, alone_s, a_u, b_u)
        table[key] = {label: {str(n): alone_s / predicted_step(cal, run["compression"], alone_s, a_u, rate / 8, n)
                              for n in WORKERS} for label, rate in NOMINAL_RATES.items()}  # fmt: skip
    return table
