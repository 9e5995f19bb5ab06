"""photos: the one path from a photo file to a model's input."""

import io

import numpy as np
import pytest
from PIL import Image

from whaleutils.datasets import data
from whaleutils.images import photos


def test_photos_of_every_kind_are_read_upright_as_rgb(tmp_path):
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)  # 40 high, 60 wide
    Image.fromarray(original).save(tmp_path / "plain.png")
    assert np.array_equal(photos.read(tmp_path / "plain.png"), original)
    Image.fromarray(original[..., 0]).save(tmp_path / "gray.png")
    gray = photos.read(tmp_path / "gray.png")
    assert gray.shape == (40, 60, 3) and np.array_equal(gray[..., 2], original[..., 0])
    Image.fromarray(np.dstack([original, np.full((40, 60), 7, np.uint8)])).save(
        tmp_path / "alpha.png"
    )
    assert np.array_equal(photos.read(tmp_path / "alpha.png"), original)
    Image.fromarray(original).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cmyk = photos.read(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (40, 60, 3) and np.abs(cmyk.astype(int) - original).mean() < 40
    # stored turned a quarter (60 high, 40 wide) with EXIF orientation 6: shown upright again
    rotated = Image.fromarray(np.rot90(original, k=1).copy())  # counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rotated.save(tmp_path / "exif.png", exif=exif)
    assert np.array_equal(photos.read(tmp_path / "exif.png"), original)
    assert np.array_equal(photos.read((tmp_path / "exif.png").read_bytes()), original)
    assert photos.read(original[..., 0]).shape == (40, 60, 3)
    # 16-bit grey: scaled from its full range, not clipped to white
    deep = original[..., 0].astype(np.uint16) * 257
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert np.array_equal(photos.read(tmp_path / "deep.png")[..., 1], original[..., 0])


def test_unreadable_photos_are_named_whether_paths_or_bytes(tmp_path):
    from conftest import bomb_png

    (tmp_path / "broken.jpg").write_text("not a photo")
    with pytest.raises(photos.UnreadablePhoto, match=r"broken.jpg: not a readable image"):
        photos.prepare(tmp_path / "broken.jpg")
    with pytest.raises(ValueError, match=r"^IMG_7\.jpg: not a readable image"):
        photos.prepare(b"not a photo either", name="IMG_7.jpg")
    with pytest.raises(ValueError, match=r"bomb.png: refused as a decompression bomb"):
        photos.prepare(bomb_png(tmp_path / "bomb.png"))  # beyond Pillow's own limit
    with pytest.raises(data.PhotoSizeError, match=r"large.png: declares 12000 x 12000 px"):
        photos.prepare(bomb_png(tmp_path / "large.png", 12000))  # beyond MAX_PHOTO_PIXELS
    with pytest.raises(photos.UnreadablePhoto, match=r"must be \(h, w"):
        photos.prepare(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="size must be a positive"):
        photos.prepare(np.zeros((4, 4)), size=0)


def test_crop_window_margin_and_clipping():
    # 20 x 20 box, margin 10 px each side: left 0, top 10, right 40, bottom 50
    assert photos.crop_window((10, 20, 30, 40), 100, 100, 0.5) == (10, 0, 50, 40)
    assert photos.crop_window((0, 0, 100, 80), 80, 100, 0.2) == (0, 0, 80, 100)  # clipped
    assert photos.crop_window((10.4, 10.6, 29.5, 19.2), 40, 60, 0.0) == (10, 10, 20, 30)  # out
    assert photos.crop_window((70, 70, 90, 90), 50, 50, 0.0) == (49, 49, 50, 50)  # >= 1 px
    image = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    assert np.array_equal(photos.crop(image, (10, 10, 30, 20)), image[9:21, 8:32])  # +10%
    assert photos.crop(image, None) is image and photos.crop(image, [-1, -1, -1, -1]) is image


def test_resize_is_antialiased_bilinear_like_tensorflows():
    """Against ``tf.image.resize(antialias=True)`` (bilinear): the same filter, Pillow rounds
    to 8 bits. A stripe pattern finer than the output grid averages to grey."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    for size in (30, 64, 200):
        ours = photos.resize(image, size)
        reference = tf.image.resize(image, [size, size], antialias=True).numpy()
        assert ours.shape == (size, size, 3) and ours.dtype == np.uint8
        assert np.abs(ours - reference).max() <= 1.5
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255
    assert np.abs(photos.resize(stripes, 8).astype(float) - 127.5).max() < 6  # edges: 123, 132
    square = image[:90, :90]
    assert photos.resize(square, 90) is square  # already the size: unchanged


def test_prepare_is_read_crop_resize(tmp_path):
    rng = np.random.default_rng(2)
    original = rng.integers(0, 256, (50, 80, 3), dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(original).save(encoded, "PNG")
    (tmp_path / "p.png").write_bytes(encoded.getvalue())
    box = (20, 10, 60, 40)
    expected = photos.resize(photos.crop(original, box), 32)
    assert np.array_equal(photos.prepare(tmp_path / "p.png", box, 32), expected)
    assert np.array_equal(photos.prepare(encoded.getvalue(), box, 32), expected)
    assert np.array_equal(photos.prepare(original, box, 32), expected)
    assert np.array_equal(photos.prepare(tmp_path / "p.png", box), photos.crop(original, box))
    assert np.array_equal(photos.prepare(tmp_path / "p.png", margin=0.5), original)  # no box


def test_a_large_jpeg_is_decoded_at_the_scale_its_crop_needs(tmp_path):
    """A 1600 x 1200 JPEG for a 100 px input: decoded at 1/8 for the whole photo (150 px
    short side), at 1/2 for a 300 px box (its crop keeps >= 100 px); the result stays close to
    the full-resolution path, box placed in the reduced pixels alike; PNGs are never reduced."""
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    photo = np.asarray(Image.fromarray(small).resize((1600, 1200), Image.Resampling.BICUBIC))
    Image.fromarray(photo).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(photo).save(tmp_path / "big.png")
    path = tmp_path / "big.jpg"
    assert photos._decode(path, min_side=100)[1] == 1 / 8
    box = (400, 300, 700, 600)  # 300 x 300, +10%: 360 px a side
    image, scale = photos._decode(path, box=box, min_side=100)
    assert scale == 1 / 2 and image.size == (800, 600)
    assert photos._decode(tmp_path / "big.png", box=box, min_side=100)[1] == 1.0
    for crop_box in (None, box):
        reduced = photos.prepare(path, crop_box, 100).astype(float)
        full = photos.prepare(path, crop_box, 100, min_side=0).astype(float)
        assert np.abs(reduced - full).mean() < 3.0  # the same picture, as a resize changes it
    # stored a quarter turned with EXIF 6: the box is in the upright photo's pixels
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(photo, k=1).copy()).save(
        tmp_path / "turned.jpg", quality=95, exif=exif
    )
    turned = photos.prepare(tmp_path / "turned.jpg", box, 100).astype(float)
    assert np.abs(turned - photos.prepare(path, box, 100, min_side=0)).mean() < 3.0


def test_the_model_input_beside_the_full_crop_is_the_pipelines(tmp_path):
    """identify needs both: the model input exactly as ``prepare(.., size)`` gives it to the
    training pipeline (a reduced decode for a large JPEG) and the full-resolution crop."""
    rng = np.random.default_rng(4)
    photo = rng.integers(0, 256, (900, 1200, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "big.jpg", quality=90)
    Image.fromarray(photo[:200, :300]).save(tmp_path / "small.jpg", quality=90)
    for name, box in (("big.jpg", (100, 100, 700, 500)), ("big.jpg", None), ("small.jpg", None)):
        model_input, whole = photos.prepare_with_crop(tmp_path / name, box, 64)
        assert np.array_equal(model_input, photos.prepare(tmp_path / name, box, 64))
        assert np.array_equal(whole, photos.prepare(tmp_path / name, box))


def test_a_cache_entry_holds_the_models_crop_with_room_for_a_jittered_box():
    """200 x 100 photo, box (50, 20, 150, 80), margin 0.1, a 20 px crop: the crop is the box
    grown to (40, 14, 160, 86), 120 x 72 px, so 1/6 and 5/18 of a pixel per photo pixel; room
    for a jitter of 0.05 is the box grown by 0.16 (34, 10, 166, 90 after rounding out), which
    leaves 6 and 4 photo pixels a side: one cache pixel each."""
    assert photos.headroom_margin(0.1, 0.05) == pytest.approx(0.16)
    rng = np.random.default_rng(5)
    photo = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    box = (50, 20, 150, 80)
    image, cache_box = photos.prepare_cache_entry(photo, box, 20, 0.1, box_jitter=0.05)
    assert image.shape == (22, 22, 3)
    np.testing.assert_allclose(cache_box, (16 / 6, 1 + 6 * 5 / 18, 1 + 110 / 6, 1 + 66 * 5 / 18))
    assert photos.crop_window(np.float32(cache_box), 22, 22, 0.1) == (1, 1, 21, 21)
    # no jitter: prepare's own image, whose box grown by the margin is all of it
    plain, plain_box = photos.prepare_cache_entry(photo, box, 20, 0.1)
    assert np.array_equal(plain, photos.prepare(photo, box, 20, 0.1))
    assert photos.crop_window(np.float32(plain_box), 20, 20, 0.1) == (0, 0, 20, 20)
    # a box at the photo's edge has no room on that side; no box: the whole photo
    edge, edge_box = photos.prepare_cache_entry(photo, (0, 20, 100, 80), 20, 0.1, 0.05)
    assert edge_box[0] == 0 and photos.crop_window(np.float32(edge_box), *edge.shape[:2])[1] == 0
    whole, none = photos.prepare_cache_entry(photo, None, 20, 0.1, 0.05)
    assert none is None and np.array_equal(whole, photos.prepare(photo, None, 20))
    with pytest.raises(ValueError, match="box_jitter must be >= 0"):
        photos.prepare_cache_entry(photo, box, 20, 0.1, -0.1)


def test_cache_entries_of_many_boxes_hold_the_models_crop_exactly_where_reduced():
    """Random boxes, at the edges too, on a photo larger than the crop: every entry reads back
    with crop_window as the model's crop at exactly the cache's size (the box stored as
    float32, as the records do)."""
    rng = np.random.default_rng(11)
    photo = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    for _ in range(200):
        left, right = np.sort(rng.uniform(-20, 440, 2))
        top, bottom = np.sort(rng.uniform(-20, 320, 2))
        box = (max(0.0, left), max(0.0, top), min(420.0, right), min(300.0, bottom))
        if box[2] - box[0] < 60 or box[3] - box[1] < 60:
            continue
        image, cache_box = photos.prepare_cache_entry(photo, box, 40, 0.1, box_jitter=0.05)
        window = photos.crop_window(np.float32(cache_box), *image.shape[:2], 0.1)
        assert (window[2] - window[0], window[3] - window[1]) == (40, 40), (box, window)
