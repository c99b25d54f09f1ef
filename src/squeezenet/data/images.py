"""Opening any image a user may have: JPEG, PNG, grayscale, RGBA, palette, CMYK, 16-bit.

Pillow's ``convert("RGB")`` gets some of these wrong (16-bit images clip to white,
transparent pixels turn into whatever colour hides under them), so each case is handled
here once, and everything that is not an image becomes an ``ImageError``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from squeezenet.errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

# Refuse decompression bombs instead of allocating gigabytes for one "image".
Image.MAX_IMAGE_PIXELS = 64_000_000


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


# Conversions run over bands of rows of about this many pixels: each step works pixel by pixel, so
# the result is the same as in one piece, and a 24-megapixel image costs its own pixels and the
# result's rather than several full-size temporaries (the server bounds its memory by that cost:
# serving/memory.py)
BAND_PIXELS = 1 << 18


def _bands(img: Image.Image):
    """(top, bottom) of each band of rows."""
    rows = max(1, BAND_PIXELS // max(1, img.width))
    return ((top, min(top + rows, img.height)) for top in range(0, img.height, rows))


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer/float grayscale to 8-bit by scaling, not clipping."""

    def band(top: int, bottom: int) -> np.ndarray:
        return np.asarray(img.crop((0, top, img.width, bottom)))

    scale, offset = None, 0.0
    high = max((band(*b).max(initial=0) for b in _bands(img)), default=0)
    if img.mode.startswith("I;16") or (img.mode == "I" and high > 255):
        scale = 255.0 / (65535.0 if high <= 65535 else float(high))
    elif img.mode == "F":
        offset = min((float(band(*b).min(initial=0.0)) for b in _bands(img)), default=0.0)
        scale = 255.0 / max(max(float(high), 1.0) - offset, 1e-12)
    out = np.empty((img.height, img.width), np.uint8)
    for top, bottom in _bands(img):
        rows = band(top, bottom)
        if img.mode == "F":
            rows = (rows - offset) * scale
        elif scale is not None:
            rows = rows.astype(np.float64) * scale
        out[top:bottom] = np.clip(np.rint(rows), 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite transparent images on white, the way viewers show them."""
    out = Image.new("RGB", img.size)
    for top, bottom in _bands(img):
        band = img.crop((0, top, img.width, bottom)).convert("RGBA")
        background = Image.new("RGBA", band.size, (255, 255, 255, 255))
        out.paste(Image.alpha_composite(background, band).convert("RGB"), (0, top))
    return out


def normalize_mode(img: Image.Image, mode: str = "RGB") -> Image.Image:
    """Bring a decoded image of any mode to ``mode`` ("RGB" or "L")."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = _flatten_alpha(img)
    return img.convert(mode) if img.mode != mode else img


def load_image(path: str | Path, mode: str = "RGB", draft_size: int | None = None) -> Image.Image:
    """Decode ``path`` fully, apply its EXIF orientation and convert it to ``mode``.

    ``draft_size`` lets the JPEG decoder skip detail below that size (a DCT-domain
    downscale, several times faster); it is never used for exact evaluation.
    """
    return decode_image(Path(path), str(path), mode, draft_size)


def decode_image(source, name: str, mode: str = "RGB", draft_size: int | None = None) -> Image.Image:
    """``load_image`` for any source Pillow opens (a path or a file object, e.g. an archive
    member); ``name`` labels the ``ImageError`` raised when it is not a readable image."""
    path = name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(source) as img:
                if draft_size and img.format == "JPEG":
                    img.draft("RGB" if mode == "RGB" else "L", (draft_size, draft_size))
                img.load()
                img = ImageOps.exif_transpose(img)
                return normalize_mode(img, mode)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused, too many pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc})") from None
