"""Conditional Motion Propagation (Zhan et al., CVPR 2019) as DisPose uses it for ``F_d`` (paper sec. 4.1).

``load_cmp(path)`` builds the ``semiauto_annot/resnet50_vip+mpii_liteflow`` network and loads the public
``ckpt_iter_42000.pth.tar`` strictly; ``cmp_dense_flow(cmp, ref_image_384, sparse_flow, mask)`` runs it on
inputs prepared exactly as the official DisPose wrapper does (see :mod:`.release_input`).
"""

from dispose.guidance.cmp.checkpoint import expected_state_dict_shapes, load_cmp
from dispose.guidance.cmp.network import CMP, CMPConfig
from dispose.guidance.cmp.release_input import (
    CMP_SIZE,
    cmp_dense_flow,
    rasterize_sparse_flow,
    release_image_tensor,
    resize_flow_nearest,
    resize_nearest_384,
)

__all__ = [
    "CMP",
    "CMP_SIZE",
    "CMPConfig",
    "cmp_dense_flow",
    "expected_state_dict_shapes",
    "load_cmp",
    "rasterize_sparse_flow",
    "release_image_tensor",
    "resize_flow_nearest",
    "resize_nearest_384",
]
