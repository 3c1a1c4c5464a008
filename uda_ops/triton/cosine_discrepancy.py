"""Cosine discrepancy M = 1 - cos(softmax(z1), softmax(z2)) per pixel (SPEC section 3) as Triton kernels +
the custom ops uda_ops_triton::cosine_discrepancy / cosine_discrepancy_backward."""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _ops
from . import _common as K


@triton.jit
def _cosine_fwd(z1_ptr, z2_ptr, out_ptr, Q, NQ, C, q_stride, c_stride, o_stride, F64: tl.constexpr,
                CB: tl.constexpr, CB2: tl.constexpr, BP: tl.constexpr, ONE: tl.constexpr, FULL: tl.constexpr,
                SC: tl.constexpr = 0):
    if SC > 0:  # staged rows: C at compile time
        C = SC
    o, q = K.tile_pixels(NQ, BP)
    m1, m2, cos, inv12, inv11, inv22 = K.cosine_stats(z1_ptr, z2_ptr, o, q, Q, C, q_stride, c_stride, o_stride,
                                                      F64, CB, CB2, ONE, FULL)
    K.store(out_ptr, o * Q + q, 1.0 - cos, q < Q)


@triton.jit
def _cosine_bwd(z1_ptr, z2_ptr, g_ptr, g_stride, g1_ptr, g2_ptr, Q, NQ, C, q_stride, c_stride, o_stride,
                F64: tl.constexpr, CB: tl.constexpr, CB2: tl.constexpr, BP: tl.constexpr, ONE: tl.constexpr,
                FULL: tl.constexpr, EXACT: tl.constexpr, SC: tl.constexpr = 0):
    if SC > 0:  # staged rows: C at compile time
        C = SC
    o, q = K.tile_pixels(NQ, BP)
    g = K.load_map(g_ptr, o, q, Q, g_stride, F64)
    K.cosine_backward(z1_ptr, z2_ptr, g1_ptr, g2_ptr, o, q, Q, C, q_stride, c_stride, o_stride, g, F64, CB, CB2,
                      ONE, FULL, EXACT)


@K.op("cosine_discrepancy")
def cosine_discrepancy(z1: Tensor, z2: Tensor, dim: int) -> Tensor:
    L, ac, bc = K.pair_inputs("cosine_discrepancy", z1, z2, dim)
    out = torch.empty(K.map_shape(z1, dim), dtype=K.acc_dtype(z1), device=z1.device)
    if L.pixels:
        T = K.tile_config(L, z1.dtype, inputs=2)
        K.launch(_cosine_fwd, T.grid, ac, bc, out, *T.args, F64=z1.dtype == torch.float64, **T.meta)
    return out


@K.op("cosine_discrepancy_backward")
def cosine_discrepancy_backward(grad: Tensor, z1: Tensor, z2: Tensor, dim: int) -> Tuple[Tensor, Tensor]:
    L, ac, bc = K.pair_inputs("cosine_discrepancy_backward", z1, z2, dim)
    g, gs = K.pixel_grad(grad, K.acc_dtype(z1), L.pixels)
    g1, g2 = K.empty_in_layout(z1, dim, L, z1.dtype), K.empty_in_layout(z1, dim, L, z1.dtype)
    if L.pixels:
        T = K.tile_config(L, z1.dtype, inputs=2)
        K.launch(_cosine_bwd, T.grid, ac, bc, g, gs, g1, g2, *T.args, F64=z1.dtype == torch.float64,
                 EXACT=K.cosine_exact(z1.dtype), **T.meta)
    return g1, g2


@cosine_discrepancy.register_fake
def _(z1, z2, dim):
    return _ops._map_like(z1, dim)


@cosine_discrepancy_backward.register_fake
def _(grad, z1, z2, dim):
    return _ops._like_layout(z1, dim), _ops._like_layout(z1, dim)


def _backward(ctx, grad, bwd=cosine_discrepancy_backward):
    z1, z2 = ctx.saved_tensors
    g1, g2 = bwd(grad, z1, z2, *ctx.args)
    return g1, g2, None


K.autograd(cosine_discrepancy, _backward, K.save_inputs(2), cosine_discrepancy_backward)
