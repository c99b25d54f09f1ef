"""SqueezeNet inference with NumPy and Pillow only: no PyTorch, no squeezenet package import.

This file is self-contained on purpose (copy it anywhere next to a weights file):

    python numpy_runtime.py weights.safetensors image.jpg [more images...]

prints the top-5 classes of each image. It reads the project's safetensors files (the
architecture, class names and preprocessing travel in the header) and ``.sqz`` files
through ``read_weights``, which dispatches on the file's first bytes. Convolutions are
im2col + one BLAS matrix product each; pooling rounds up (Caffe's ceil mode).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path


def _prefer_avx512_blas() -> None:
    """Ask numpy's OpenBLAS for its AVX-512 kernels on AMD CPUs that have AVX-512.

    OpenBLAS picks kernels by CPU model, and it takes AMD Zen 4/5 for an AVX2-only
    "Haswell"; its SkylakeX kernels made this runtime 1.2-1.3x faster at batch 32 on a Zen 5
    EPYC (at batch 1 the gain was within that machine's noise). Only possible before numpy
    is first imported, and never over a user's own OPENBLAS_CORETYPE.
    """
    if "numpy" in sys.modules or "OPENBLAS_CORETYPE" in os.environ:
        return
    try:
        with open("/proc/cpuinfo") as f:
            head = f.read(8192)
    except OSError:
        return
    flags = set(next((line for line in head.splitlines() if line.startswith("flags")), "").split())
    if "AuthenticAMD" in head and {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"} <= flags:
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"


_prefer_avx512_blas()

import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

SQZ_MAGIC = b"SQZ\x00"
_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


class RuntimeFailure(Exception):
    """A weights file or image this runtime cannot use (the message names it)."""


# ---------------------------------------------------------------- weights files
def read_safetensors(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """-> (metadata, tensors): 8-byte little-endian header length, JSON header, raw data."""
    raw = Path(path).read_bytes()
    if len(raw) < 8:
        raise RuntimeFailure(f"{path}: truncated safetensors file")
    n = int.from_bytes(raw[:8], "little")
    if not 2 <= n <= len(raw) - 8:
        raise RuntimeFailure(f"{path}: not a safetensors file (bad header length)")
    try:
        header = json.loads(raw[8 : 8 + n])
    except ValueError as exc:
        raise RuntimeFailure(f"{path}: damaged safetensors header ({exc})") from None
    meta, data, tensors = header.pop("__metadata__", None) or {}, memoryview(raw)[8 + n :], {}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        if entry["dtype"] == "BF16":  # bfloat16 = the high half of a float32
            half = np.frombuffer(data[start:end], dtype="<u2").astype(np.uint32) << 16
            array = half.view(np.float32)
        elif entry["dtype"] in _DTYPES:
            array = np.frombuffer(data[start:end], dtype=np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<"))
        else:
            raise RuntimeFailure(f"{path}: tensor {name} has unsupported dtype {entry['dtype']}")
        if end > len(data) or array.size != int(np.prod(entry["shape"])):
            raise RuntimeFailure(f"{path}: tensor {name} is truncated")
        tensors[name] = array.reshape(entry["shape"]).astype(np.float32)
    return meta, tensors


def read_sqz(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """``.sqz`` files through the pure-numpy codec ``compression/sqz_codec.py`` (its
    ``decode_sqz(bytes) -> (metadata, arrays)``), loaded by file path so that nothing runs
    ``squeezenet/__init__`` (which imports torch). Copy sqz_codec.py next to this file to
    use it outside the project."""
    here = Path(__file__).resolve().parent
    source = next(
        (p for p in (here / "sqz_codec.py", here.parent / "compression" / "sqz_codec.py") if p.exists()), None
    )
    if source is None:
        raise RuntimeFailure(f"{path}: .sqz needs sqz_codec.py (the torch-free decoder) next to this file")
    spec = importlib.util.spec_from_file_location("_squeezenet_sqz_codec", source)
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)  # registered first: its dataclasses look themselves up
    try:
        meta, arrays = module.decode_sqz(Path(path).read_bytes())
    except Exception as exc:  # the codec's SqzError and friends
        raise RuntimeFailure(f"{path}: {exc}") from None
    return meta, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}


def read_weights(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Dispatch on magic bytes: ``SQZ\\x00`` -> read_sqz, anything else -> read_safetensors."""
    with open(path, "rb") as f:
        head = f.read(4)
    return read_sqz(path) if head == SQZ_MAGIC else read_safetensors(path)


# ---------------------------------------------------------------- layers (NHWC float32)
def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1) -> np.ndarray:
    """NHWC windows as rows (N*Ho*Wo, kh*kw*C): a strided view of every window, copied once."""
    n, h, w, c = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    view = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return view.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * c)


def conv2d(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int = 1, pad: int = 0, out: np.ndarray | None = None
) -> np.ndarray:
    """x (N, H, W, C), w (kh, kw, C, O): im2col rows times w, one BLAS call.

    ``out`` (rows, O), possibly a column slice of a wider array, receives the product
    directly: a Fire module's two expand convolutions write side by side, so the
    concatenation costs nothing. The result is returned as (N, Ho, Wo, O) when ``out`` is None.
    """
    kh, kw, c, o = w.shape
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, wd, _ = x.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    cols = x.reshape(n * ho * wo, c) if kh == kw == 1 and stride == 1 else im2col(x, kh, kw, stride)
    result = np.matmul(cols, w.reshape(kh * kw * c, o), out=out)
    if b is not None:
        result += b
    return result if out is not None else result.reshape(n, ho, wo, o)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, out=x)


def max_pool_ceil(x: np.ndarray, k: int = 3, s: int = 2) -> np.ndarray:
    """Max pool rounding the output size up, as Caffe and ``nn.MaxPool2d(ceil_mode=True)``."""
    h, w = x.shape[1:3]
    ho, wo = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    if (ho - 1) * s >= h:  # PyTorch: the last window must start inside the input
        ho -= 1
    if (wo - 1) * s >= w:
        wo -= 1
    need_h, need_w = (ho - 1) * s + k, (wo - 1) * s + k
    if need_h > h or need_w > w:
        x = np.pad(x, ((0, 0), (0, max(0, need_h - h)), (0, max(0, need_w - w)), (0, 0)), constant_values=-np.inf)
    out = None
    for i in range(k):
        for j in range(k):
            window = x[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s]
            out = window.copy() if out is None else np.maximum(out, window, out=out)
    return out


# ---------------------------------------------------------------- the network
class SqueezeNetNumpy:
    """A SqueezeNet rebuilt from the spec in the weights' metadata; ``__call__`` -> logits."""

    def __init__(self, path: str | Path) -> None:
        self.meta, self.t = read_weights(path)
        self.w: dict[str, np.ndarray] = {}
        try:
            self.spec = json.loads(self.meta["spec"])
            self.pre = json.loads(self.meta.get("preprocessing") or "{}")
            self.classes = json.loads(self.meta.get("classes") or "[]")
        except (KeyError, ValueError) as exc:
            raise RuntimeFailure(
                f"{path}: no squeezenet metadata ({exc}); convert it with 'squeezenet convert'"
            ) from None
        self.arch = self.meta.get("arch", "?")
        self.layers: list[tuple[str, int, str]] = []  # (kind, features index, shortcut)
        shortcuts = self.spec.get("shortcuts") or [""] * len(self.spec["fires"])
        index = 3  # features.0-2: conv1, ReLU, pool (or nothing)
        for i, shortcut in enumerate(shortcuts):
            self.layers.append(("fire", index, shortcut))
            index += 1
            if i in self.spec["pool_after"]:
                self.layers.append(("pool", index, ""))
                index += 1

    def _weight(self, name: str) -> np.ndarray:
        if name not in self.w:  # (O, C, kh, kw) -> (kh, kw, C, O), once
            self.w[name] = np.ascontiguousarray(self.t[name + ".weight"].transpose(2, 3, 1, 0))
        return self.w[name]

    def _conv(self, name: str, x: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
        return conv2d(x, self._weight(name), self.t[name + ".bias"], stride, pad)

    def _expand(self, p: str, s: np.ndarray) -> np.ndarray:
        """ReLU(concat(expand1x1(s), expand3x3(s))), both products written into one array."""
        n, h, w, _ = s.shape
        w1, w3 = self._weight(p + "expand1x1"), self._weight(p + "expand3x3")
        e1 = w1.shape[3]
        out = np.empty((n * h * w, e1 + w3.shape[3]), dtype=np.float32)
        conv2d(s, w1, self.t[p + "expand1x1.bias"], out=out[:, :e1])
        conv2d(s, w3, self.t[p + "expand3x3.bias"], pad=1, out=out[:, e1:])
        return relu(out).reshape(n, h, w, -1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) preprocessed images -> (N, classes) logits; works in NHWC inside."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(0, 2, 3, 1))
        spec = self.spec
        x = relu(self._conv("features.0", x, stride=spec["stem_stride"], pad=int(spec.get("stem_padding", 0))))
        if spec.get("stem_pool", True):
            x = max_pool_ceil(x)
        for kind, index, shortcut in self.layers:
            if kind == "pool":
                x = max_pool_ceil(x)
                continue
            p = f"features.{index}."
            s = relu(self._conv(p + "squeeze", x))
            out = self._expand(p, s)
            if shortcut == "identity":
                out += x
            elif shortcut == "conv":
                out += self._conv(p + "shortcut", x)
            x = out
        x = relu(self._conv("classifier.1", x, pad=int(self.spec.get("classifier_padding", 0))))
        return x.mean(axis=(1, 2))

    # ------------------------------------------------------------ preprocessing
    def preprocess(self, image: Image.Image | str | Path) -> np.ndarray:
        """The numbers of ``squeezenet.data.preprocessing.build_transform`` -> (C, H, W) float32."""
        p = self.pre
        order = p.get("channel_order", "RGB")
        if not isinstance(image, Image.Image):
            try:
                with Image.open(image) as img:
                    img.load()
                    image = ImageOps.exif_transpose(img)
            except OSError as exc:
                raise RuntimeFailure(f"{image}: cannot read image ({exc})") from None
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image.convert("RGBA"))
        image = image.convert("L" if order == "L" else "RGB")
        resize, crop = p.get("resize", 256), int(p.get("crop", 224))
        w, h = image.size
        if isinstance(resize, list | tuple):
            new_h, new_w = int(resize[0]), int(resize[1])
        elif w <= h:  # shorter side to `resize`, as torchvision computes it
            new_w, new_h = int(resize), int(int(resize) * h / w)
        else:
            new_h, new_w = int(resize), int(int(resize) * w / h)
        methods = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
        image = image.resize((new_w, new_h), methods.get(p.get("interpolation", "bilinear"), Image.BILINEAR))
        top, left = round((new_h - crop) / 2.0), round((new_w - crop) / 2.0)
        image = image.crop((left, top, left + crop, top + crop))
        x = np.asarray(image, dtype=np.float32)
        x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
        if float(p.get("pixel_range", 1.0)) == 1.0:
            x = x / np.float32(255.0)
        if order == "BGR":
            x = x[::-1]
        mean = np.asarray(p.get("mean", (0.485, 0.456, 0.406)), np.float32)[:, None, None]
        std = np.asarray(p.get("std", (0.229, 0.224, 0.225)), np.float32)[:, None, None]
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)

    def classify(self, images: list, topk: int = 5) -> list[list[tuple[str, int, float]]]:
        logits = self(np.stack([self.preprocess(im) for im in images]))
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
        result = []
        for row in probs:
            best = np.argsort(-row)[:topk]
            result.append([(self.class_name(int(i)), int(i), float(row[i])) for i in best])
        return result

    def class_name(self, i: int) -> str:
        return self.classes[i] if i < len(self.classes) else f"class {i}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("usage: python numpy_runtime.py WEIGHTS IMAGE [IMAGE...]", file=sys.stderr)
        return 2
    try:
        net = SqueezeNetNumpy(argv[0])
        for path in argv[1:]:
            print(path)
            for rank, (name, index, prob) in enumerate(net.classify([path])[0], 1):
                print(f"  {rank}. {prob:7.2%}  {name} ({index})")
    except (RuntimeFailure, OSError) as exc:
        print(f"numpy_runtime: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
