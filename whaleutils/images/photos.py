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
ROUNDING = 1e-3  # pixels: crop_window's tolerance for a bound that is a whole pixel (float32 boxes)
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
    # a bound within ROUNDING of a whole pixel is that pixel: a box mapped into a crop cache's
    # pixels lands on the cached window's edges up to floating-point error
    left = int(np.clip(np.floor(left - grow_x + ROUNDING), 0, width - 1))
    top = int(np.clip(np.floor(top - grow_y + ROUNDING), 0, height - 1))
    right = int(np.clip(np.ceil(right + grow_x - ROUNDING), left + 1, width))
    bottom = int(np.clip(np.ceil(bottom + grow_y - ROUNDING), top + 1, height))
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


def headroom_margin(margin: float, box_jitter: float) -> float:
    """The margin that holds every crop of a box jittered by up to ``box_jitter`` of its size a
    side (``pipeline.jitter_box``) and then grown by ``margin``: a side moves out by at most
    ``box_jitter`` of the box, and the box grows to at most ``1 + 2 box_jitter`` of its size."""
    return margin + box_jitter * (1.0 + 2.0 * margin)


def prepare_cache_entry(
    source,
    box: Sequence[float] | None,
    size: int,
    margin: float = BOX_MARGIN,
    box_jitter: float = 0.0,
    name: str | os.PathLike | None = None,
) -> tuple[np.ndarray, tuple[float, float, float, float] | None]:
    """A crop cache's image of one photo and its box in the image's pixels (None without one).

    With a box: the photo rescaled (each axis on its own) so that ``box`` grown by ``margin``
    (``crop_window``: the model's crop) is ``size`` x ``size`` pixels, cut to the box grown by
    :func:`headroom_margin` (room for a box moved by ``box_jitter``), both clipped to the
    photo. Reading it back with ``crop_window(box_in_image, ...)`` finds the model's crop
    again: with ``box_jitter`` 0 the image is exactly ``prepare(source, box, size, margin)``;
    with room around it the crop lands on whole pixels of the image wherever the photo was
    reduced. Without a box: ``prepare(source, None, size)``, the whole photo.
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got size={size}")
    if box_jitter < 0:
        raise ValueError(f"box_jitter must be >= 0, got box_jitter={box_jitter}")
    decoded, scale = _decode(source, name, box, margin, size)
    if not has_box(box):
        return _crop_and_resize(decoded, None, margin, size), None
    box = _scaled(box, scale)
    ((width, height), source_box), cache_box = _box_in_crop(box, decoded, margin, size, box_jitter)
    if (width, height) == (size, size):  # no room around the crop: prepare's own image
        return _crop_and_resize(decoded, box, margin, size), cache_box
    if isinstance(decoded, np.ndarray):
        decoded = Image.fromarray(decoded)
    image = decoded.resize((width, height), Image.Resampling.BILINEAR, box=source_box)
    return np.asarray(image), cache_box


def _box_in_crop(box, decoded, margin: float, size: int, box_jitter: float):
    """The cached image's geometry for ``box`` (in the pixels of the decoded photo):
    ((width, height), the photo region it is resized from) and the box in its pixels. The box
    grown by ``margin`` (clipped to the photo, not rounded) becomes exactly ``size`` x
    ``size`` pixels at a whole-pixel offset, so ``crop_window`` finds it again."""
    height, width = (
        decoded.shape[:2] if isinstance(decoded, np.ndarray) else (decoded.height, decoded.width)
    )
    left, top, right, bottom = (float(v) for v in box)
    grow_x, grow_y = margin * (right - left), margin * (bottom - top)
    inner_left, inner_top = max(0.0, left - grow_x), max(0.0, top - grow_y)
    inner_right = max(min(float(width), right + grow_x), inner_left + 1.0)
    inner_bottom = max(min(float(height), bottom + grow_y), inner_top + 1.0)
    outer_top, outer_left, outer_bottom, outer_right = crop_window(
        box, height, width, headroom_margin(margin, box_jitter)
    )
    scale_x, scale_y = size / (inner_right - inner_left), size / (inner_bottom - inner_top)
    # whole pixels of room on each side, inside the photo (none without a jitter to hold)
    room = float(box_jitter > 0)
    pad_left = int(np.floor(room * max(0.0, inner_left - outer_left) * scale_x))
    pad_right = int(np.floor(room * max(0.0, outer_right - inner_right) * scale_x))
    pad_top = int(np.floor(room * max(0.0, inner_top - outer_top) * scale_y))
    pad_bottom = int(np.floor(room * max(0.0, outer_bottom - inner_bottom) * scale_y))
    source_box = (  # inside the photo (floating-point error may cross its edge by a hair)
        max(0.0, inner_left - pad_left / scale_x),
        max(0.0, inner_top - pad_top / scale_y),
        min(float(width), inner_right + pad_right / scale_x),
        min(float(height), inner_bottom + pad_bottom / scale_y),
    )
    shape = (pad_left + size + pad_right, pad_top + size + pad_bottom)
    cache_box = (
        (left - source_box[0]) * scale_x,
        (top - source_box[1]) * scale_y,
        (right - source_box[0]) * scale_x,
        (bottom - source_box[1]) * scale_y,
    )
    return (shape, source_box), cache_box


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
