"""Metrics: smoothed values for the progress bar, per-epoch records as JSONL + CSV (+ TensorBoard).

``SmoothedValue`` and ``MetricLogger`` follow torchvision's reference scripts; ``RunLog``
writes one JSON line per epoch to ``metrics.jsonl`` and rewrites ``metrics.csv`` from it,
so a resumed run never holds an epoch twice; the test scores, measured once after the last
epoch, join that epoch's record.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import torch

from squeezenet.atomic import atomic_write_text
from squeezenet.errors import TrainingError
from squeezenet.training.distributed import all_reduce_sum
from squeezenet.training.reports import csv_text


class SmoothedValue:
    """A window of recent values plus the global (count-weighted) average."""

    def __init__(self, window: int = 20) -> None:
        self.deque: deque[float] = deque(maxlen=window)
        self.total = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.deque.append(value)
        self.total += value * n
        self.count += n

    @property
    def avg(self) -> float:
        return sum(self.deque) / len(self.deque) if self.deque else 0.0

    @property
    def global_avg(self) -> float:
        return self.total / self.count if self.count else 0.0

    def synchronize(self, device: torch.device | str = "cpu") -> None:
        t = all_reduce_sum(torch.tensor([self.count, self.total], dtype=torch.float64, device=device))
        self.count, self.total = int(t[0].item()), float(t[1].item())


class MetricLogger:
    def __init__(self) -> None:
        self.meters: dict[str, SmoothedValue] = {}

    def update(self, n: int = 1, **values: float) -> None:
        for k, v in values.items():
            self.meters.setdefault(k, SmoothedValue()).update(float(v), n)

    def __getitem__(self, key: str) -> SmoothedValue:
        return self.meters.setdefault(key, SmoothedValue())

    def synchronize(self, device: torch.device | str = "cpu") -> None:
        for meter in self.meters.values():
            meter.synchronize(device)


class RunLog:
    """metrics.jsonl / metrics.csv (and TensorBoard scalars) of one run; rank 0 only writes."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.csv = self.run_dir / "metrics.csv"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise TrainingError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def records(self) -> list[dict]:
        if not self.jsonl.is_file():
            return []
        out = []
        for line in self.jsonl.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash
        return out

    def truncate_from(self, epoch: int) -> None:
        """Drop records of epochs >= ``epoch`` (a resumed run writes them again)."""
        if not self.enabled or not self.jsonl.is_file():
            return
        self._write([r for r in self.records() if r.get("epoch", 0) < epoch])

    def log_epoch(self, record: dict) -> None:
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write([*self.records(), record])
        self._scalars(record, record["epoch"])

    def amend_last(self, fields: dict) -> None:
        """Add ``fields`` to the latest epoch's record: figures measured after it (the test scores)."""
        if not self.enabled:
            return
        records = self.records()
        if not records:
            return
        records[-1].update(fields)
        self._write(records)
        self._scalars(fields, records[-1]["epoch"])

    def _scalars(self, values: dict, epoch: int) -> None:
        if self.tb is None:
            return
        for k, v in values.items():
            if isinstance(v, int | float) and k != "epoch":
                self.tb.add_scalar(k, v, epoch)
        self.tb.flush()

    def _write(self, records: list[dict]) -> None:
        """Both files rewritten whole, atomically: a crash leaves the previous epoch's files."""
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in records), TrainingError)
        columns: list[str] = []
        for r in records:
            columns += [k for k in r if k not in columns and not isinstance(r[k], dict | list)]
        rows = [[r.get(k, "") for k in columns] for r in records]
        atomic_write_text(self.csv, csv_text([columns, *rows]), TrainingError)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
