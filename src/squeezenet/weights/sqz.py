"""``.sqz`` files -> ``LoadedWeights``: the torch-side reader around the pure-numpy codec.

Reading lives with every other weights format (the loader needs it); writing a ``.sqz`` is
``squeezenet.compression``'s job, which encodes with the same codec (``sqz_codec.encode_sqz``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from squeezenet.errors import SqueezeNetError, WeightsError
from squeezenet.models import from_spec
from squeezenet.weights.info import LoadedWeights, WeightsInfo
from squeezenet.weights.sqz_codec import SqzError, decode_sqz_codes


def _expected_shapes(meta: dict) -> dict[str, tuple[int, ...]]:
    try:
        info = WeightsInfo.from_metadata(meta)
        with torch.device("meta"):
            model = from_spec(info.spec, num_classes=info.num_classes, in_chans=info.in_chans)
    except SqueezeNetError as exc:
        raise SqzError(f"metadata describes no buildable model ({exc})") from None
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise SqzError(f"malformed metadata ({type(exc).__name__}: {exc})") from None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def decode_sqz_bytes(data: bytes, what: str = ".sqz data") -> LoadedWeights:
    try:
        meta, arrays, codes = decode_sqz_codes(data, expected_shapes=_expected_shapes)
        info = WeightsInfo.from_metadata(meta)
    except SqzError as exc:
        raise WeightsError(f"{what}: {exc}") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{what}: malformed .sqz metadata ({exc})") from None
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    return LoadedWeights(info, state, codes)


def read_sqz(path: str | Path) -> LoadedWeights:
    """Load a ``.sqz`` file; any defect is a one-line ``WeightsError``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_sqz_bytes(data, str(path))
