"""Per-frame arrays on disk (FrameStore) and the streamed safetensors writer."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dispose.media.frame_store import FrameStore, open_safetensors_tensor, write_safetensors


@pytest.fixture
def frames():
    return np.random.default_rng(0).normal(size=(9, 2, 5, 3)).astype(np.float16)


def test_store_indexes_like_the_array(frames):
    store = FrameStore(frames.shape[1:], frames.dtype)
    store.append(frames[:4])
    store.append(torch.from_numpy(frames[4:]))
    assert store.shape == frames.shape and len(store) == 9 and store.nbytes == frames.nbytes
    np.testing.assert_array_equal(store[3], frames[3])
    np.testing.assert_array_equal(store[-1], frames[-1])
    np.testing.assert_array_equal(store[2:7], frames[2:7])
    np.testing.assert_array_equal(store[[0, 5, 6, 7, 2]], frames[[0, 5, 6, 7, 2]])
    np.testing.assert_array_equal(np.asarray(store), frames)
    np.testing.assert_array_equal(np.stack(list(store)), frames)
    np.testing.assert_array_equal(np.concatenate(list(store.chunks(4))), frames)
    with pytest.raises(IndexError, match="frame 9"):
        store[[9]]
    with pytest.raises(ValueError, match="appended"):
        store.append(frames.astype(np.float32))


def test_streamed_safetensors_file_reads_back_with_safetensors(tmp_path, frames):
    path = tmp_path / "fields.safetensors"
    embeddings = torch.randn(18, 7)
    write_safetensors(path, {"dense_flow": FrameStore.from_array(frames), "point_embeddings": embeddings})
    loaded = load_file(str(path))
    np.testing.assert_array_equal(loaded["dense_flow"].numpy(), frames)
    assert torch.equal(loaded["point_embeddings"], embeddings)
    lazy = open_safetensors_tensor(path, "dense_flow")
    np.testing.assert_array_equal(lazy[[1, 2, 8]], frames[[1, 2, 8]])
    assert open_safetensors_tensor(path, "missing") is None
    (tmp_path / "new").write_bytes(b"replaced")
    os.replace(tmp_path / "new", path)  # as an atomic rewrite does: an open store keeps reading its file
    np.testing.assert_array_equal(lazy[4], frames[4])
    with pytest.raises(ValueError, match="cannot grow"):
        lazy.append(frames[:1])
