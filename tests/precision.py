"""Error bounds for half-precision (bfloat16/float16) runs that hold on any CPU.

A half-precision forward pass computes the model's function with every stored tensor rounded to the dtype:
the weights, the inputs and the result of each layer (relative error at most the unit roundoff u = 2^-8 for
bfloat16, 2^-11 for float16). Inside a layer, CPU kernels accumulate the reduction (a convolution's or a
matrix product's sum over n terms) in float32, so the length of the reduction adds only about n * 2^-24,
negligible next to u for the sizes used here; what differs between processors (AVX2, AVX-512, AMX kernels,
oneDNN or not) is the order of that accumulation and which intermediates stay in float32.

`emulated` rebuilds the model in float32 with exactly those roundings: parameters, buffers and every leaf
module's floating inputs and outputs pass through the low dtype. Its error against the float32 model is the
effect of rounding to u through this network (its depth and its gains), computed without any CPU's
half-precision kernels, so it is the same on every machine up to float32's own rounding (2^-24, 2^16 times
below bfloat16's and 2^13 times below float16's; float32 also draws the same random numbers as the
half-precision run, which float64 does not). A real half-precision run rounds in the same
places and, besides, inside some layers (attention's softmax, a residual addition between two modules);
to first order those add at most as many roundings of the same size again, so the real error is within
twice the emulation's: `HALF_PRECISION_FACTOR`. A wrong path (a float32 tensor mixed in, a weight left
uncast, a mis-scaled output) is off by far more than u and fails the check.
"""

from __future__ import annotations

import copy

import torch

HALF_PRECISION_FACTOR = 2.0


def rounded(value, dtype: torch.dtype):
    """Tensors (also inside tuples, lists, dicts) rounded through ``dtype``, keeping their own dtype."""
    if torch.is_tensor(value) and value.is_floating_point():
        return value.to(dtype).to(value.dtype)
    if isinstance(value, tuple | list):
        return type(value)(rounded(item, dtype) for item in value)
    if isinstance(value, dict):
        return {key: rounded(item, dtype) for key, item in value.items()}
    return value


def emulated(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A float32 copy of ``module`` that rounds its parameters, buffers and every leaf module's floating
    inputs and outputs through ``dtype``."""
    copy_ = copy.deepcopy(module)
    torch.nn.Module.to(copy_, dtype=torch.float32)
    with torch.no_grad():
        for tensor in (*copy_.parameters(), *copy_.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(rounded(tensor, dtype))
    for leaf in copy_.modules():
        if next(leaf.children(), None) is None:
            leaf.register_forward_pre_hook(
                lambda _m, args, kwargs: (rounded(args, dtype), rounded(kwargs, dtype)), with_kwargs=True)
            leaf.register_forward_hook(lambda _m, _args, output: rounded(output, dtype))
    return copy_


def mean_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return (ours.double() - reference.double()).abs().mean().item()
