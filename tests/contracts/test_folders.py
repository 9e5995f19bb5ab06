"""New folders written whole or not at all."""

import os

import pytest

from whaleutils.contracts import folders


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_new_folder_appears_only_when_complete(tmp_path):
    final = tmp_path / "out"
    with folders.new_folder(final) as building:
        (building / "a.txt").write_text("a")
        assert not final.exists() and building.parent == tmp_path
        assert building.name.startswith(".out.partial-")
    assert (final / "a.txt").read_text() == "a" and hidden(tmp_path) == []


def test_a_failure_leaves_nothing_and_an_empty_folder_is_filled(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError, match="cut"), folders.new_folder(final) as building:
        (building / "a.txt").write_text("a")
        raise RuntimeError("cut")
    assert not final.exists() and hidden(tmp_path) == []
    final.mkdir()  # new or empty: both are fine
    with folders.new_folder(final) as building:
        (building / "b.txt").write_text("b")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]


def test_replace_swaps_the_old_folder_out_only_on_success(tmp_path):
    final = tmp_path / "stage"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), folders.new_folder(final, replace=True) as building:
        (building / "new.txt").write_text("new")
        raise RuntimeError("cut")
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"] and hidden(tmp_path) == []
    with folders.new_folder(final, replace=True) as building:
        (building / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"] and hidden(tmp_path) == []
    # without replace, a folder with files is never emptied
    with pytest.raises(OSError), folders.new_folder(final):
        pass
    assert (final / "new.txt").read_text() == "new" and hidden(tmp_path) == []


HOLD_LOCK = """\
import sys, time
from whaleutils.contracts import folders
with folders.FolderLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def holder(lock_path, seconds):
    """A separate process that holds the lock for ``seconds`` (once it has printed "held")."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock_path), str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_locked_folder_is_refused_naming_its_holder_then_free_when_it_ends(tmp_path):
    lock = tmp_path / ".lock"
    process = holder(lock, 30)
    try:
        with pytest.raises(folders.FolderBusy, match=rf"held by process {process.pid}; waited 0 s"):
            with folders.FolderLock(lock, wait=0):
                pass
    finally:
        process.kill()  # killed, not finished: the lock ends with the process all the same
        process.wait()
    with folders.FolderLock(lock, wait=0) as held:
        assert lock.read_text() == str(os.getpid()) and held.path == lock


def test_a_lock_waits_for_its_holder_up_to_its_wait(tmp_path):
    lock = tmp_path / ".lock"
    process = holder(lock, 1)
    with pytest.raises(folders.FolderBusy):  # held now
        with folders.FolderLock(lock, wait=0):
            pass
    with folders.FolderLock(lock, wait=30):  # taken once the holder has let go
        assert lock.read_text() == str(os.getpid())
    process.wait()


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("field notes\n")
    lock = tmp_path / ".lock"
    lock.symlink_to(precious)
    with pytest.raises(OSError, match="a lock file must not be a link") as refused:
        with folders.FolderLock(lock, wait=0):
            pass
    assert refused.value.filename == str(lock)
    assert precious.read_text() == "field notes\n"
