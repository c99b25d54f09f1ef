"""Dynamic batching: requests that arrive together run as one batch, off the event loop.

Each model being served has one ``Batcher``. Requests append their preprocessed image to a
queue; one task takes up to ``max_batch`` images from it, waiting at most ``max_wait_ms``
after the oldest one arrived for more to come, and runs them on the inference thread (a
single thread: ONNX Runtime already spreads one batch over every core). While a batch runs,
the next one gathers, so under load batches grow by themselves even with no wait at all.

The default is ``max_batch`` 1, batching off: on a CPU a batch runs barely faster per image than
single images, and ``benchmarks/bench_serve.py`` measured no gain in served images/s (within
4 % either way on a quiet machine, 20-30 % fewer while other jobs shared the cores) for 45 % more
memory at batches of 8. On a GPU, where batches pay, raise ``--max-batch``.

The queue is a deque with an event rather than an ``asyncio.Queue`` read under a timeout: a
timed-out wait can then never lose an item.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from squeezenet.serving.problems import RequestProblem

# (batch (N, C, H, W), want maps) -> (logits (N, classes), maps (N, classes, h, w) or None)
InferFn = Callable[[np.ndarray, bool], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class Result:
    """One image's outputs and the batch it ran in."""

    logits: np.ndarray
    cam: np.ndarray | None
    batch_size: int
    queued_seconds: float
    inference_seconds: float


@dataclass
class _Item:
    array: np.ndarray
    want_cam: bool
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class Batcher:
    """Gathers single images into batches for ``infer``; ``submit`` awaits one image's ``Result``."""

    def __init__(
        self,
        infer: InferFn,
        executor: Executor,
        max_batch: int = 8,
        max_wait_ms: float = 0.0,
        max_queue: int = 256,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.infer, self.executor = infer, executor
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self.on_batch = on_batch
        self._pending: collections.deque[_Item] = collections.deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop once the images already queued and the batch running have run (their callers get
        their results); used when a swapped-out model has no request left in flight."""
        self._stopping = True
        self._arrived.set()
        if self._task is not None:
            await self._task
            self._task = None

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def submit(self, array: np.ndarray, want_cam: bool = False) -> Result:
        if self._stopping:
            raise RuntimeError("this model was swapped out and has stopped")  # never reached: see ModelHolder
        if len(self._pending) >= self.max_queue:
            raise RequestProblem(
                503, "overloaded", f"{len(self._pending)} images are already waiting for the model (--max-queue)"
            )
        item = _Item(array, want_cam, asyncio.get_running_loop().create_future())
        self._pending.append(item)
        self._arrived.set()
        return await item.future

    async def _loop(self) -> None:
        while True:
            while not self._pending:
                if self._stopping:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            await self._gather()
            count = min(self.max_batch, len(self._pending))
            batch = [self._pending.popleft() for _ in range(count)]
            await self._run(batch)

    async def _gather(self) -> None:
        """Wait, up to ``max_wait`` after the oldest image arrived, until a full batch is queued."""
        if self.max_wait <= 0 or self.max_batch == 1:
            return
        deadline = self._pending[0].arrived + self.max_wait
        while len(self._pending) < self.max_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    async def _run(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        x = batch[0].array[None] if len(batch) == 1 else np.stack([item.array for item in batch])
        want_cam = any(item.want_cam for item in batch)
        try:
            logits, cams = await asyncio.get_running_loop().run_in_executor(self.executor, self.infer, x, want_cam)
        except Exception as exc:  # the engine failed: every caller of this batch gets the error
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        seconds = time.perf_counter() - started
        if self.on_batch is not None:
            self.on_batch(len(batch), seconds)
        for i, item in enumerate(batch):
            if item.future.done():  # the client went away
                continue
            cam = cams[i] if cams is not None and item.want_cam else None
            item.future.set_result(Result(logits[i], cam, len(batch), started - item.arrived, seconds))
