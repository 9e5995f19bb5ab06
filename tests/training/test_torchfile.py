"""Reading legacy torch.save state dicts without torch: files the test writes in that format,
tampered files (refused, naming the file and the problem), and the shipped ImageNet checkpoint."""

import collections
import io
import pickle
import zipfile

import numpy as np
import pytest

from whaleutils.training import efficientnet_lite, torchfile


def test_round_trip(tmp_path):
    tensors = {
        "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "fc.bias": np.array([0.5, -1.5], dtype=np.float64),
    }
    path = torchfile.save_state_dict(tmp_path / "w.pth", tensors)
    loaded = torchfile.load_state_dict(path)
    assert list(loaded) == list(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)
    with pytest.raises(FileExistsError):
        torchfile.save_state_dict(path, tensors)


def write_views(path, views, storage_numel=6, extra=b""):
    """A state dict whose tensors are views (offset, size, stride) of one float32 storage
    holding 0, 1, ..., storage_numel - 1."""
    storage = torchfile._Storage("0", np.dtype(np.float32), storage_numel,
                                 np.arange(storage_numel, dtype=np.float32))  # fmt: skip
    rebuild = torchfile._Global("torch._utils", "_rebuild_tensor_v2")
    state = collections.OrderedDict(
        (name, torchfile._Reduce(rebuild, (storage, offset, size, stride, False, {})))
        for name, (offset, size, stride) in views.items()
    )
    buffer = io.BytesIO()
    system = {"protocol_version": 1001, "little_endian": True, "type_sizes": {}}
    for header in (torchfile.MAGIC_NUMBER, 1001, system):
        pickle.dump(header, buffer, protocol=2)
    torchfile._TorchPickler(buffer, {np.dtype(np.float32): "FloatStorage"}).dump(state)
    pickle.dump(["0"], buffer, protocol=2)
    buffer.write(np.int64(storage_numel).tobytes() + storage.data.tobytes() + extra)
    path.write_bytes(buffer.getvalue())
    return path


def test_views_share_a_storage_with_offsets_and_strides(tmp_path):
    path = write_views(
        tmp_path / "v.pth",
        {"matrix": (0, (2, 3), (3, 1)), "transposed": (0, (3, 2), (1, 3)), "tail": (4, (2,), (1,))},
    )
    loaded = torchfile.load_state_dict(path)
    np.testing.assert_array_equal(loaded["matrix"], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(loaded["transposed"], [[0, 3], [1, 4], [2, 5]])
    np.testing.assert_array_equal(loaded["tail"], [4, 5])


@pytest.mark.parametrize(
    ("views", "extra", "message"),
    [
        ({"x": (4, (2, 2), (2, 1))}, b"", r"tensor x \(offset 4, size \(2, 2\), stride \(2, 1\)\) reaches beyond its storage of 6"),
        ({"x": (0, (6,), (1,))}, b"\x00", "1 unexpected bytes after the last storage"),
    ],
)  # fmt: skip
def test_bad_views_and_trailing_bytes_are_refused(tmp_path, views, extra, message):
    path = write_views(tmp_path / "bad.pth", views, extra=extra)
    with pytest.raises(torchfile.TorchFileError, match=message) as caught:
        torchfile.load_state_dict(path)
    assert str(path) in str(caught.value)


class Malicious:
    def __reduce__(self):
        import os

        return os.system, ("echo owned",)


def test_a_pickle_naming_any_other_global_is_refused(tmp_path):
    buffer = io.BytesIO()
    for header in (torchfile.MAGIC_NUMBER, 1001, {"little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    pickle.dump(collections.OrderedDict(x=Malicious()), buffer, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(
        torchfile.TorchFileError, match=r"evil.pth: refuses to load the global (posix|os)\.system"
    ):
        torchfile.load_state_dict(path)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ((12345, 1001, {"little_endian": True}), "wrong magic number"),
        ((torchfile.MAGIC_NUMBER, 1000, {"little_endian": True}), "protocol version 1000"),
        ((torchfile.MAGIC_NUMBER, 1001, {"little_endian": False}), "not written little-endian"),
    ],
)
def test_headers_are_checked(tmp_path, headers, message):
    buffer = io.BytesIO()
    for header in headers:
        pickle.dump(header, buffer, protocol=2)
    path = tmp_path / "h.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(torchfile.TorchFileError, match=message):
        torchfile.load_state_dict(path)


def test_a_truncated_file_says_where_it_ends(tmp_path):
    path = torchfile.save_state_dict(tmp_path / "w.pth", {"w": np.ones(100, np.float32)})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(torchfile.TorchFileError, match="ends inside storage 0"):
        torchfile.load_state_dict(path)


def test_the_shipped_imagenet_checkpoint():
    state = torchfile.load_state_dict(efficientnet_lite.imagenet_weights_path())
    floats = [v for v in state.values() if v.dtype == np.float32]
    assert len(state) == 296 and sum(v.size for v in floats) == 4_694_024
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)


def test_zip_format_round_trip(tmp_path):
    tensors = {
        "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    path = torchfile.save_state_dict(tmp_path / "w.pt", tensors, zip_format=True)
    assert zipfile.is_zipfile(path)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == [
            "archive/byteorder", "archive/data.pkl", "archive/data/0", "archive/data/1",
            "archive/version",
        ]  # fmt: skip
    loaded = torchfile.load_state_dict(path)
    assert list(loaded) == list(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)


def rewrite_zip(source, target, replace=None, drop=(), add=None):
    """A copy of a zip archive with some entries replaced, dropped or added."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            if name not in drop:
                new.writestr(name, replace.get(name, old.read(name)))
        for name, data in add.items():
            new.writestr(name, data)
    return target


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"replace": {"archive/data/0": b"\x00" * 8}}, "storage 0 holds 8 bytes, the tensors say 16"),
        ({"drop": ["archive/data/0"]}, "its storages and the tensors disagree on archive/data/0"),
        ({"add": {"archive/data/9": b"1234"}}, "disagree on archive/data/9"),
        ({"replace": {"archive/byteorder": b"big"}}, "not written little-endian"),
        ({"drop": ["archive/data.pkl"]}, r"no single <folder>/data.pkl"),
        ({"replace": {"archive/data.pkl": pickle.dumps({"x": Malicious()}, protocol=2)}},
         r"refuses to load the global (posix|os)\.system"),
    ],
)  # fmt: skip
def test_tampered_zip_files_are_refused(tmp_path, change, message):
    good = torchfile.save_state_dict(tmp_path / "good.pt", {"w": np.ones(4, np.float32)}, True)
    path = rewrite_zip(good, tmp_path / "bad.pt", **change)
    with pytest.raises(torchfile.TorchFileError, match=message) as caught:
        torchfile.load_state_dict(path)
    assert str(path) in str(caught.value)


def test_a_corrupted_zip_entry_is_refused(tmp_path):
    path = torchfile.save_state_dict(
        tmp_path / "w.pt", {"w": np.arange(64, dtype=np.float32)}, True
    )
    raw = bytearray(path.read_bytes())
    offset = raw.find(np.arange(64, dtype=np.float32).tobytes())  # stored, not compressed
    raw[offset + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(torchfile.TorchFileError, match=r"w.pt: cannot read archive/data/0"):
        torchfile.load_state_dict(path)
