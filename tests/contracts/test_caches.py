"""PartedCache: entries saved a part at a time, folded into one file, never trusted blindly."""

import numpy as np
import pytest

from whaleutils.contracts import caches


class Numbers(caches.PartedCache):
    """The smallest cache: a number per key."""

    kind = "number cache"

    def encode(self, keys):
        return {
            "keys": np.array(keys, dtype=str),
            "values": np.array([self.entries[k] for k in keys]),
        }

    def decode(self, stored):
        if len(stored["keys"]) != len(stored["values"]):
            raise ValueError("keys and values disagree in length")
        return dict(zip(stored["keys"].tolist(), stored["values"].tolist(), strict=True))


def test_parts_are_read_back_and_folded_into_the_file_when_due(tmp_path):
    path = tmp_path / "numbers.npz"
    cache = Numbers(path, "v1")
    for key in "abc":
        cache.add(key, ord(key))
    assert cache.computed == 3 and cache.unsaved == {"a", "b", "c"}
    cache.save_part(["a", "b"])
    assert cache.unsaved == {"c"} and len(caches.part_files(path)) == 1
    # a second process sees the part; the entry no file holds is not there
    assert Numbers(path, "v1").entries == {"a": 97, "b": 98}
    assert cache.save() == path  # no file yet: due
    assert caches.part_files(path) == [] and Numbers(path, "v1").entries == {
        "a": 97,
        "b": 98,
        "c": 99,
    }


def test_compaction_is_due_past_a_tenth_of_the_file_or_sixteen_parts(tmp_path):
    path = tmp_path / "numbers.npz"
    cache = Numbers(path, "v1")
    for i in range(100):
        cache.add(f"k{i}", i)
    cache.save()
    cache = Numbers(path, "v1")
    assert cache.in_file == 100 and not cache.compaction_due()
    for i in range(100, 110):  # 10 new entries: a tenth, not more
        cache.add(f"k{i}", i)
        cache.save_part([f"k{i}"])
    assert not cache.compaction_due()
    assert cache.save() is None  # nothing unsaved: no part written either
    cache.add("k110", 110)
    assert cache.save().name.startswith("numbers.part-")  # 10 + 1 > 10: due next time
    again = Numbers(path, "v1")
    assert again.in_parts == 11 and again.compaction_due()
    keep = [f"k{i}" for i in range(50, 111)]  # 50 removed photos: stale, dropped from the file
    assert again.save(keep=keep) == path
    assert sorted(Numbers(path, "v1").entries) == sorted(keep) and not caches.part_files(path)
    many = Numbers(path, "v1")
    for i in range(17):  # few entries but many files
        many.add(f"m{i}", i)
        many.save_part([f"m{i}"])
    assert many.in_parts == 17 and many.compaction_due()


def test_other_settings_and_unreadable_files_are_never_trusted(tmp_path):
    path = tmp_path / "numbers.npz"
    other = Numbers(path, "v2")
    other.add("x", 1)
    part = other.save_part(["x"])
    cache = Numbers(path, "v1")
    assert cache.entries == {} and cache.parts == []  # another settings' part: left alone
    cache.add("a", 1)
    cache.save(force=True)
    assert part.is_file()  # not this cache's to delete
    bad = path.with_name("numbers.part-1-deadbeef.npz")
    bad.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.warns(UserWarning, match=r"numbers.part-1-deadbeef.npz: unreadable number cache"):
        read = Numbers(path, "v1")
    assert read.entries == {"a": 1} and not bad.exists()  # a broken part is scratch: deleted
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable number cache"):
        assert Numbers(path, "v1").entries == {}
    assert not list(tmp_path.glob(".*.tmp"))


def test_write_npz_leaves_the_old_file_when_writing_fails(tmp_path):
    class Unsaveable:
        def __reduce__(self):
            raise TypeError("cannot be pickled")

    path = caches.write_npz(tmp_path / "a.npz", values=np.arange(3))
    with pytest.raises(TypeError, match="cannot be pickled"):
        caches.write_npz(path, values=Unsaveable())  # fails halfway through the write
    np.testing.assert_array_equal(np.load(path)["values"], np.arange(3))
    assert not list(tmp_path.glob(".*.tmp"))
