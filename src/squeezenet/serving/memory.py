"""Memory bounded by design: what decoding an image will cost, known from its header before a pixel
is decoded; a budget for the images in flight; and glibc's allocator told to give freed memory back.

A small file can claim a large cost (a 78 KB PNG of 4800x4800 decodes to 92 MB), so the server
reserves each image's cost (``decoding_cost``) from one ``MemoryBudget`` (``--image-memory-mb``)
before decoding it, and keeps the reservation, shrunk to the model input, until its batch has
run: images beyond the budget wait, in order, and beyond ``--max-queue`` waiting are refused
(503). An image that alone costs more than the whole budget is refused (413). The server's worst
case is then its own size plus the budget (docs/serving.md computes it); the costs below were
measured on Pillow 13 (``tests/test_serving.py`` checks them against the peak of real decodes).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
from dataclasses import dataclass

from PIL import Image

from squeezenet.data.pixels import resized_size, settings
from squeezenet.serving.problems import RequestProblem

# bytes per pixel as Pillow stores a decoded image (RGB is stored in 4 bytes, as RGBX); others: 4
STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # scaled to 8 bits first (data.images._to_8bit)
# bytes per pixel a decoder holds besides the image while it loads (measured): libwebp decodes into
# a buffer of its own and Pillow copies it twice; libtiff may hold a whole strip; formats not
# measured are given as much. PNG, baseline JPEG, GIF, BMP and the PPM family hold a few rows.
DECODER_BYTES = {"WEBP": 12, "TIFF": 4}
LIGHT_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "PPM")
UNMEASURED_DECODER_BYTES = 4
# what every image costs besides its pixels, with a margin: the bands of the conversions (a quarter
# of a megapixel each, data.images.BAND_PIXELS), the crop, the model input, Python's objects
FIXED_BYTES = 8 << 20

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # mallopt parameters (glibc's malloc.h)
MMAP_THRESHOLD = 256 << 10
ARENAS = 2


# ---------------------------------------------------------------- what an image costs
@dataclass(frozen=True)
class ImageHeader:
    """What an opened image's header says, before its pixels are decoded."""

    width: int
    height: int
    mode: str
    format: str
    rotated: bool  # an EXIF orientation: a transposed copy exists for a moment
    decoder_bytes: float  # per pixel, held by the decoder while it loads
    transparency: bool = False  # a palette image with a transparent colour is flattened like RGBA


def header_of(img: Image.Image, data: bytes) -> ImageHeader:
    """``img`` opened from ``data``, not loaded: nothing here decodes a pixel."""
    fmt = (img.format or "").upper()
    rotated, decoder = _rotated(img, fmt, data), _decoder_bytes(img, fmt)
    return ImageHeader(img.width, img.height, img.mode, fmt, rotated, decoder, "transparency" in img.info)


def _rotated(img: Image.Image, fmt: str, data: bytes) -> bool:
    """Whether ``ImageOps.exif_transpose`` will transpose it. A PNG may put its EXIF after the
    pixels, where reading it would decode them: then any eXIf chunk counts as a rotation."""
    if fmt == "PNG" and "exif" not in img.info:
        return b"eXIf" in data
    try:
        return img.getexif().get(0x0112, 1) not in (1, None)
    except Exception:  # a broken EXIF block: decoding will say so, or ignore it; count the copy
        return True


def _decoder_bytes(img: Image.Image, fmt: str) -> float:
    if fmt == "JPEG" and img.info.get("progressive"):
        # libjpeg keeps every coefficient of a progressive file: 2 bytes a sample, chroma subsampled
        layers = getattr(img, "layer", None) or [(0, 1, 1, 0)] * len(img.getbands())
        h_max, v_max = max(layer[1] for layer in layers), max(layer[2] for layer in layers)
        return 2.0 * sum(layer[1] * layer[2] for layer in layers) / (h_max * v_max)
    if fmt in LIGHT_FORMATS:
        return 0.0
    return DECODER_BYTES.get(fmt, UNMEASURED_DECODER_BYTES)


def _conversion_bytes(mode: str, target: str, has_transparency: bool) -> int:
    """Bytes per pixel that ``data.images.normalize_mode`` allocates beside the decoded image."""
    out = STORED_BYTES.get(target, 4)
    if mode in WIDE_MODES:
        return 1 + (out if target != "L" else 0)
    if mode in ALPHA_MODES or (mode == "P" and has_transparency):
        return 4 + (out if target != "RGB" else 0)
    return 0 if mode == target else out


def decoding_cost(header: ImageHeader, target: str, pre: dict) -> int:
    """Peak bytes of decoding and preprocessing the image (``preprocess.prepare``): the decoded
    pixels, plus the largest of what the decoder, the EXIF transposition and the mode conversion
    add beside them, plus the resize's two passes (Pillow resizes the rows first, then the columns)."""
    pixels = header.width * header.height
    stored = STORED_BYTES.get(header.mode, 4)
    beside = max(
        header.decoder_bytes,
        stored if header.rotated else 0,
        _conversion_bytes(header.mode, target, header.transparency),
    )
    side_w, side_h = (header.height, header.width) if header.rotated else (header.width, header.height)
    new_w, new_h = resized_size(side_w, side_h, settings(pre)["resize"])
    out = STORED_BYTES.get(target, 4)
    resize = out * new_w * (max(side_h, new_h) + new_h)
    return int(pixels * (stored + beside)) + resize + FIXED_BYTES


# ---------------------------------------------------------------- the budget
class Reservation:
    """Bytes held from a ``MemoryBudget`` until ``release`` (or the end of an ``async with``)."""

    def __init__(self, budget: MemoryBudget, size: int) -> None:
        self.budget, self.size = budget, size

    def shrink(self, size: int) -> None:
        """Keep only ``size`` bytes (the decoded image is gone, its model input stays)."""
        if size < self.size:
            self.budget._give_back(self.size - size)
            self.size = size

    def release(self) -> None:
        self.shrink(0)


class MemoryBudget:
    """Bytes for images in flight, granted in arrival order (a large image is not overtaken for
    ever by small ones); at most ``max_waiting`` requests wait, beyond that a 503."""

    def __init__(self, capacity: int, max_waiting: int) -> None:
        self.capacity, self.max_waiting, self.in_use = capacity, max_waiting, 0
        self._waiting: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def reserve(self, size: int):
        """Hold ``size`` bytes (at most the capacity) for the body of the ``async with``."""
        reservation = await self._acquire(min(size, self.capacity))
        try:
            yield reservation
        finally:
            reservation.release()

    async def _acquire(self, size: int) -> Reservation:
        if not self._waiting and self.in_use + size <= self.capacity:
            self.in_use += size
            return Reservation(self, size)
        if len(self._waiting) >= self.max_waiting:
            raise RequestProblem(
                503, "overloaded", f"{len(self._waiting)} images are already waiting for decoding memory (--max-queue)"
            )
        future = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiting.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if entry in self._waiting:
                self._waiting.remove(entry)
                self._give_back(0)  # those it held up may fit now
            elif future.done() and not future.cancelled():
                self._give_back(size)  # granted as it was cancelled
            raise
        return Reservation(self, size)

    def _give_back(self, size: int) -> None:
        self.in_use -= size
        while self._waiting and self.in_use + self._waiting[0][0] <= self.capacity:
            size, future = self._waiting.popleft()
            if not future.done():
                self.in_use += size
                future.set_result(None)


# ---------------------------------------------------------------- the allocator
def _libc():
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def tune_malloc() -> bool:
    """glibc keeps freed memory for reuse: with its default, the threshold above which a block is
    mapped on its own (and unmapped when freed) rises to the size of the last large block freed
    (up to 32 MB), so after one large decode Pillow's 16 MB blocks and NumPy's arrays come from
    the heap and stay resident, in one heap per thread (measured: 16 simultaneous 4800x4800 PNGs
    left the server at 278 MB, 124 MB with a fixed threshold). A fixed threshold and two heaps
    give it back. Called before the threads start; -> False where the C library is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_ARENA_MAX, ARENAS))


def trim_malloc() -> None:
    """Return the heaps' free pages to the system (after a model swap: its buffers were small blocks)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
