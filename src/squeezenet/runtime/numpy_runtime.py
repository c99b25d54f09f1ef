"""SqueezeNet inference with NumPy and Pillow only: no PyTorch, no squeezenet package import.

Copy this file anywhere together with its siblings: ``pixels.py`` (the project's
preprocessing, ``squeezenet/data/pixels.py``) and, for ``.sqz`` weights, the codec
``sqz_codec`` (from ``squeezenet/weights/``). Both are loaded by file path, from beside this
file first, else from their place in the source tree:

    python numpy_runtime.py weights.safetensors image.jpg [more images...]

prints the top-5 classes of each image. It reads the project's safetensors files (the
architecture, class names and preprocessing travel in the header) and ``.sqz`` files
through ``read_weights``, which dispatches on the file's first bytes. Convolutions are
im2col + one BLAS matrix product each, biases included (every activation carries a channel
of ones); pooling rounds up (Caffe's ceil mode) and takes the ReLU after it where it can.
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
    "Haswell"; on a 2-core Zen 5 EPYC its SkylakeX kernels cut this runtime's matrix
    products at batch 1 from 8.1 to 5.5 ms (v1.0) and from 4.1 to 2.8 ms (v1.1). Only
    possible before numpy is first imported, and never over a user's own OPENBLAS_CORETYPE.
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

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


class RuntimeFailure(Exception):
    """A weights file or image this runtime cannot use (the message names it)."""


def load_sibling(name: str, *places: str):
    """The module (a file) or package (a folder) at the first of ``places`` (relative to this
    file's folder) that exists, loaded by path under ``name`` (once: later calls get the same
    module), or None. By path, so that nothing runs a ``squeezenet`` package ``__init__``
    (which may import torch) and the files work copied side by side out of the project."""
    if name in sys.modules:
        return sys.modules[name]
    here = Path(__file__).resolve().parent
    source = next(((here / p).resolve() for p in places if (here / p).exists()), None)
    if source is None:
        return None
    if source.is_dir():  # its relative imports find their files beside __init__.py
        spec = importlib.util.spec_from_file_location(
            name, source / "__init__.py", submodule_search_locations=[str(source)]
        )
    else:
        spec = importlib.util.spec_from_file_location(name, source)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # first: dataclasses look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _pixels():
    """``squeezenet/data/pixels.py``: the preprocessing that eval and the server run too."""
    module = load_sibling("_squeezenet_pixels", "pixels.py", "../data/pixels.py")
    if module is None:
        raise RuntimeFailure("preprocessing needs pixels.py (squeezenet/data/pixels.py) next to this file")
    return module


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


def sqz_codec():
    """The torch-free ``.sqz`` codec package (``squeezenet/weights/sqz_codec/``), or None when it
    is not beside this file nor in the source tree."""
    return load_sibling("_squeezenet_sqz_codec", "sqz_codec", "../weights/sqz_codec")


def read_sqz(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """``.sqz`` files through the codec's ``decode_sqz(bytes) -> (metadata, arrays)``. Copy the
    ``sqz_codec`` folder (and ``imagenet1k.tsv``, for files that name the ImageNet classes by
    reference) next to this file to use it outside the project."""
    codec = sqz_codec()
    if codec is None:
        raise RuntimeFailure(f"{path}: .sqz needs the sqz_codec folder (the torch-free decoder) next to this file")
    try:
        meta, arrays = codec.decode_sqz(Path(path).read_bytes())
    except Exception as exc:  # the codec's SqzError and friends
        raise RuntimeFailure(f"{path}: {exc}") from None
    return meta, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}


def read_weights(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Dispatch on the first bytes: the codec's magic -> read_sqz, anything else -> read_safetensors."""
    codec = sqz_codec()
    with open(path, "rb") as f:
        head = f.read(len(codec.MAGIC) if codec else 8)
    if codec is not None and head == codec.MAGIC:
        return read_sqz(path)
    try:
        return read_safetensors(path)
    except RuntimeFailure as exc:
        if codec is None:  # it may be a .sqz this copy cannot read
            raise RuntimeFailure(f"{exc} (a .sqz file needs the sqz_codec folder next to this file)") from None
        raise


# ---------------------------------------------------------------- layers
# Activations are NHWC float32 arrays with one extra last channel that is always 1. Each
# convolution is then a single matrix product whose last weight row is the bias, so no
# separate pass over the output adds it; ReLU and max pooling keep the ones intact.
def with_ones(n: int, h: int, w: int, c: int) -> np.ndarray:
    """An empty (n, h, w, c + 1) activation whose last channel is already 1."""
    a = np.empty((n, h, w, c + 1), dtype=np.float32)
    a[..., c] = 1.0
    return a


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, pad: int = 0, ones_column: bool = False) -> np.ndarray:
    """(N, H, W, C) -> every window as a row (N*Ho*Wo, kh*kw*C), with a last column of ones
    when asked. Each window is kh runs of kw*C floats that lie side by side in NHWC; copying
    each run as one opaque item (a void dtype of that size) takes 1.5-1.7x less time than an
    element-wise strided copy, whose inner loop would cover only C (or kw*C) floats."""
    if pad:
        padded = np.zeros((x.shape[0], x.shape[1] + 2 * pad, x.shape[2] + 2 * pad, x.shape[3]), np.float32)
        padded[:, pad:-pad, pad:-pad] = x
        x = padded
    x = np.ascontiguousarray(x)
    n, h, w, c = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    cols = with_ones(n, ho, wo, kh * kw * c) if ones_column else np.empty((n, ho, wo, kh * kw * c), np.float32)
    run = np.dtype((np.void, kw * c * 4))  # one row of a window
    sn, sh, sw, _ = x.strides
    windows = np.ndarray((n, ho, wo, kh), run, buffer=x, strides=(sn, stride * sh, stride * sw, sh))
    rows = np.ndarray((n, ho, wo, kh), run, buffer=cols, strides=(*cols.strides[:3], run.itemsize))
    rows[...] = windows
    return cols.reshape(n * ho * wo, -1)


class Conv:
    """A convolution as one matrix product whose matrix also holds the bias.

    On an activation that carries the ones channel (``reads_ones``), the windows take that
    channel along: the matrix is (kh*kw*(C + 1), O) with the bias in the centre tap's ones
    row and zeros in the other taps' (a window's centre is always a real pixel when the
    stride is 1 and the padding at most half the kernel, so the bias counts once, and
    padding, whose ones are 0, adds nothing). A 1x1 convolution then reads the activation as
    it is. Otherwise (the image; conv10 with Caffe's padding of 1, where a window's centre
    can be padding) im2col appends a column of ones and the bias is the last row."""

    def __init__(
        self, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1, pad: int = 0, reads_ones: bool = True
    ) -> None:
        o, c, self.kh, self.kw = weight.shape
        bias = np.zeros(o, np.float32) if bias is None else bias
        taps = weight.transpose(2, 3, 1, 0)  # (kh, kw, C, O): im2col's order
        self.ones_in_windows = reads_ones and stride == 1 and 2 * pad < min(self.kh, self.kw)
        if self.ones_in_windows:
            matrix = np.zeros((self.kh, self.kw, c + 1, o), np.float32)
            matrix[:, :, :c] = taps
            matrix[self.kh // 2, self.kw // 2, c] = bias
        else:
            matrix = np.vstack([taps.reshape(-1, o), bias[None]])
        self.matrix = np.ascontiguousarray(matrix.reshape(-1, o), dtype=np.float32)
        self.out_channels, self.stride, self.pad, self.reads_ones = o, stride, pad, reads_ones

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """x (N, H, W, C + 1) with its ones (the image: (N, H, W, C)) -> (N*Ho*Wo, O), written
        into ``out`` when given (a column slice of a wider array: a Fire module's two expand
        products land side by side)."""
        if self.ones_in_windows and self.kh == self.kw == 1:  # (no padding then: 2 * pad < 1)
            cols = x.reshape(-1, x.shape[3])
        elif self.ones_in_windows:
            cols = im2col(x, self.kh, self.kw, self.stride, self.pad)
        else:
            inputs = x[..., :-1] if self.reads_ones else x
            cols = im2col(inputs, self.kh, self.kw, self.stride, self.pad, ones_column=True)
        return np.matmul(cols, self.matrix, out=out)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        return (h + 2 * self.pad - self.kh) // self.stride + 1, (w + 2 * self.pad - self.kw) // self.stride + 1


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    """A contiguous NHWC copy, one channel plane at a time: ~3x faster than a transposed
    copy of the whole array, whose innermost loop would run over the 3 channels only."""
    out = np.empty((x.shape[0], x.shape[2], x.shape[3], x.shape[1]), dtype=np.float32)
    for channel in range(x.shape[1]):
        out[..., channel] = x[:, channel]
    return out


_ZEROS = np.zeros(1 << 16, dtype=np.float32)  # 256 KB: stays in cache while relu reads it


def relu(x: np.ndarray) -> np.ndarray:
    """In place, against an array of zeros rather than the scalar 0: numpy's maximum runs its
    SIMD loop only when neither operand is broadcast (4-5x faster here: fire2's 390k values
    in 26 instead of 117 us), so contiguous arrays go through in chunks of ``_ZEROS``."""
    if not x.flags.c_contiguous:
        return np.maximum(x, 0, out=x)
    flat = x.reshape(-1)
    for start in range(0, flat.size, _ZEROS.size):
        chunk = flat[start : start + _ZEROS.size]
        np.maximum(chunk, _ZEROS[: chunk.size], out=chunk)
    return x


def max_pool_ceil(x: np.ndarray, k: int = 3, s: int = 2) -> np.ndarray:
    """Max pool rounding the output size up, as Caffe and ``nn.MaxPool2d(ceil_mode=True)``;
    rows first, then columns (2(k-1) maxima instead of k*k - 1)."""
    n, h, w, c = x.shape
    ho, wo = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    if (ho - 1) * s >= h:  # PyTorch: the last window must start inside the input
        ho -= 1
    if (wo - 1) * s >= w:
        wo -= 1
    need_h, need_w = (ho - 1) * s + k, (wo - 1) * s + k
    if need_h > h or need_w > w:
        padded = np.full((n, max(h, need_h), max(w, need_w), c), -np.inf, dtype=np.float32)
        padded[:, :h, :w] = x
        x = padded
    rows = np.maximum(x[:, 0 : s * (ho - 1) + 1 : s], x[:, 1 : s * (ho - 1) + 2 : s])
    for i in range(2, k):
        np.maximum(rows, x[:, i : i + s * (ho - 1) + 1 : s], out=rows)
    out = np.maximum(rows[:, :, 0 : s * (wo - 1) + 1 : s], rows[:, :, 1 : s * (wo - 1) + 2 : s])
    for j in range(2, k):
        np.maximum(out, rows[:, :, j : j + s * (wo - 1) + 1 : s], out=out)
    return out


# ---------------------------------------------------------------- the network
class SqueezeNetNumpy:
    """A SqueezeNet rebuilt from the spec in the weights' metadata; ``__call__`` -> logits."""

    def __init__(self, path: str | Path, batch_chunk: int = 2) -> None:
        """``batch_chunk``: images per forward pass; larger batches run in chunks of it (see
        ``__call__``)."""
        if batch_chunk < 1:
            raise RuntimeFailure(f"batch_chunk must be at least 1, not {batch_chunk}")
        self.batch_chunk = batch_chunk
        self.meta, self.t = read_weights(path)
        try:
            self.spec = json.loads(self.meta["spec"])
            self.pre = json.loads(self.meta.get("preprocessing") or "{}")
            self.classes = json.loads(self.meta.get("classes") or "[]")
        except (KeyError, ValueError) as exc:
            raise RuntimeFailure(
                f"{path}: no squeezenet metadata ({exc}); convert it with 'squeezenet convert'"
            ) from None
        self.arch = self.meta.get("arch", "?")
        spec = self.spec
        self.stem = self._conv("features.0", spec["stem_stride"], int(spec.get("stem_padding", 0)), reads_ones=False)
        self.classifier = self._conv("classifier.1", pad=int(spec.get("classifier_padding", 0)))
        # (kind, convs, shortcut, relu): a Fire module without bypass that a pool follows leaves
        # its ReLU to the pool's output (max(relu) = relu(max), on 4x fewer elements)
        self.layers: list[tuple[str, dict[str, Conv], str, bool]] = []
        shortcuts = spec.get("shortcuts") or [""] * len(spec["fires"])
        index = 3  # features.0-2: conv1, ReLU, pool (or nothing)
        for i, shortcut in enumerate(shortcuts):
            p = f"features.{index}."
            convs = {"squeeze": self._conv(p + "squeeze"), "e1": self._conv(p + "expand1x1")}
            convs["e3"] = self._conv(p + "expand3x3", pad=1)
            if shortcut == "conv":
                convs["shortcut"] = self._conv(p + "shortcut")
            pooled = i in spec["pool_after"]
            defer = pooled and not shortcut
            self.layers.append(("fire", convs, shortcut or "", not defer))
            index += 1
            if pooled:
                self.layers.append(("pool", {}, "", defer))
                index += 1

    def _conv(self, name: str, stride: int = 1, pad: int = 0, reads_ones: bool = True) -> Conv:
        if name + ".weight" not in self.t:
            raise RuntimeFailure(f"weights file lacks {name}.weight for this architecture")
        return Conv(self.t[name + ".weight"], self.t.get(name + ".bias"), stride, pad, reads_ones)

    def _fire(self, convs: dict[str, Conv], x: np.ndarray, shortcut: str, activate: bool) -> np.ndarray:
        """ReLU(concat(expand1x1(s), expand3x3(s))) + bypass, of s = ReLU(squeeze(x)); the outer
        ReLU left to the pool that follows when ``activate`` is False."""
        n, h, w, _ = x.shape
        squeeze, e1, e3 = convs["squeeze"], convs["e1"], convs["e3"]
        s = with_ones(n, h, w, squeeze.out_channels)
        squeeze(x, out=s.reshape(n * h * w, -1)[:, :-1])
        relu(s)  # the whole array, ones included (max(1, 0) = 1): contiguous, so ~2x faster
        channels = e1.out_channels + e3.out_channels
        out = with_ones(n, h, w, channels)
        flat = out.reshape(n * h * w, -1)
        e1(s, out=flat[:, : e1.out_channels])
        e3(s, out=flat[:, e1.out_channels : channels])
        if activate:
            relu(out)
        if shortcut == "identity":
            out[..., :-1] += x[..., :-1]
        elif shortcut == "conv":
            out[..., :-1] += convs["shortcut"](x).reshape(n, h, w, channels)
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) preprocessed images -> (N, classes) logits, ``batch_chunk`` images at a
        time: a whole batch of 32 would stream every layer's activations and im2col columns
        (fire2's: 59 MB) through main memory, where two images at a time stay in the caches
        (1.5-1.7x the throughput at batch 32 in the deploy bench; the matrix products have
        rows enough either way)."""
        x = np.asarray(x, dtype=np.float32)
        if len(x) <= self.batch_chunk:
            return self._forward(x)
        step = self.batch_chunk
        return np.concatenate([self._forward(x[i : i + step]) for i in range(0, len(x), step)])

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, classes) in one pass; works in NHWC inside."""
        x = self._stem(nchw_to_nhwc(x))  # contiguous windows for im2col
        for kind, convs, shortcut, activate in self.layers:
            x = self._fire(convs, x, shortcut, activate) if kind == "fire" else max_pool_ceil(x)
            if kind == "pool" and activate:
                relu(x)
        ho, wo = self.classifier.output_size(*x.shape[1:3])
        logits = relu(self.classifier(x)).reshape(x.shape[0], ho * wo, -1)
        return logits.mean(axis=1)

    def _stem(self, image: np.ndarray) -> np.ndarray:
        """conv1 -> (max pool) -> ReLU: pooling first means the ReLU touches 4x fewer elements."""
        n, h, w, _ = image.shape
        ho, wo = self.stem.output_size(h, w)
        x = with_ones(n, ho, wo, self.stem.out_channels)
        self.stem(image, out=x.reshape(n * ho * wo, -1)[:, :-1])
        if self.spec.get("stem_pool", True):
            x = max_pool_ceil(x)
        return relu(x)

    # ------------------------------------------------------------ preprocessing
    def preprocess(self, image: Image.Image | str | Path) -> np.ndarray:
        """The numbers of ``squeezenet.data.preprocessing.build_transform`` -> (C, H, W) float32."""
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
        image = image.convert("L" if self.pre.get("channel_order") == "L" else "RGB")
        try:
            return _pixels().preprocess(image, self.pre)
        except ValueError as exc:  # a setting pixels.py does not know
            raise RuntimeFailure(f"preprocessing: {exc}") from None

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
