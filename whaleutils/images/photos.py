"""The one way a photo becomes a model's input: training, the crop cache and ``identify`` all
call :func:`prepare`, so a model sees its catalogue and its queries as it saw its training set.

``prepare(source, box, size)``: decode with Pillow (JPEG, PNG, TIFF, WebP, BMP; grayscale,
16-bit greys scaled to 8 bits, CMYK, alpha dropped), refuse a photo above
``data.MAX_PHOTO_PIXELS`` before decoding it, turn it upright by its EXIF orientation, crop it
to ``box`` grown by ``margin`` (:data:`BOX_MARGIN`, 10% of the box a side) and clipped to the
photo, then resize it to ``size`` x ``size`` with Pillow's antialiased bilinear filter. The
result is uint8 RGB (size, size, 3), or the crop at its own resolution (h, w, 3) without
``size`` (training, whose random crop resizes after it). A JPEG whose crop is at least twice
``size`` on each side is decoded at a reduced DCT scale first (1/2, 1/4 or 1/8, keeping the
crop at least ``size``), which is much faster and changes pixels only as a resize does.

Boxes are (left, top, right, bottom) in the upright photo's pixels; a box whose first value is
negative (the pipeline's -1s for "no box") means the whole photo. Whether to crop at all is the
caller's rule, one for gallery and queries alike (``splits.Split.crop_to_box``).

Every failure is a :class:`UnreadablePhoto` (a ``ValueError``) naming the photo, so a reader of
many photos can skip and report it (``data.PhotoSizeError`` for a declared size beyond the cap,
also a ``ValueError``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from whaleutils.datasets import data

BOX_MARGIN = 0.1  # a box grows by this share of its width / height on each side before a crop
GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # Pillow's 16- and 32-bit integer greys


class UnreadablePhoto(ValueError):
    """A photo that cannot be decoded as an image (the message names it)."""


def read(source, name: str | os.PathLike | None = None) -> np.ndarray:
    """The photo ``source`` (a path, the encoded bytes, or an array (h, w[, 1|3|4]) 0-255) as
    upright uint8 RGB (h, w, 3), at full resolution. ``name`` names it in errors (default: the
    path)."""
    image, _ = _decode(source, name)
    return image if isinstance(image, np.ndarray) else np.asarray(image)


def _decode(
    source,
    name: str | os.PathLike | None = None,
    box: Sequence[float] | None = None,
    margin: float = BOX_MARGIN,
    min_side: int | None = None,
):
    """The upright photo, as a Pillow RGB image (kept in Pillow, so that a crop and a resize
    copy only what they keep) or, for arrays and 16-bit greys, a uint8 RGB array; and the scale
    it was decoded at (1, or 1/2, 1/4, 1/8): with ``min_side``, a JPEG is decoded at the
    smallest of Pillow's DCT scales (``draft``) at which the crop of ``box`` (grown by
    ``margin``; the whole photo without a box) keeps at least ``min_side`` pixels on each side.
    Decoding a 3000 px photo for a 380 px crop at half scale is faster
    (``benchmarks/crop_cache_speed.py``), and the antialiased resize that follows sees the
    detail it keeps anyway.
    """
    if isinstance(source, np.ndarray):
        return _array_rgb(source), 1.0
    name = source if name is None and not isinstance(source, bytes | bytearray) else name
    opened_from = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        with Image.open(opened_from) as opened:
            data.check_photo_size(*opened.size, name)
            scale = 1.0
            if min_side is not None and opened.format == "JPEG":
                scale = _draft(opened, box, margin, int(min_side))
            opened.load()
            ImageOps.exif_transpose(opened, in_place=True)
            if opened.mode in GREY_MODES:
                return _pillow_rgb(opened), scale
            return (opened if opened.mode == "RGB" else opened.convert("RGB")), scale
    except data.PhotoSizeError:
        raise
    except Image.DecompressionBombError as error:
        raise UnreadablePhoto(f"{name}: refused as a decompression bomb ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UnreadablePhoto(f"{name}: not a readable image ({error})") from None


def _draft(opened, box, margin: float, min_side: int) -> float:
    """Configure the open JPEG ``opened`` to decode at a reduced DCT scale keeping the crop's
    sides at least ``min_side``; returns the scale (1, 1/2, 1/4 or 1/8)."""
    stored_width, stored_height = opened.size
    turned = opened.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # stored a quarter turn away
    width, height = (stored_height, stored_width) if turned else (stored_width, stored_height)
    top, left, bottom, right = (
        crop_window(box, height, width, margin) if has_box(box) else (0, 0, height, width)
    )
    reduction = max(1, min(right - left, bottom - top) // max(1, min_side))
    if reduction < 2:
        return 1.0
    wanted = (-(-stored_width // reduction), -(-stored_height // reduction))  # ceilings
    opened.draft(None, wanted)
    return opened.size[0] / stored_width


def _pillow_rgb(image) -> np.ndarray:
    """uint8 RGB (h, w, 3) of a Pillow image; 16-bit and 32-bit integer greys are scaled from
    their full range (Pillow's own conversion clips them to white)."""
    if image.mode in GREY_MODES:
        values = np.asarray(image, dtype=np.float64)
        full = max(65535.0, float(values.max(initial=0)))  # 16-bit, or a wider 32-bit range
        grey = np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def _array_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise UnreadablePhoto(f"an image array must be (h, w[, 1|3|4]), got shape {array.shape}")
    array = np.clip(array, 0, 255).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def has_box(box) -> bool:
    """Whether ``box`` is a box: not None and not the pipeline's -1s."""
    return box is not None and float(box[0]) >= 0


def crop_window(
    box: Sequence[float], height: int, width: int, margin: float = BOX_MARGIN
) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) pixel bounds of ``box`` (left, top, right, bottom) grown by
    ``margin`` of its size on each side, outward to whole pixels, and clipped to the photo
    (at least one pixel)."""
    left, top, right, bottom = (float(v) for v in box)
    grow_x, grow_y = margin * (right - left), margin * (bottom - top)
    left = int(np.clip(np.floor(left - grow_x), 0, width - 1))
    top = int(np.clip(np.floor(top - grow_y), 0, height - 1))
    right = int(np.clip(np.ceil(right + grow_x), left + 1, width))
    bottom = int(np.clip(np.ceil(bottom + grow_y), top + 1, height))
    return top, left, bottom, right


def crop(image: np.ndarray, box, margin: float = BOX_MARGIN) -> np.ndarray:
    """``image`` (h, w, c) cropped to :func:`crop_window`; the whole image without a box."""
    if not has_box(box):
        return image
    top, left, bottom, right = crop_window(box, image.shape[0], image.shape[1], margin)
    return image[top:bottom, left:right]


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB ``image`` (h, w, 3) resized to (size, size, 3) with Pillow's bilinear filter,
    which widens with the reduction (antialiased, as ``tf.image.resize(antialias=True)``)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def prepare(
    source,
    box: Sequence[float] | None = None,
    size: int | None = None,
    margin: float = BOX_MARGIN,
    name: str | os.PathLike | None = None,
    min_side: int | None = None,
) -> np.ndarray:
    """The model input of one photo (module docstring): uint8 RGB (size, size, 3), or the
    upright crop (h, w, 3) when ``size`` is None. A JPEG is decoded at a reduced scale where
    the crop keeps at least ``size`` pixels a side (``min_side``, default ``size``; 0 or no
    ``size``: full resolution, as training and the local features read photos).

    Raises
    ------
    UnreadablePhoto, data.PhotoSizeError
        Naming the photo (``name``, or its path).
    """
    if size is not None and int(size) < 1:
        raise ValueError(f"size must be a positive number of pixels, got size={size}")
    if min_side is None:
        min_side = size
    image, scale = _decode(source, name, box, margin, min_side or None)
    return _crop_and_resize(image, _scaled(box, scale), margin, size)


def _crop_and_resize(image, box, margin: float, size: int | None) -> np.ndarray:
    """uint8 RGB of a decoded photo (:func:`_decode`'s Pillow image or array) cropped to
    ``box`` (in its pixels) and, with ``size``, resized."""
    if isinstance(image, np.ndarray):
        image = crop(image, box, margin)
        return image if size is None else resize(image, int(size))
    if has_box(box):
        top, left, bottom, right = crop_window(box, image.height, image.width, margin)
        image = image.crop((left, top, right, bottom))
    if size is not None and image.size != (int(size), int(size)):
        image = image.resize((int(size), int(size)), Image.Resampling.BILINEAR)
    return np.asarray(image)


def _scaled(box, scale: float):
    """``box`` in the pixels of a photo decoded at ``scale``."""
    return [float(v) * scale for v in box] if scale != 1.0 and has_box(box) else box


def prepare_with_crop(
    source,
    box: Sequence[float] | None = None,
    size: int = 224,
    margin: float = BOX_MARGIN,
    name: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``prepare(source, box, size)`` (the model input) and the full-resolution crop
    (``prepare(source, box)``: what local features and thumbnails are made from), decoding
    the photo once where no reduced JPEG scale applies and twice where one does, so that the
    model input is exactly what the training pipeline gives."""
    image, scale = _decode(source, name, box, margin, int(size))
    if scale != 1.0:  # the crop at full resolution needs a decode of its own
        model_input = _crop_and_resize(image, _scaled(box, scale), margin, int(size))
        return model_input, prepare(source, box, margin=margin, name=name)
    whole = _crop_and_resize(image, box, margin, None)  # cropped once, for both
    return resize(whole, int(size)), whole
