"""Atomic writes: the target appears whole or not at all, with ordinary file permissions."""

from __future__ import annotations

import os
import stat

import pytest

from dispose.errors import UserError
from dispose.media.files import atomic_path, atomic_write_text


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
