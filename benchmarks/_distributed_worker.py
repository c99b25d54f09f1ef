"""One process of ``bench_distributed.py``: time training steps of several models, alone or under DDP.

Run alone (``python _distributed_worker.py OUT.json``) it times each model's step without DDP:
the compute a worker does (forward, backward, optimizer step), and when in the backward pass
each parameter's gradient is ready. Run by torchrun on two nodes it times the same step under
DDP with each ``--grad-compression``, counts the bytes the hook hands to the all-reduce (and
when), and measures the link itself (all-reduces of several sizes). The step is the one
``squeezenet train`` runs: channels_last, bf16 autocast where the CPU has it, SGD with momentum,
the library's ``ddp_options`` and ``GradientExchange``. Rank 0 writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torchvision
from torch import nn

from squeezenet.models import build_architecture
from squeezenet.training.communication import GradientExchange, ddp_options
from squeezenet.training.config import parse_grad_compression
from squeezenet.training.device import cpu_has_native_bf16

MODELS = ("squeezenet1_0", "squeezenet1_1", "alexnet", "resnet18")
LINK_SIZES = (1 << 12, 1 << 16, 1 << 20, 1 << 23)  # bytes all-reduced to measure the link


def build(name: str) -> nn.Module:
    """Ours for SqueezeNet (the published builders), torchvision's for the others; 1000 classes."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=1000) if name in ("alexnet", "resnet18") else None
    return (model or build_architecture(name, num_classes=1000)).to(memory_format=torch.channels_last)


class Stepper:
    """One training step of ``net`` on a fixed batch (the figure is time, not accuracy)."""

    def __init__(self, net: nn.Module, batch: int, size: int, amp: bool) -> None:
        g = torch.Generator().manual_seed(1 + (dist.get_rank() if dist.is_initialized() else 0))
        self.images = torch.randn(batch, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)
        self.targets = torch.randint(0, 1000, (batch,), generator=g)
        self.net, self.amp = net, amp
        self.optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        self.backward_started = 0.0

    def __call__(self) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.amp):
            logits = self.net(self.images)
        loss = nn.functional.cross_entropy(logits.float(), self.targets)
        self.backward_started = time.perf_counter()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def timed(step: Stepper, warmup: int, steps: int, between=None) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if dist.is_initialized():
            dist.barrier()  # every worker starts the step together: its time is the slowest's
        times.append(step())
        if between is not None:
            between()
    return times


def ready_times(model: nn.Module, step: Stepper) -> list[tuple[float, int]]:
    """(seconds after the backward pass started, bytes) for each parameter's gradient, in the
    order they became ready: when DDP could send them."""
    events: list[tuple[float, int]] = []
    hooks = [p.register_post_accumulate_grad_hook(lambda p: events.append((time.perf_counter(), p.numel() * 4)))
             for p in model.parameters()]  # fmt: skip
    step()
    for hook in hooks:
        hook.remove()
    return [(round(t - step.backward_started, 5), size) for t, size in events]


def alone(args) -> dict:
    """Each model's step in one process: compute time, forward/backward split, gradient readiness."""
    out = {}
    for name in args.models:
        model = build(name)
        step = Stepper(model, args.batch, args.size, args.amp)
        times = timed(step, args.warmup, args.steps)
        out[name] = {
            "params": sum(p.numel() for p in model.parameters()),
            "step_s": statistics.median(times),
            "steps_s": times,
            "ready": ready_times(model, step),
        }
        print(f"alone {name}: {out[name]['step_s']:.3f} s/step", file=sys.stderr, flush=True)
    return out


def link(group, repeats: int = 5) -> list[dict]:
    """Median time of an all-reduce of each size (float32) on ``group``: the link's latency and
    throughput as gloo sees them."""
    rows = []
    for size in LINK_SIZES:
        x = torch.ones(size // 4)
        times = []
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(x, group=group)
            times.append(time.perf_counter() - start)
        rows.append({"bytes": size, "s": statistics.median(times)})
    return rows


def distributed(args) -> dict:
    """Each model under DDP with each compression: step times, bytes counted, when they left."""
    out = {"world_size": dist.get_world_size(), "link": link(dist.new_group()), "runs": {}}
    for name in args.models:
        for text in args.compressions:
            spec = parse_grad_compression(text)
            model = build(name)
            ddp = nn.parallel.DistributedDataParallel(model, **ddp_options(model, spec))
            exchange = GradientExchange(ddp, spec, warmup_steps=2)
            step = Stepper(ddp, args.batch, args.size, args.amp)
            sent: list[int] = []
            departures: list[list[tuple[float, int]]] = []

            def after_step(exchange=exchange, sent=sent, departures=departures, step=step) -> None:
                sent.append(exchange.take_bytes()[0])
                events, exchange.counter.events = exchange.counter.events or [], []
                departures.append([(round(t - step.backward_started, 5), size) for t, size in events])

            timed(step, max(args.warmup, 3), 0)  # PowerSGD compresses from step 2; buckets rebuilt
            exchange.take_bytes()
            exchange.counter.events = []
            times = timed(step, 0, args.steps, after_step)
            out["runs"][f"{name}/{spec}"] = {
                "model": name, "compression": str(spec), "step_s": statistics.median(times), "steps_s": times,
                "sent_bytes_per_step": statistics.median(sent), "departures": departures[len(departures) // 2],
            }  # fmt: skip
            exchange.close()
            print(f"rank {dist.get_rank()} {name} {spec}: {statistics.median(times):.3f} s/step, "
                  f"{statistics.median(sent) / 1e6:.3f} MB/step", file=sys.stderr, flush=True)  # fmt: skip
            del ddp, exchange
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--compressions", nargs="+", default=["none", "bf16", "powersgd:2"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)  # one core per worker: two workers on this two-core machine
    args.amp = cpu_has_native_bf16()
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
        result = distributed(args)
        if dist.get_rank() == 0:
            args.out.write_text(json.dumps({"amp_bf16": args.amp, **result}, indent=1) + "\n")
        dist.destroy_process_group()
    else:
        args.out.write_text(json.dumps({"amp_bf16": args.amp, "alone": alone(args)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
