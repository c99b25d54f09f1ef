"""Write ``src/squeezenet/weights/imagenet1k.tsv``: the 1000 ImageNet-1k classes in head order.

    python scripts/make_imagenet_classes.py PATH/TO/imagenet_synsets.txt

The wnids are public WordNet identifiers; their sorted order is the class order of every
ImageNet head (Caffe, torchvision). The list used was timm's ``timm/data/_info/imagenet_synsets.txt``
(``pip download timm --no-deps``, unzip); the names are torchvision's, the ones its
``SqueezeNet*_Weights`` metadata uses. The test suite checks the file against both and
against ``$SQUEEZENET_DATA/imagenet_classes.tsv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "squeezenet" / "weights" / "imagenet1k.tsv"


def main(synsets: str) -> int:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    wnids = [line.strip() for line in Path(synsets).read_text().splitlines() if line.strip()]
    if len(wnids) != 1000 or wnids != sorted(wnids):
        raise SystemExit(f"{synsets}: expected the 1000 sorted ImageNet-1k wnids")
    pairs = zip(wnids, _IMAGENET_CATEGORIES, strict=True)
    rows = ["index\twnid\tname"] + [f"{i}\t{wnid}\t{name}" for i, (wnid, name) in enumerate(pairs)]
    OUT.write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
