"""diffusers 0.27's temporal cross-attention context order, which the official release runs with.

In ``TransformerSpatioTemporalModel`` the temporal blocks attend to the CLIP context of each video's first
frame.  diffusers 0.27 (pinned by the release) broadcasts it as ``context[None].broadcast_to(H*W, B, 1, C)``
and flattens that *position-major*, while the temporal blocks' rows are *batch-major* (row ``b * H*W + p``
for video ``b`` at position ``p``).  So row ``j`` reads the context of video ``j % B``: with more than one
video in a batch (the release's CFG batch of unconditional and conditional halves), the videos see each
other's context at alternate positions.  diffusers >= 0.30 builds it batch-major (row ``j`` reads video
``j // (H*W)``), which is what our default runs.

:func:`release_temporal_context` reproduces 0.27 on current diffusers without copying its code: a forward
pre-hook on every temporal block re-orders the context it is given from batch-major to 0.27's order.  With
one video per batch both orders are the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel


def _interleave_context(module: torch.nn.Module, args: tuple, kwargs: dict):
    hidden_states = args[0] if args else kwargs["hidden_states"]
    context = kwargs.get("encoder_hidden_states")
    if context is None:
        return None
    positions = hidden_states.shape[1]
    videos = context.shape[0] // positions
    per_video = context.reshape(videos, positions, *context.shape[1:])[:, 0]  # (B, 1, C)
    order = torch.arange(videos * positions, device=context.device) % videos
    return args, {**kwargs, "encoder_hidden_states": per_video[order]}


@contextlib.contextmanager
def release_temporal_context(models: Iterable[torch.nn.Module | None],
                             enabled: bool = True) -> Iterator[None]:
    """While inside, every ``TransformerSpatioTemporalModel`` of ``models`` (None entries skipped) uses
    diffusers 0.27's context order (module docstring); nothing changes when ``enabled`` is False."""
    handles = []
    if enabled:
        for model in models:
            if model is None:
                continue
            for module in model.modules():
                if isinstance(module, TransformerSpatioTemporalModel):
                    handles += [block.register_forward_pre_hook(_interleave_context, with_kwargs=True,
                                                                prepend=True)
                                for block in module.temporal_transformer_blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
