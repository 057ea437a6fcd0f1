"""Atomic writes: a file or a result folder appears whole or not at all, with ordinary permissions; one
writer."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dispose.errors import UserError
from dispose.media.files import (
    MANIFEST,
    atomic_folder,
    atomic_path,
    atomic_write_text,
    check_writable_dir,
    ensure_folder,
    finished_outputs,
)


def test_written_file_has_umask_permissions(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_writer_replacing_the_temporary_file_keeps_ordinary_permissions(tmp_path):
    import torch
    from safetensors.torch import save_file

    target = tmp_path / "fields.safetensors"
    with atomic_path(target) as tmp:
        save_file({"x": torch.zeros(2)}, str(tmp))
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("encoder died")
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "out.txt", "x")


def _start(folder) -> None:
    with atomic_folder(folder):
        pass


def _siblings(folder):
    """Everything beside ``folder`` in its parent (partial folders, locks, backups would show here)."""
    return sorted(p.name for p in folder.parent.iterdir())


def test_folder_appears_whole_and_a_rerun_leaves_no_stale_file(tmp_path):
    out = tmp_path / "a" / "result"  # parents are created
    with atomic_folder(out) as tmp:
        assert not out.exists() and tmp.parent == out.parent
        for n in range(3):
            (tmp / "frames").mkdir(exist_ok=True)
            (tmp / "frames" / f"{n}.png").write_text("old")
        atomic_write_text(tmp / "poses.json", "{}")  # atomic files inside a folder being built
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        MANIFEST, "frames", "frames/0.png", "frames/1.png", "frames/2.png", "poses.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask
    with atomic_folder(out) as tmp:  # fewer frames this time
        (tmp / "frames").mkdir()
        (tmp / "frames" / "0.png").write_text("new")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [MANIFEST, "frames", "frames/0.png"]
    assert (out / "frames" / "0.png").read_text() == "new" and _siblings(out) == ["result"]
    assert finished_outputs()[-2:] == [out, out]


@pytest.mark.parametrize("interruption", [RuntimeError("encoder died"), KeyboardInterrupt()])
def test_failure_or_ctrl_c_leaves_the_earlier_result_or_nothing(tmp_path, interruption):
    out = tmp_path / "result"
    with pytest.raises(type(interruption)), atomic_folder(out) as tmp:
        (tmp / "half.png").write_text("half")
        raise interruption
    assert not out.exists() and _siblings(out) == []
    with atomic_folder(out) as tmp:
        (tmp / "poses.json").write_text("first")
    with pytest.raises(type(interruption)), atomic_folder(out) as tmp:
        (tmp / "poses.json").write_text("second")
        raise interruption
    assert (out / "poses.json").read_text() == "first" and _siblings(out) == ["result"]


def test_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path):
    out = tmp_path / "result"
    with atomic_folder(out), pytest.raises(UserError, match=rf"^--out {out} is being written by another "
                                                           rf"dispose run \(pid {os.getpid()} on .+\); wait "
                                                           r"for it to finish"):
        _start(out)
    assert _siblings(out) == ["result"]
    # A writer killed without cleaning up: its lock (pid of a process that has ended), its partial folder.
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    (tmp_path / ".result.lock").write_text(f"{ended.stdout.strip()} {socket.gethostname()}\n")
    (tmp_path / ".result.partial-x1y2").mkdir()
    (tmp_path / ".result.partial-x1y2" / "frame.png").write_text("half")
    with atomic_folder(out) as tmp:
        (tmp / "poses.json").write_text("new")
    assert _siblings(out) == ["result"] and (out / "poses.json").read_text() == "new"


def test_result_moved_aside_by_a_killed_writer_is_restored(tmp_path):
    out = tmp_path / "result"
    with atomic_folder(out) as tmp:
        (tmp / "poses.json").write_text("kept")
    out.rename(tmp_path / ".result.old-12345")  # killed between its two renames
    with pytest.raises(RuntimeError), atomic_folder(out):
        raise RuntimeError("this run fails too")
    assert (out / "poses.json").read_text() == "kept" and _siblings(out) == ["result"]


def test_folders_dispose_did_not_write_are_never_replaced(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match=rf"--out {home} already holds files that dispose did not write "
                                        r"\(e\.g\. thesis\.tex\); choose a new folder"):
        _start(home)
    out = tmp_path / "result"
    out.mkdir()  # an empty folder made beforehand is fine
    with atomic_folder(out) as tmp:
        (tmp / "poses.json").write_text("{}")
    (out / "notes.txt").write_text("mine")  # the user adds a file to a result
    with pytest.raises(UserError, match=r"holds notes\.txt, which the earlier result there did not write"):
        _start(out)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        _start(tmp_path / "file")
    assert (home / "thesis.tex").read_text() == "years of work" and (out / "notes.txt").exists()


@pytest.mark.parametrize(("code", "expected"), [(errno.EROFS, "the file system is read-only"),
                                                (errno.EACCES, "permission denied")])
def test_output_folder_that_cannot_be_created_is_one_line(tmp_path, monkeypatch, code, expected):
    def refuse(self, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(UserError, match=rf"^--out {tmp_path / 'out'}: cannot create the folder "
                                        rf"{tmp_path / 'out'} \({expected}"):
        ensure_folder(tmp_path / "out")
    with pytest.raises(UserError, match=rf"^--out {tmp_path / 'new' / 'out'}: cannot create the folder "
                                        rf"{tmp_path / 'new'} \({expected}"):
        _start(tmp_path / "new" / "out")


def test_a_folder_given_where_a_file_goes_is_refused_before_any_work(tmp_path):
    with pytest.raises(UserError, match=rf"{tmp_path} is a folder; give a file name"):
        check_writable_dir(tmp_path)
