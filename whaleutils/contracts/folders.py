"""New folders written whole or not at all: the one rule every writer of a new folder follows.

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
import os
import shutil
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
