"""Caches of named arrays that survive a kill, a second process and a file that lies.

A :class:`PartedCache` keeps its entries (key -> value) in one ``.npz`` file and in the *parts*
saved since that file was written: work is saved as it finishes, a chunk at a time
(:meth:`PartedCache.save_part`), so a run killed after hours loses at most the chunk it was
on; :meth:`PartedCache.save` folds the parts into the one file when enough of them have piled
up (:meth:`PartedCache.compaction_due`). Every file is written under a name of this process's
own and renamed into place (:func:`write_npz`), so no reader ever sees half a file; two
processes sharing a cache only ever cost each other recomputation, never a wrong entry. A
file made with other settings is ignored; an unreadable one is named in a warning and never
trusted::

    cache = EmbeddingCache(folder / "catalogue_embeddings.npz", settings)
    for chunk in chunks_of(todo):
        cache.entries.update(compute(chunk))
        cache.save_part(chunk)
    cache.save(keep=current_keys)      # folds the parts in, when due
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

PART_MARK = ".part-"
MAX_PARTS = 16  # part files beyond which they are folded into the one file
COMPACT_SHARE = 0.1  # parts' (or stale) entries, as a share of the file's, that fold them in
READ_ERRORS = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile)


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` to ``path`` (``np.savez``) under a private name, flushed to disk, then
    renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(partial, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def part_files(path: str | os.PathLike) -> list[Path]:
    """The parts saved beside the cache file ``path`` (``<stem>.part-<pid>-<tag>.npz``), oldest
    first."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    found = [p for p in path.parent.glob(f"{path.stem}{PART_MARK}*.npz") if p.is_file()]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


class PartedCache:
    """Entries (key -> value) in one ``.npz`` file plus its parts, tied to ``settings`` (text).

    Subclasses say how entries become arrays (:meth:`encode`) and back (:meth:`decode`).
    ``entries`` holds every readable entry made with these settings; :meth:`add` puts a new one
    in (``computed`` counts them, ``unsaved`` names those in no file yet). ``set_aside``: an
    unreadable cache file is moved to ``<name>.unreadable`` (else left to be overwritten)."""

    kind = "cache"
    set_aside = False

    def __init__(self, path: str | os.PathLike | None, settings: str):
        self.path = None if path is None else Path(path)
        self.settings = settings
        self.entries: dict = {}
        self.computed = 0
        self.unsaved: set[str] = set()
        self.in_file = 0  # entries of the one file
        self.parts: list[Path] = []  # parts read or saved, folded in by save()
        self.in_parts = 0
        if self.path is None:
            return
        if self.path.is_file():
            self.entries = self._read(self.path, main=True)
            self.in_file = len(self.entries)
        for part in part_files(self.path):
            found = self._read(part, main=False)
            if found is None:  # made with other settings: another process's, left alone
                continue
            self.entries.update(found)
            self.parts.append(part)
            self.in_parts += len(found)

    # -------------------------------------------------------------- what a subclass says
    def encode(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def decode(self, stored) -> dict:
        """The entries of an open ``.npz`` file; raises ValueError when it is inconsistent."""
        raise NotImplementedError

    def add(self, key: str, value) -> None:
        self.entries[key] = value
        self.unsaved.add(key)
        self.computed += 1

    # -------------------------------------------------------------- files
    def _read(self, file: Path, main: bool) -> dict | None:
        try:
            with np.load(file, allow_pickle=False) as stored:
                if str(stored["settings"]) != self.settings:
                    return {} if main else None
                return self.decode(stored)
        except READ_ERRORS as error:
            if main and self.set_aside:
                aside = file.with_name(file.name + ".unreadable")
                os.replace(file, aside)
                note = f"moved to {aside.name}, rebuilding"
            elif main:
                note = "rebuilt"
            else:  # a part is this cache's own scratch: dropped
                file.unlink(missing_ok=True)
                note = "deleted, its entries recomputed"
            warnings.warn(f"{file}: unreadable {self.kind} ({error}); {note}", stacklevel=4)
            return {}

    def save_part(self, keys: Iterable[str]) -> Path | None:
        """Save the entries of ``keys`` as a new part (nothing when there are none)."""
        keys = [key for key in keys if key in self.entries]
        self.unsaved.difference_update(keys)
        if self.path is None or not keys:
            return None
        part = self.path.with_name(
            f"{self.path.stem}{PART_MARK}{os.getpid()}-{os.urandom(4).hex()}.npz"
        )
        write_npz(part, settings=np.array(self.settings), **self.encode(keys))
        self.parts.append(part)
        self.in_parts += len(keys)
        return part

    def compaction_due(self, keep: Sequence[str] | None = None) -> bool:
        """Whether :meth:`save` should fold the parts in: more than :data:`MAX_PARTS` of them,
        their entries (or the file's entries no longer in ``keep``) over :data:`COMPACT_SHARE`
        of the file's, or no file yet."""
        if self.path is None:
            return False
        stale = 0 if keep is None else len(set(self.entries) - set(keep))
        if not self.path.is_file():
            return bool(self.entries)
        limit = COMPACT_SHARE * max(self.in_file, 1)
        return len(self.parts) > MAX_PARTS or self.in_parts > limit or stale > limit

    def save(self, keep: Sequence[str] | None = None, force: bool = False) -> Path | None:
        """Write the one file (only ``keep``'s entries, if given) and delete the parts it now
        holds, when :meth:`compaction_due` (or ``force``); else save the entries no file holds
        yet as a part. Returns the path written, if any."""
        if self.path is None:
            return None
        if not (force or self.compaction_due(keep)):
            return self.save_part(sorted(self.unsaved))
        keys = list(self.entries) if keep is None else [k for k in keep if k in self.entries]
        write_npz(self.path, settings=np.array(self.settings), **self.encode(keys))
        for part in self.parts:
            part.unlink(missing_ok=True)
        self.parts, self.in_parts, self.in_file = [], 0, len(keys)
        self.unsaved.clear()
        return self.path
