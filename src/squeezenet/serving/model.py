"""The model being served: loaded and checked aside, then swapped in atomically.

``load_model`` runs the conversion child process (``squeezenet.serving.convert``) on a
weights file, builds an ONNX Runtime session of its graph in this process and checks it on
the child's probe input: a broken or foreign file fails there with the child's one-line
reason, while the current model keeps serving.

``ModelHolder.swap`` then replaces the current model between two requests (the event loop
runs one thing at a time, so no request ever sees half of a swap). A request takes the
model current when it arrives (``acquire``) and keeps it to the end: it is decoded with
that model's preprocessing and runs in that model's batches, and its response names that
model. A swapped-out model stops, and frees its session, when its last request is done.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from squeezenet.errors import WeightsError
from squeezenet.serving.batching import Batcher
from squeezenet.serving.convert import probe_input

CONVERT_NICENESS = 5  # the child yields most of the CPU to the requests being served meanwhile


def ort_session(data: bytes, threads: int):
    """An ONNX Runtime CPU session with ``export.onnx.ort_session``'s options (that module imports
    torch), except two measured on the server's load (docs/serving.md): idle threads sleep
    (spinning took CPU from the decoding threads: 26.3 against 23.0 images/s inferred beside a
    decoding thread), and no memory pattern per input shape (batches of 1 to 8 would each keep one)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_mem_pattern = False  # one plan per batch size seen: +15-25 MB, no faster (measured)
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types
        raise WeightsError(f"ONNX Runtime cannot load the converted model: {str(exc).splitlines()[0]}") from None


@dataclass
class ServedModel:
    """One loaded model: its card, session, files, batcher, and the requests using it."""

    card: dict
    session: object
    folder: Path
    loaded_at: float = field(default_factory=time.time)
    batcher: Batcher | None = None
    users: int = 0
    retired: bool = False

    @property
    def id(self) -> str:
        return self.card["id"]

    @property
    def preprocessing(self) -> dict:
        return self.card["preprocessing"]

    @property
    def browser_path(self) -> Path | None:
        fmt = self.card.get("browser", {}).get("format")
        name = {"w8a32": "browser.onnx", "int8": "browser.onnx", "fp32": "model.onnx"}.get(fmt)
        return self.folder / name if name else None

    def infer(self, batch: np.ndarray, want_cam: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Runs on the inference thread; the maps are only copied out when a request wants them."""
        outputs = self.session.run(None if want_cam else ["logits"], {"input": batch})
        return outputs[0], (outputs[1] if want_cam else None)

    def public_card(self) -> dict:
        return {**self.card, "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))}

    def close(self) -> None:
        self.session = None
        shutil.rmtree(self.folder, ignore_errors=True)


def _child_error(proc: subprocess.CompletedProcess, weights: Path) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    reasons = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    if reasons:
        return reasons[-1]
    return f"{weights}: the conversion process failed (exit status {proc.returncode}: {lines[-1] if lines else ''})"


def load_model(
    weights: Path,
    workdir: Path,
    threads: int,
    browser: str = "w8a32",
    calibration: tuple[Path, ...] = (),
    calibration_limit: int = 32,
    timeout: float = 600.0,
    name: str | None = None,
) -> ServedModel:
    """Convert ``weights`` in a child process and check the result here; blocking (run it in a
    thread from the event loop). Raises ``WeightsError`` naming what is wrong. ``name``: the file
    name the card shows (an upload's own name rather than its temporary one)."""
    folder = Path(tempfile.mkdtemp(prefix="model-", dir=workdir))
    try:
        return _load_into(folder, weights, threads, browser, calibration, calibration_limit, timeout, name)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _load_into(folder, weights, threads, browser, calibration, calibration_limit, timeout, name) -> ServedModel:
    command = [sys.executable, "-m", "squeezenet.serving.convert", str(weights), str(folder)]
    command += ["--browser", browser, "--threads", str(threads), "--calibration-limit", str(calibration_limit)]
    if name:
        command += ["--name", name]
    if calibration:
        command += ["--calibration", *map(str, calibration)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    try:
        proc = subprocess.run(
            ["nice", "-n", str(CONVERT_NICENESS), *command] if shutil.which("nice") else command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise WeightsError(f"{weights}: converting took longer than {timeout:g} s (--convert-timeout)") from None
    if proc.returncode != 0:
        raise WeightsError(_child_error(proc, weights))
    card = json.loads((folder / "card.json").read_text())
    check = json.loads((folder / "check.json").read_text())
    session = ort_session((folder / "model.onnx").read_bytes(), threads)
    pre = card["preprocessing"]
    probe = probe_input(card["in_chans"], card["input_size"], float(pre.get("pixel_range", 1.0)))
    logits = session.run(["logits"], {"input": probe})[0][0]
    expected = np.asarray(check["logits"], dtype=np.float32)
    tolerance = 1e-4 * max(1.0, float(np.abs(expected).max()))
    if logits.shape != expected.shape or float(np.abs(logits - expected).max()) > tolerance:
        raise WeightsError(f"{weights}: the served session does not reproduce the converted model (check failed)")
    return ServedModel(card=card, session=session, folder=folder)


class ModelHolder:
    """The current model, swapped atomically; old models live until their last request ends."""

    def __init__(self, model: ServedModel, make_batcher) -> None:
        self._make_batcher = make_batcher
        self.current = self._start(model)
        self.swap_lock = asyncio.Lock()
        self.swaps = 0
        self._closing: set[asyncio.Task] = set()

    def _start(self, model: ServedModel) -> ServedModel:
        model.batcher = self._make_batcher(model)
        model.batcher.start()
        return model

    def acquire(self) -> ServedModel:
        """The model a new request will use to the end (call ``release`` when it is done)."""
        model = self.current
        model.users += 1
        return model

    def release(self, model: ServedModel) -> None:
        model.users -= 1
        if model.retired and model.users == 0:
            self._retire(model)

    def swap(self, new: ServedModel) -> ServedModel:
        """Make ``new`` current for every later request; -> the previous model."""
        old, self.current = self.current, self._start(new)
        self.swaps += 1
        old.retired = True
        if old.users == 0:
            self._retire(old)
        return old

    def _retire(self, model: ServedModel) -> None:
        task = asyncio.get_running_loop().create_task(self._stop(model))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _stop(self, model: ServedModel) -> None:
        if model.batcher is not None:
            await model.batcher.stop()
        model.close()

    async def close(self) -> None:
        for task in list(self._closing):
            await task
        await self._stop(self.current)
