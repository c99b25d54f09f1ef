"""The model being served: loaded and checked aside, then swapped in atomically.

``load_model`` runs the conversion child process (``squeezenet.serving.convert``, started by
``serving.conversion``) on a weights file, builds an ONNX Runtime session of its graph in this
process and checks it on the child's probe input: a broken or foreign file fails there with the
child's one-line reason, while the current model keeps serving. ``Conversions`` keeps the
converted files by the weights' SHA-256: the same weights are converted once.

``ModelHolder.swap`` then replaces the current model between two requests (the event loop
runs one thing at a time, so no request ever sees half of a swap). A request takes the
model current when it arrives (``acquire``) and keeps it to the end: it is decoded with
that model's preprocessing and runs in that model's batches, and its response names that
model. A swapped-out model stops, and frees its session, when its last request is done.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from squeezenet.errors import WeightsError
from squeezenet.serving.batching import Batcher
from squeezenet.serving.config import ServeConfig
from squeezenet.serving.conversion import run_conversion
from squeezenet.serving.convert import probe_input
from squeezenet.serving.memory import trim_malloc


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
        name = {"w8a32": "browser.onnx", "int8": "browser.onnx", "fp32": "model.onnx", "wasm": "model.onnx"}.get(fmt)
        return self.folder / name if name else None

    @property
    def wasm_folder(self) -> Path | None:
        """The WebAssembly build's folder (``--browser-model wasm``), else None."""
        return self.folder / "wasm" if self.card.get("browser", {}).get("format") == "wasm" else None

    def infer(self, batch: np.ndarray, want_cam: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Runs on the inference thread; the maps are only copied out when a request wants them."""
        outputs = self.session.run(None if want_cam else ["logits"], {"input": batch})
        return outputs[0], (outputs[1] if want_cam else None)

    def public_card(self) -> dict:
        return {**self.card, "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))}

    def close(self) -> None:
        """Frees the session; the files stay with ``Conversions``, for a swap back to these weights."""
        self.session = None


def checked_session(folder: Path, weights: Path, threads: int):
    """The session of a converted ``folder``, checked on the child's probe input; blocking."""
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
    return card, session


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (blocking; a weights file is at most --max-weights-mb)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Conversions:
    """Converted models kept on disk by the SHA-256 of their weights, so that the same weights are
    never converted twice (a swap back to an earlier model builds its session only). The
    ``keep`` most recently used stay; the current model is always the most recent."""

    def __init__(self, root: Path, keep: int = 4) -> None:
        self.root, self.keep = Path(root), keep
        self.folders: collections.OrderedDict[str, Path] = collections.OrderedDict()

    def get(self, sha256: str) -> Path | None:
        folder = self.folders.get(sha256)
        if folder is not None and not (folder / "card.json").is_file():  # removed under us (a temp cleaner)
            del self.folders[sha256]
            return None
        if folder is not None:
            self.folders.move_to_end(sha256)
        return folder

    def add(self, sha256: str, folder: Path) -> None:
        self.folders[sha256] = folder
        self.folders.move_to_end(sha256)
        while len(self.folders) > self.keep:
            _, oldest = self.folders.popitem(last=False)
            shutil.rmtree(oldest, ignore_errors=True)

    def clear(self) -> None:
        for folder in self.folders.values():
            shutil.rmtree(folder, ignore_errors=True)
        self.folders.clear()


async def load_model(
    weights: Path, conversions: Conversions, config: ServeConfig, name: str | None = None, sha256: str | None = None
) -> tuple[ServedModel, bool]:
    """Convert ``weights`` in the child process (unless ``conversions`` holds the weights of
    ``sha256`` already) and check the result here; -> (the model, whether it was converted now).
    Raises ``WeightsError`` naming what is wrong; cancelled, the child is killed and nothing kept.
    ``name``: the file name the card shows (an upload's own name rather than its temporary one)."""
    folder = conversions.get(sha256) if sha256 else None
    if folder is not None:
        card, session = await asyncio.to_thread(checked_session, folder, weights, config.threads)
        return ServedModel(card=_renamed(card, name or Path(weights).name), session=session, folder=folder), False
    folder = Path(tempfile.mkdtemp(prefix="model-", dir=conversions.root))
    try:
        await run_conversion(weights, folder, config, name)
        card, session = await asyncio.to_thread(checked_session, folder, weights, config.threads)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    conversions.add(card["sha256"], folder)
    return ServedModel(card=card, session=session, folder=folder), True


def _renamed(card: dict, name: str) -> dict:
    """A kept conversion's card under the name this load gave (its provenance too, where it named the file)."""
    provenance = dict(card.get("provenance") or {})
    if provenance.get("file") == card["file"]:
        provenance["file"] = name
    return {**card, "file": name, "provenance": provenance}


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
        trim_malloc()  # the session's small blocks, freed, go back to the system

    async def close(self) -> None:
        for task in list(self._closing):
            await task
        await self._stop(self.current)
