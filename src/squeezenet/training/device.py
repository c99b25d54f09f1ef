"""Where a run computes and in which precision: the device, bf16/fp16 autocast, threads and seeds."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from squeezenet.errors import TrainingError
from squeezenet.training.allocator import keep_freed_memory
from squeezenet.training.communication import GradientExchange, ddp_options
from squeezenet.training.config import TrainConfig, parse_grad_compression
from squeezenet.training.distributed import DistInfo, log_main


def device_type(cfg: TrainConfig) -> str:
    """The device type the process group is set up for ("cuda" or "cpu"), before a rank has its device."""
    wants_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    return "cuda" if wants_cuda else "cpu"


def resolve_device(cfg: TrainConfig, local_rank: int) -> torch.device:
    name = cfg.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda: no CUDA device is available")
        return torch.device("cuda", local_rank if name == "cuda" else int(name.split(":")[1]))
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX). Without it,
    PyTorch emulates bf16 and autocast runs several times *slower* than fp32 (measured on an
    AVX2-only EPYC: 16 against 106 images/s for the CIFAR-10 model)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_dtype(cfg: TrainConfig, device: torch.device, main: bool = True) -> torch.dtype | None:
    """``auto``: bf16 where the hardware has it (a CUDA GPU that supports it, a CPU with
    AVX512-BF16 or AMX), else fp32."""
    amp = cfg.amp
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
    if amp == "auto":
        amp = "bf16" if native else "none"
    elif amp == "bf16" and not native:
        log_main(f"squeezenet: warning: --amp bf16 on a {device.type} without native bfloat16 is emulated and slower "
                 "than fp32 (--amp auto chooses for you)", main)  # fmt: skip
    if amp == "fp16" and device.type != "cuda":
        raise TrainingError("--amp fp16 needs CUDA; use --amp bf16 on CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def prepare_process(cfg: TrainConfig, device: torch.device) -> None:
    """Threads, determinism and the seeds of this process, before anything draws a random number."""
    if device.type == "cpu":
        keep_freed_memory()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)


def check_grad_compression(cfg: TrainConfig, dist: DistInfo) -> None:
    """``--grad-compression`` shapes what workers send each other: alone, a process sends nothing."""
    spec = parse_grad_compression(cfg.grad_compression)
    if spec.kind != "none" and not dist.enabled:
        raise TrainingError(
            f"--grad-compression {spec}: compresses the gradients data-parallel processes exchange; this run "
            "has one process (start it with torchrun and several processes or nodes)"
        )


def runnable(
    model: nn.Module, cfg: TrainConfig, dist: DistInfo, device: torch.device, warmup_steps: int = 0
) -> tuple[nn.Module, GradientExchange | None]:
    """(what runs forward, the gradient exchange or None): the model, DDP-wrapped under torchrun
    with the ``--grad-compression`` hook (PowerSGD compresses from ``warmup_steps`` on, at the
    earliest from step 2), compiled on request."""
    net: nn.Module = model
    exchange = None
    if dist.enabled:
        spec = parse_grad_compression(cfg.grad_compression)
        device_ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_options(model, spec))
        exchange = GradientExchange(net, spec, warmup_steps)
    return (torch.compile(net) if cfg.compile else net), exchange
