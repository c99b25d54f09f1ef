"""What data-parallel workers send each other, and how to send less: PyTorch's DDP communication hooks.

``--grad-compression`` picks one of torch's own hooks (``torch.distributed.algorithms.ddp_comm_hooks``):

- ``none``: the plain average (``allreduce_hook``, which is what DDP does without a hook);
- ``fp16`` / ``bf16``: each gradient bucket cast to 16 bits before the all-reduce, back after;
- ``powersgd[:RANK]``: PowerSGD (Vogels et al., 2019): each weight matrix's gradient sent as two
  rank-RANK factors, the rest of the error kept by each worker and added to its next gradient
  (error feedback), factors warm-started from the last step; plain all-reduce during the first
  ``start`` steps (its warm-up: early gradients are the most sensitive).

Every hook runs on a process group of its own (the same ranks as the world), so what it sends can
be counted where it is sent: the payload of every collective issued on that group is added up
(``TrafficCounter``), not estimated from the model's size. The count is the payload handed to the
all-reduce (the compressed buckets); a ring all-reduce then puts about 2(N-1)/N of it on each
worker's link (``wire_bytes``).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from typing import ClassVar

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

from squeezenet.training.config import GradCompression

_POWERSGD_SLOTS = tuple(s for s in powerSGD_hook.PowerSGDState.__slots__ if s != "process_group")


class TrafficCounter:
    """Bytes handed to collectives on one process group, since the last ``take``.

    torch's hooks call ``torch.distributed.all_reduce`` (a module attribute, looked up at each
    call); while any counter exists that function is wrapped once per process, and the wrapper
    adds the payload of calls on a counted group before passing them on unchanged. Callbacks of
    PowerSGD's second all-reduce run on other threads: the sum is locked."""

    _by_group: ClassVar[dict[int, TrafficCounter]] = {}
    _original = None

    def __init__(self, group) -> None:
        self.group, self._bytes, self._calls, self._lock = group, 0, 0, threading.Lock()
        self.events: list[tuple[float, int]] | None = None  # (perf_counter, bytes) per call, when a list
        if TrafficCounter._original is None:
            TrafficCounter._original = dist.all_reduce
            dist.all_reduce = TrafficCounter._counting_all_reduce
        TrafficCounter._by_group[id(group)] = self

    @staticmethod
    def _counting_all_reduce(tensor, *args, **kwargs):
        group = kwargs.get("group", args[1] if len(args) > 1 else None)
        counter = TrafficCounter._by_group.get(id(group)) if group is not None else None
        if counter is not None:
            size = tensor.numel() * tensor.element_size()
            with counter._lock:
                counter._bytes += size
                counter._calls += 1
                if counter.events is not None:  # when each bucket left: how much of the backward pass it overlaps
                    counter.events.append((time.perf_counter(), size))
        return TrafficCounter._original(tensor, *args, **kwargs)

    def take(self) -> tuple[int, int]:
        """(bytes, collectives) since the last call."""
        with self._lock:
            counted, self._bytes, self._calls = (self._bytes, self._calls), 0, 0
        return counted

    def close(self) -> None:
        TrafficCounter._by_group.pop(id(self.group), None)


BUCKETS_PER_STEP = 16  # gradient buckets DDP fills and sends during one backward pass (ddp_options)


def ddp_options(model: torch.nn.Module, spec: GradCompression) -> dict:
    """DistributedDataParallel's arguments for ``spec``.

    Buffers are not synchronised at each forward (BatchNorm statistics stay each worker's, as
    before; ``forward_sync_buffers`` replaces the deprecated ``broadcast_buffers``). PowerSGD runs
    on one bucket: its second and third all-reduces are issued from completion callbacks, whose
    order differs between workers when several buckets are in flight, and gloo needs every
    worker to issue collectives in one order (measured here with two: "Received data size
    doesn't match expected size", then an abort). The other hooks send buckets of a
    ``BUCKETS_PER_STEP``-th of the model, none under 1 MiB (four for squeezenet1_1), instead of
    DDP's 25 MiB, which holds all of a SqueezeNet's 4.9 MB: the gradients of the last layers then
    leave while the backward pass goes on through the first ones. Two emulated nodes at 100
    Mbit/s, squeezenet1_1 (benchmarks/bench_distributed.py's worker): 0.884 -> 0.745 s a step
    uncompressed, 0.734 -> 0.648 s with bf16 (0.5 MiB: 0.753, 0.672)."""
    options: dict = {"forward_sync_buffers": False}
    model_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    if spec.kind == "powersgd":
        options["bucket_cap_mb"] = int(model_mib) + 1
    else:
        options["bucket_cap_mb"] = max(1.0, model_mib / BUCKETS_PER_STEP)
    return options


def wire_bytes(payload: int, world_size: int) -> int:
    """What a ring all-reduce of ``payload`` bytes sends from each worker: 2(N-1)/N of it."""
    return round(payload * 2 * (world_size - 1) / world_size) if world_size > 1 else 0


class GradientExchange:
    """The hook registered on a DDP model, its state (PowerSGD's) and its traffic counter."""

    def __init__(self, ddp: torch.nn.parallel.DistributedDataParallel, spec: GradCompression, warmup_steps: int):
        self.spec = spec
        self.device = next(ddp.module.parameters()).device
        self.group = dist.new_group(ranks=list(range(dist.get_world_size())))
        self.counter = TrafficCounter(self.group)
        self.powersgd = None
        if spec.kind == "powersgd":
            self.powersgd = powerSGD_hook.PowerSGDState(
                process_group=self.group,
                matrix_approximation_rank=spec.rank,
                start_powerSGD_iter=max(2, warmup_steps),
                use_error_feedback=True,
                warm_start=True,
                random_seed=0,
            )
            self.layouts: dict[int, list[tuple[str, tuple[int, ...]]]] = {}
            ddp.register_comm_hook(self.powersgd, _layout_keeping(ddp.module, self.powersgd, self.layouts))
        else:
            hooks = {
                "none": default_hooks.allreduce_hook,
                "fp16": default_hooks.fp16_compress_hook,
                "bf16": default_hooks.bf16_compress_hook,
            }
            ddp.register_comm_hook(self.group, hooks[spec.kind])

    def take_bytes(self) -> tuple[int, int]:
        return self.counter.take()

    def state_dict(self) -> dict | None:
        """This worker's hook state (PowerSGD: its step, error feedback, warm-start factors and the
        random state of its projections) as tensors and plain values, loadable with
        ``torch.load(weights_only=True)``; each worker's error differs, so a checkpoint keeps one
        per rank."""
        if self.powersgd is None:
            return None
        state = {slot: _to_cpu(getattr(self.powersgd, slot)) for slot in _POWERSGD_SLOTS if slot != "rng"}
        _, keys, pos, has_gauss, gauss = self.powersgd.rng.get_state()
        state["rng"] = {"keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                        "has_gauss": int(has_gauss), "gauss": float(gauss)}  # fmt: skip
        state["layouts"] = {
            index: [[name, list(shape)] for name, shape in layout] for index, layout in self.layouts.items()
        }
        return state

    def load_state_dict(self, state: dict | None) -> None:
        if self.powersgd is None or not state:
            return
        for slot in _POWERSGD_SLOTS:
            if slot != "rng":
                setattr(self.powersgd, slot, _to_device(state[slot], self.device))
        rng = state["rng"]
        keys = rng["keys"].numpy().astype("uint32")
        self.powersgd.rng.set_state(("MT19937", keys, rng["pos"], rng["has_gauss"], rng["gauss"]))
        self.layouts.clear()
        for index, layout in state.get("layouts", {}).items():
            self.layouts[int(index)] = [(name, tuple(shape)) for name, shape in layout]

    def close(self) -> None:
        self.counter.close()


def _layout_keeping(module: torch.nn.Module, state, layouts: dict):
    """``powerSGD_hook`` with its per-bucket memory laid out as the bucket is.

    DDP lays a bucket out in parameter order at first, then, after the first iteration, in the
    order the gradients became ready. A run's PowerSGD state (error feedback, warm-start
    factors) is therefore kept in the second layout, while a resumed run's first iteration
    sees the first: before each call, the state is rearranged, tensor by tensor, to the
    layout the bucket has now (``layouts``: the layout each bucket's state is in, saved with
    it). Without it a resumed run drifts from the uninterrupted one
    (measured: 3e-6 after 18 steps); with it the two are bit-identical on two workers."""
    names = {id(p): name for name, p in module.named_parameters()}

    def hook(_state, bucket):
        index = bucket.index()
        layout = [(names[id(p)], tuple(p.shape)) for p in bucket.parameters()]
        if index in layouts and layouts[index] != layout and index in state.error_dict:
            _relayout(state, index, layouts[index], layout)
        layouts[index] = layout
        return powerSGD_hook.powerSGD_hook(state, bucket)

    return hook


def _relayout(state, index: int, old: list, new: list) -> None:
    """Rearrange bucket ``index``'s error (one slice per tensor, in bucket order) and warm-start
    factors (P and Q: one slice per compressed tensor, grouped by matrix shape in order of
    first appearance, as ``powerSGD_hook`` lays them out) from layout ``old`` to ``new``."""
    error_sizes = {name: math.prod(shape) for name, shape in old}
    state.error_dict[index] = _reorder(state.error_dict[index], error_sizes, [name for name, _ in new])
    for memory, side in ((state.p_memory_dict, 0), (state.q_memory_dict, 1)):
        if index in memory:
            memory[index] = _reorder(
                memory[index], _factor_sizes(old, state, side), list(_factor_sizes(new, state, side))
            )


def _factor_sizes(layout: list, state, side: int) -> dict[str, int]:
    """{tensor name: length of its P (side 0) or Q (side 1)} for the compressed tensors, in the
    order powerSGD_hook places them (grouped by matrix shape)."""
    groups: dict[tuple[int, int], list[tuple[str, int]]] = {}
    for name, shape in layout:
        n, m = shape[0], math.prod(shape[1:])
        rank = min(n, m, state.matrix_approximation_rank)
        if powerSGD_hook._should_compress(n, m, rank, state.min_compression_rate)[0]:
            groups.setdefault((n, m), []).append((name, (n, m)[side] * rank))
    return {name: size for group in groups.values() for name, size in group}


def _reorder(flat: torch.Tensor, sizes: dict[str, int], order: list[str]) -> torch.Tensor:
    """``flat`` holds one slice per name, of ``sizes``' lengths in ``sizes``' order: the same
    slices in ``order``."""
    starts = dict(zip(sizes, itertools.accumulate([0, *sizes.values()]), strict=False))
    return torch.cat([flat[starts[name] : starts[name] + sizes[name]] for name in order])


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


def _to_device(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value
