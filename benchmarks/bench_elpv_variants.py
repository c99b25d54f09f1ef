"""ELPV 4 levels with two head variants of SqueezeNet v1.0, to see whether they lift accuracy.

Both keep every pretrained weight (they change no parameter shape) but are not part of the
published family, so they live here, patched into the model for one run, not in the zoo:

- ``avgmax``: the global pooling after conv10 takes the mean of average and max pooling
  (timm's ``avgmax``): a crack is a local feature that averaging over 13x13 positions dilutes.
- ``late``: the max-pool after fire8 is dropped, so fire9 and conv10 see 27x27 positions
  instead of 13x13: the paper's third strategy ("downsample late") pushed one step further,
  for thin cracks.

Everything else is ``bench_train_elpv.py`` (same recipe, split and scoring; its options pass
through). Writes benchmarks/results/elpv_variant_<variant>.{json,md}, never train_elpv.

    python benchmarks/bench_elpv_variants.py late --epochs 60 --output runs/elpv_late
"""

from __future__ import annotations

import sys

import torch
from torch import nn

import _common
import bench_train_elpv
from squeezenet.models import squeezenet as squeezenet_module

VARIANTS = ("avgmax", "late")


class AvgMaxPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x.amax((2, 3), keepdim=True) + x.mean((2, 3), keepdim=True))


def patch_model(variant: str) -> None:
    """Every SqueezeNet built in this process (for training and for scoring) gets ``variant``."""
    build = squeezenet_module.SqueezeNet.__init__

    def patched(self, *args, **kwargs):
        build(self, *args, **kwargs)
        if variant == "avgmax":
            self.classifier[3] = AvgMaxPool()
        else:
            last_pool = max(i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d))
            self.features[last_pool] = nn.Identity()  # an Identity keeps the weights' layer indices

    squeezenet_module.SqueezeNet.__init__ = patched


def markdown(payload: dict) -> str:
    """bench_train_elpv's page under the variant's title, from the recorded JSON alone."""
    variant = payload["variant"]
    title = f"# ELPV, 4 levels, SqueezeNet v1.0 with the head variant '{variant}'"
    body = bench_train_elpv.markdown(payload).split("\n", 1)[1]
    return title + "\n" + body.replace("bench_train_elpv.py", f"bench_elpv_variants.py {variant}")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in VARIANTS:
        raise SystemExit(f"usage: bench_elpv_variants.py {{{','.join(VARIANTS)}}} [bench_train_elpv options]")
    variant = sys.argv.pop(1)
    if {"--update", "--score-only"} & set(sys.argv):
        raise SystemExit("bench_elpv_variants.py: --update and --score-only belong to bench_train_elpv.py's own record")
    patch_model(variant)

    def write_results(name: str, payload: dict, _markdown: str, folder=None) -> None:
        payload["variant"] = variant
        _common.write_results(name, payload, markdown(payload), folder)

    bench_train_elpv.RESULT_NAME = f"elpv_variant_{variant}"
    bench_train_elpv.write_results = write_results
    bench_train_elpv.main()


if __name__ == "__main__":
    main()
