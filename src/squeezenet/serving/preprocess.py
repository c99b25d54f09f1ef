"""Image bytes -> the model's input, with Pillow and NumPy only (the server imports no torch).

Two steps, each the numbers of its torch-based counterpart (``tests/test_serving.py`` measures
the agreement on every image mode):

- ``decode``: ``squeezenet.data.images.decode_image`` (EXIF orientation, then the same
  ``normalize_mode``: 16-bit, alpha, palette, CMYK), after two checks the server needs first:
  the pixel count read from the header (a decompression bomb is refused before a byte is
  decoded) and a readable, complete image (a truncated file is an error, never a grey bottom
  half). ``decoding_bytes`` reads the header alone, for the memory budget (``serving.memory``).
- ``preprocess``: ``squeezenet.data.pixels``, the one implementation that
  ``build_transform`` (eval, predict) and the NumPy runtime also run; the server keeps where
  the crop lies in the image, for the page's heat map.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from squeezenet.data.images import normalize_mode
from squeezenet.data.pixels import geometry, normalize
from squeezenet.serving.memory import decoding_cost, header_of
from squeezenet.serving.problems import RequestProblem

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated upload is an error, not a padded image


@contextlib.contextmanager
def _opened(data: bytes, max_pixels: int):
    """The image in ``data``, opened (header read, no pixel decoded) and under ``max_pixels``;
    every failure, while opening or inside the ``with``, as the ``RequestProblem`` naming it."""
    if not data:
        raise RequestProblem(400, "empty_body", "empty body: send the image file's bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: our own limit is below
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise RequestProblem(
                        413,
                        "too_many_pixels",
                        f"image of {width}x{height} = {width * height:,} pixels is over the limit of "
                        f"{max_pixels:,} (--max-pixels)",
                    )
                yield img
    except UnidentifiedImageError:
        raise RequestProblem(400, "not_an_image", "not an image (unrecognised format)") from None
    except Image.DecompressionBombError:  # Pillow's own limit, when it is below ours (the server lifts it)
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or 0))
        raise RequestProblem(
            413, "too_many_pixels", f"image of more than {limit:,} pixels is over the limit of {max_pixels:,}"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if "truncated" in str(exc).lower():
            raise RequestProblem(400, "truncated", f"truncated image ({exc})") from None
        raise RequestProblem(400, "undecodable", f"cannot decode image ({exc})") from None


def decode(data: bytes, mode: str = "RGB", max_pixels: int = 24_000_000) -> Image.Image:
    """The image in ``data``, oriented and in ``mode``; a ``RequestProblem`` naming what is wrong."""
    with _opened(data, max_pixels) as img:
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # not a copy: an unrotated image would be copied whole
        return normalize_mode(img, mode)


def decoding_bytes(data: bytes, pre: dict, max_pixels: int) -> tuple[int, str]:
    """(peak bytes that ``prepare`` will take, a description of the image) from its header alone;
    the refusals that the header shows (not an image, too many pixels) are raised here."""
    with _opened(data, max_pixels) as img:
        header = header_of(img, data)
    described = f"{header.format or 'image'} {header.mode} image of {header.width}x{header.height}"
    return decoding_cost(header, image_mode(pre), pre), described


@dataclass(frozen=True)
class Prepared:
    """A model input (C, H, W) and the crop it saw, as fractions (left, top, right, bottom) of the image."""

    array: np.ndarray
    box: tuple[float, float, float, float]


def preprocess(image: Image.Image, pre: dict) -> Prepared:
    """``build_transform(Preprocessing.from_dict(pre))`` applied to ``image``, with its crop box."""
    pixels, box = geometry(image, pre)
    return Prepared(normalize(pixels, pre), box)


def image_mode(pre: dict) -> str:
    return "L" if pre.get("channel_order") == "L" else "RGB"


def prepare(data: bytes, pre: dict, max_pixels: int) -> Prepared:
    """Bytes -> model input: what one decoding thread does per request."""
    return preprocess(decode(data, image_mode(pre), max_pixels), pre)
