"""Local features: RootSIFT, the geometric check, LNBNN over a FLANN index, the cache."""

import cv2
import numpy as np
import pytest

from whaleutils.retrieval import local_features as lf


def textured(seed: int, size: int = 224) -> np.ndarray:
    """A photo-like RGB image: blurred noise (blobs and corners SIFT finds), a few ellipses."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size // 8, size // 8), dtype=np.uint8)
    base = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        centre = tuple(int(v) for v in rng.integers(10, size - 10, 2))
        axes = tuple(int(v) for v in rng.integers(4, 20, 2))
        cv2.ellipse(
            base, centre, axes, float(rng.uniform(0, 180)), 0, 360, int(rng.integers(0, 256)), -1
        )
    return np.repeat(base[..., None], 3, axis=2)


def rotated_crop(image: np.ndarray, degrees: float, crop: int) -> np.ndarray:
    """The image turned by ``degrees`` about its centre, ``crop`` px cut off each side."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    turned = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)
    return turned[crop : h - crop, crop : w - crop]


def test_root_sift_is_the_square_root_of_l1_normalised_sift():
    features = lf.extract(textured(0))
    assert len(features) > 50
    raw = features.raw.astype(np.float64)
    expected = np.sqrt(raw / raw.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(features.descriptors, expected, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, rtol=1e-5)
    plain = lf.extract(textured(0), lf.FeatureSettings(root_sift=False))
    np.testing.assert_array_equal(plain.descriptors, features.raw.astype(np.float32))


def test_keypoints_are_in_the_resized_frame():
    big = cv2.resize(textured(1), (448, 448), interpolation=cv2.INTER_CUBIC)
    features = lf.extract(big, lf.FeatureSettings(max_side=224))
    assert features.scale == 0.5
    assert features.points.max() < 224 and features.points.min() >= 0
    assert len(lf.extract(big, lf.FeatureSettings(max_side=224, max_keypoints=20))) <= 22


def test_a_photo_matches_its_own_rotated_cropped_copy_and_not_another():
    original = lf.extract(textured(2))
    copy = lf.extract(rotated_crop(textured(2), 20, 16))
    other = lf.extract(textured(3))
    same = lf.verify(copy, original)
    different = lf.verify(copy, other)
    assert same.inliers >= 30 and same.inliers <= same.matches
    assert different.inliers <= 8
    # the recovered transform is the rotation: copy point -> original point
    turn = np.degrees(np.arctan2(same.transform[1, 0], same.transform[0, 0]))
    assert turn == pytest.approx(20, abs=2)
    # pairs are the inliers' coordinates, consistent with the transform
    source, target = same.pairs[:, 0], same.pairs[:, 1]
    mapped = source @ same.transform[:, :2].T + same.transform[:, 2]
    assert np.abs(mapped - target).max() <= 5.6 + 1e-3
    for transform in ("similarity", "homography"):
        assert lf.verify(copy, original, transform=transform).inliers >= 30
    again = lf.verify(copy, original)
    assert again.inliers == same.inliers  # deterministic (seeded RANSAC)


def plain(descriptors) -> lf.PhotoFeatures:
    """Features compared by their descriptors as given (float32, no RootSIFT)."""
    values = np.asarray(descriptors, np.float32)
    return lf.PhotoFeatures(np.zeros((len(values), 2), np.float32), values, 1.0, root_sift=False)


def test_the_ratio_test_by_hand():
    candidate = plain([[0, 0], [10, 0], [0, 10]])
    # nearest 1 away, second 9: kept; all three 7.07 away (a tie): dropped; 1 and 10.05:
    # kept; 4 and 6 (ratio 0.67): kept at 0.8, dropped at 0.6
    query = plain([[1, 0], [5, 5], [10, 1], [4, 0]])
    assert lf.ratio_matches(query, candidate, ratio=0.8).tolist() == [[0, 0], [2, 1], [3, 0]]
    assert lf.ratio_matches(query, candidate, ratio=0.6).tolist() == [[0, 0], [2, 1]]
    assert lf.ratio_matches(query, plain([[0, 0]])).shape == (0, 2)  # no second nearest
    assert lf.ratio_matches(plain(np.zeros((0, 2))), candidate).shape == (0, 2)


def test_verify_needs_enough_matches_and_names_a_bad_transform():
    empty = lf.PhotoFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), 1.0)
    assert lf.verify(empty, lf.extract(textured(4))).inliers == 0
    flat = lf.extract(np.full((64, 64, 3), 128, np.uint8))
    assert len(flat) == 0 and lf.verify(flat, flat).pairs.shape == (0, 2, 2)
    with pytest.raises(ValueError, match="transform must be one of"):
        lf.verify(flat, flat, transform="perspective")


def test_draw_matches_puts_the_photos_side_by_side_and_joins_the_pairs():
    query = np.zeros((40, 30, 3), np.uint8)
    candidate = np.full((60, 50), 100, np.uint8)  # grayscale: drawn as RGB
    pairs = np.array([[[5, 5], [10, 50]], [[25, 30], [40, 8]]], np.float32)
    drawn = lf.draw_matches(query, candidate, pairs)
    assert drawn.shape == (60, 80, 3) and drawn.dtype == np.uint8
    assert (drawn[45:, :30] == 255).all()  # below the shorter photo: white
    assert (drawn[:5, 32:35] == 100).all()  # the candidate, untouched away from the lines
    colours = [tuple(drawn[5, 5]), tuple(drawn[50, 30 + 10]), tuple(drawn[30, 25])]
    assert colours[0] == colours[1] != colours[2]  # each pair one colour, at both ends
    assert all(max(c) > 200 for c in colours)
    assert (lf.draw_matches(query, candidate, np.zeros((0, 2, 2)))[:40, :30] == 0).all()


def test_lnbnn_by_hand():
    """Two gallery photos of individuals a and b, one descriptor each; the query's descriptor is
    nearest a's at distance 1 with b's next at distance 3: a earns 3 - 1 = 2."""

    def photo(vector):
        return lf.PhotoFeatures(np.zeros((1, 2), np.float32), np.array([vector], np.uint8), 1.0,
                                root_sift=False)  # fmt: skip

    a, b = np.zeros(128, np.uint8), np.zeros(128, np.uint8)
    a[0], b[0] = 10, 14
    query = np.zeros(128, np.uint8)
    query[0] = 11
    for engine in lf.DESCRIPTOR_ENGINES:
        index = lf.DescriptorIndex([photo(a), photo(b)], ["a", "b"], engine=engine)
        # faiss compares 8-bit codes: 10 and 14 are its range's ends, 11 is within a step
        np.testing.assert_allclose(index.lnbnn(photo(query)), [2.0, 0.0], atol=0.02)
        # with a's photo left out, b is nearest and nothing is left as the normaliser
        np.testing.assert_allclose(index.lnbnn(photo(query), exclude_photos=[0]), [0.0, 0.0])


@pytest.mark.slow
def test_faiss_neighbours_agree_with_exact_search_in_a_quarter_of_the_memory():
    """faiss' inverted file of 8-bit codes, on 200 photos' RootSIFT (about 40,000 descriptors,
    lists of about 200): nearly every descriptor's nearest neighbour is exact search's, at
    distances within the codes' step; LNBNN names the same whale; a query whose probed lists
    hold fewer than asked gets -1 rows, which LNBNN skips."""
    photos = [lf.extract(textured(seed)) for seed in range(200)]
    labels = [f"w{seed // 2}" for seed in range(200)]
    exact = lf.DescriptorIndex(photos, labels, exact=True)
    approximate = lf.DescriptorIndex(photos, labels, engine="faiss")
    assert approximate.descriptors is None and len(approximate) == len(exact)
    assert approximate._index.nlist == lf.faiss_lists(len(exact)) == 256
    assert approximate._index.code_size == 128  # one byte per value: float32's quarter
    query = lf.extract(rotated_crop(textured(6), 10, 8))
    exact_rows, exact_distances = exact.neighbours(query.descriptors, 2)
    rows, distances = approximate.neighbours(query.descriptors, 2)
    assert (rows[:, 0] == exact_rows[:, 0]).mean() > 0.9
    agree = rows[:, 0] == exact_rows[:, 0]
    np.testing.assert_allclose(distances[agree, 0], exact_distances[agree, 0], atol=0.01)
    scores, reference = approximate.lnbnn(query), exact.lnbnn(query)
    assert (
        approximate.individuals[np.argmax(scores)]
        == "w3"
        == exact.individuals[np.argmax(reference)]
    )
    assert np.corrcoef(scores, reference)[0, 1] > 0.95
    narrow = lf.DescriptorIndex(photos, labels, engine="faiss", probes=1)
    rows, distances = narrow.neighbours(query.descriptors, 400)
    assert (rows == -1).any() and np.isinf(distances[rows == -1]).all()
    assert np.isfinite(narrow.lnbnn(query, k=390)).all()
    assert lf.DescriptorIndex(photos[:4], labels[:4], engine="auto").engine == "flann"
    with pytest.raises(ValueError, match="engine must be one of"):
        lf.DescriptorIndex(photos[:2], labels[:2], engine="annoy")


def test_faiss_lists_grow_as_the_square_root_within_bounds():
    assert [lf.faiss_lists(n) for n in (0, 39, 40, 1_000, 40_000, 15_000_000)] == [
        1, 1, 1, 25, 256, 4096,
    ]  # fmt: skip


def test_flann_neighbours_agree_with_exact_search():
    photos = [lf.extract(textured(seed)) for seed in range(6)]
    labels = ["x", "x", "y", "y", "z", "z"]
    exact = lf.DescriptorIndex(photos, labels, exact=True)
    flann = lf.DescriptorIndex(photos, labels, checks=256)
    query = lf.extract(rotated_crop(textured(2), 10, 8)).descriptors
    exact_rows, exact_distances = exact.neighbours(query, 2)
    flann_rows, flann_distances = flann.neighbours(query, 2)
    # FLANN never finds a nearer neighbour than exact search, and finds the nearest (or one
    # as near) for most descriptors
    assert (flann_distances[:, 0] >= exact_distances[:, 0] - 1e-4).all()
    found = flann_distances[:, 0] <= exact_distances[:, 0] + 1e-4
    assert found.mean() > 0.9
    agree = exact_rows[:, 0] == flann_rows[:, 0]
    np.testing.assert_allclose(flann_distances[agree, 0], exact_distances[agree, 0], atol=1e-4)
    scores = flann.lnbnn(lf.extract(rotated_crop(textured(2), 10, 8)))
    assert flann.individuals[np.argmax(scores)] == "y"  # seed 2 is y's first photo


def test_one_set_of_photos_gives_one_index_in_any_order():
    """FLANN's approximate search depends on the order of its rows and its random state: the
    index orders the photos itself and grows its trees from a fixed seed, so a gallery listed
    in another order (identify's catalogue against notebook 04's gallery) or built again gives
    the same LNBNN scores; ``exclude_photos`` still counts the caller's positions."""
    photos = [lf.extract(textured(seed)) for seed in range(8)]
    labels = ["x", "x", "y", "y", "z", "z", "w", "w"]
    query = lf.extract(rotated_crop(textured(2), 10, 8))
    reference = lf.DescriptorIndex(photos, labels)
    expected = reference.lnbnn(query)
    np.testing.assert_array_equal(lf.DescriptorIndex(photos, labels).lnbnn(query), expected)
    order = [5, 2, 7, 0, 3, 6, 1, 4]
    shuffled = lf.DescriptorIndex([photos[i] for i in order], [labels[i] for i in order])
    np.testing.assert_array_equal(shuffled.individuals, reference.individuals)
    np.testing.assert_array_equal(shuffled.lnbnn(query), expected)
    without_own = reference.lnbnn(query, exclude_photos=[2])  # photo 2 is the query's original
    np.testing.assert_array_equal(
        shuffled.lnbnn(query, exclude_photos=[order.index(2)]), without_own
    )
    assert (
        without_own[list(reference.individuals).index("y")]
        < expected[list(reference.individuals).index("y")]
    )


def test_the_cache_returns_what_extraction_computes_and_recomputes_only_what_changed(tmp_path):
    settings = lf.FeatureSettings(max_side=160)
    images = [textured(seed) for seed in range(3)]
    cache = lf.FeatureCache(tmp_path / lf.CACHE_FILE, settings)
    first = cache.features(["a", "b", "c"], lambda i: images[i])
    assert cache.computed == 3
    cache.save()
    again = lf.FeatureCache(tmp_path / lf.CACHE_FILE, settings)
    read = again.features(["a", "b", "c", "d"], lambda i: textured(9))
    assert again.computed == 1  # only the new photo
    for stored, fresh in zip(read[:3], first, strict=True):
        np.testing.assert_array_equal(stored.raw, fresh.raw)
        np.testing.assert_array_equal(stored.points, fresh.points)
        np.testing.assert_array_equal(stored.descriptors, fresh.descriptors)
    other = lf.FeatureCache(tmp_path / lf.CACHE_FILE, lf.FeatureSettings(max_side=224))
    assert other.entries == {}  # written with other settings: not trusted
    (tmp_path / lf.CACHE_FILE).write_bytes(b"PK\x03\x04 not a zip")
    with pytest.warns(UserWarning, match="unreadable feature cache"):
        broken = lf.FeatureCache(tmp_path / lf.CACHE_FILE, settings)
    assert broken.entries == {}
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_lnbnn_name_rule_by_hand():
    """Gallery descriptors on a line at 10 (a), 12 (a), 15 (b), query at 11. With k = 1:
    ``next`` normalises by a's second photo (distance 1, so a earns 1 - 1 = 0), HotSpotter's
    ``name`` rule by b's (distance 4: a earns 4 - 1 = 3). With k = 2 both first neighbours are
    a's: a earns once, 4 - 1 = 3 (name; ``next`` normalises by b as well here)."""

    def photo(value):
        vector = np.zeros((1, 128), np.uint8)
        vector[0, 0] = value
        return lf.PhotoFeatures(np.zeros((1, 2), np.float32), vector, 1.0, root_sift=False)

    index = lf.DescriptorIndex([photo(10), photo(12), photo(15)], ["a", "a", "b"], exact=True)
    query = photo(11)
    np.testing.assert_allclose(index.lnbnn(query, 1, normaliser="next"), [0.0, 0.0])
    np.testing.assert_allclose(index.lnbnn(query, 1, normaliser="name"), [3.0, 0.0])
    np.testing.assert_allclose(index.lnbnn(query, 2, normaliser="name"), [3.0, 0.0])
    np.testing.assert_allclose(index.lnbnn(query, 2, normaliser="next"), [3.0, 0.0])
    # all neighbours one whale's: the last searched normalises (nothing else to compare with)
    lone = lf.DescriptorIndex([photo(10), photo(12)], ["a", "a"], exact=True)
    np.testing.assert_allclose(lone.lnbnn(query, 1, normaliser="name"), [0.0])
    with pytest.raises(ValueError, match="normaliser must be one of"):
        index.lnbnn(query, normaliser="nearest")


def test_xfeat_features_match_a_rotated_copy_and_survive_the_cache(tmp_path):
    settings = lf.FeatureSettings(detector="xfeat")
    original = lf.extract(textured(2), settings)
    copy = lf.extract(rotated_crop(textured(2), 20, 16), settings)
    other = lf.extract(textured(3), settings)
    assert original.raw.shape[1:] == (64,) and original.raw.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(original.descriptors, axis=1), 1, rtol=1e-5)
    same, different = lf.verify(copy, original), lf.verify(copy, other)
    assert same.inliers >= 20 and different.inliers <= 8, (same.inliers, different.inliers)
    index = lf.DescriptorIndex([original, other], ["a", "b"])
    scores = index.lnbnn(copy)
    assert scores[0] > scores[1]
    cache = lf.FeatureCache(tmp_path / lf.CACHE_FILE, settings)
    cache.features(["a"], lambda i: textured(2))
    cache.save()
    stored = lf.FeatureCache(tmp_path / lf.CACHE_FILE, settings).entries["a"]
    np.testing.assert_array_equal(stored.raw, original.raw)
    # SIFT's settings never read XFeat's cache, and a thin strip has no keypoints
    assert lf.FeatureCache(tmp_path / lf.CACHE_FILE, lf.FeatureSettings()).entries == {}
    assert len(lf.extract(np.zeros((20, 224, 3), np.uint8), settings)) == 0
    with pytest.raises(ValueError, match="detector must be one of"):
        lf.FeatureSettings(detector="orb")
