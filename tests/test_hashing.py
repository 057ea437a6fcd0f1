"""File hashes for sidecars and reports: exact sha256, cached per file version, robust to a broken cache."""

from __future__ import annotations

import hashlib
import json
import os

from dispose.hashing import cache_file, file_sha256, fingerprint


def test_hash_is_cached_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "w.pth"
    path.write_bytes(b"weights v1")
    assert file_sha256(path) == hashlib.sha256(b"weights v1").hexdigest()
    assert cache_file().is_file()

    stat = path.stat()  # same size and time, other bytes: only a cache can still answer v1
    path.write_bytes(b"weights v0")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(path) == hashlib.sha256(b"weights v1").hexdigest()

    path.write_bytes(b"weights v2, longer")
    assert file_sha256(path) == hashlib.sha256(b"weights v2, longer").hexdigest()
    assert len([key for key in json.loads(cache_file().read_text()) if "w.pth" in key]) == 1


def test_broken_or_unwritable_cache_is_ignored(tmp_path, monkeypatch):
    path = tmp_path / "w.bin"
    path.write_bytes(b"x" * 10)
    cache_file().parent.mkdir(parents=True, exist_ok=True)
    cache_file().write_text("{not json")
    assert file_sha256(path) == hashlib.sha256(b"x" * 10).hexdigest()
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("DISPOSE_CACHE_DIR", str(blocked / "below-a-file"))
    assert file_sha256(path) == hashlib.sha256(b"x" * 10).hexdigest()


def test_folder_fingerprint_filters_suffixes(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "model.safetensors").write_bytes(b"a")
    (tmp_path / "unet" / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("hello")
    result = fingerprint(tmp_path, (".safetensors", ".json"))
    assert sorted(result) == [os.path.join("unet", "config.json"), os.path.join("unet", "model.safetensors")]
    assert result[os.path.join("unet", "model.safetensors")] == {"size": 1,
                                                                  "sha256": hashlib.sha256(b"a").hexdigest()}
