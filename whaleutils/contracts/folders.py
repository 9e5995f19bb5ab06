"""New folders written whole or not at all: the one rule every writer of a new folder follows;
and the lock of a folder that one process at a time may write (:class:`FolderLock`).

``prepare``, ``import`` and ``kaggle stage`` write their output into a hidden folder beside it
and rename it into place when complete, so a failure or a kill never leaves a half-written
folder the rerun would refuse as "not empty", and cleanup removes only the folder this
process made (named by its process id and a random tag, never found by a pattern)::

    with new_folder(out_dir) as building:
        (building / "train.csv").write_text(...)
    # here out_dir is complete; had the block raised, nothing would be there
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def new_folder(final: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield a new hidden folder beside ``final`` that becomes ``final`` when the block ends
    without an error; on an error it is removed and ``final`` is as it was.

    ``final`` must not exist or be an empty folder, unless ``replace``: then an existing
    ``final`` (the caller has checked it is its own) is swapped out, the new one in, and the
    old one removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{os.urandom(4).hex()}"
    building = final.parent / f".{final.name}.partial-{tag}"
    building.mkdir()
    try:
        yield building
        if replace and final.exists() and any(final.iterdir()):
            aside = final.parent / f".{final.name}.replaced-{tag}"
            os.rename(final, aside)
            os.rename(building, final)
            shutil.rmtree(aside)
        else:
            if final.is_dir():
                final.rmdir()  # empty: a rename needs the name free
            os.rename(building, final)
    finally:
        if building.exists():
            shutil.rmtree(building)


class FolderBusy(RuntimeError):
    """Another process holds a folder's lock (:class:`FolderLock`)."""


class FolderLock:
    """An exclusive advisory lock on the file ``path`` (created if missing), held in a ``with``
    block; the file holds the holder's process id.

    Waits up to ``wait`` seconds for another holder (0: not at all), then raises
    :attr:`busy_error` with :meth:`busy_message`, which names the holder. The lock is the
    operating system's (``flock``): it ends with the process that holds it, however that
    process ends, so a killed holder never leaves a folder locked."""

    busy_error = FolderBusy

    def __init__(self, path: str | os.PathLike, wait: float = 60.0):
        self.path = Path(path)
        self.wait = float(wait)
        self._handle = None

    def busy_message(self, holder: str) -> str:
        return (
            f"{self.path}: held by process {holder}; waited {self.wait:g} s (the lock is "
            f"released when that process ends)"
        )

    def __enter__(self) -> FolderLock:
        try:  # never through a link: the holder's process id would overwrite what it points at
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            if not self.path.is_symlink():
                raise
            raise OSError(
                error.errno, f"a lock file must not be a link ({os.readlink(self.path)})",
                str(self.path),
            ) from None  # fmt: skip
        handle = os.fdopen(descriptor, "r+")
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    handle.close()
                    raise self.busy_error(self.busy_message(holder)) from None
                time.sleep(0.05)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None
