"""Normalised entropy map E = -sum_c p_c log p_c / log C (SPEC section 2) as Triton kernels + the custom
ops uda_ops_triton::entropy / entropy_backward.

With z' = z - max z and s = sum_c e^z'_c: sum_c p_c log p_c = sum_c mul0(e^z'_c, z'_c) / s - log s."""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _ops
from . import _common as K


@triton.jit
def _plogp_stats(z_ptr, base, inner, C, mask, F64: tl.constexpr, BLOCK: tl.constexpr):
    """Passes 1-2: max, exp-sum and H = sum_c p_c log p_c per lane."""
    m = K.class_max(z_ptr, base, inner, C, mask, F64, BLOCK)
    s = tl.zeros_like(m)
    t = tl.zeros_like(m)
    for c in range(C):
        z = K.load_class(z_ptr, base, c, inner, mask, F64) - m
        e = tl.exp(z)
        s += e
        t += K.mul0(e, z)
    ls = tl.log(s)
    return m, ls, t / s - ls


@triton.jit
def _entropy_fwd(z_ptr, out_ptr, P, C, inner, neg_inv_log_c, F64: tl.constexpr, BLOCK: tl.constexpr):
    p, base, mask = K.pixel_offsets(tl.program_id(0), inner, C, P, BLOCK)
    m, ls, h = _plogp_stats(z_ptr, base, inner, C, mask, F64, BLOCK)
    K.store(out_ptr, p, neg_inv_log_c * h, mask)


@triton.jit
def _entropy_bwd(z_ptr, g_ptr, g_stride, gz_ptr, P, C, inner, neg_inv_log_c, F64: tl.constexpr,
                 BLOCK: tl.constexpr):
    """dE/dz_j = -(p_j / log C)(log p_j - H)."""
    p, base, mask = K.pixel_offsets(tl.program_id(0), inner, C, P, BLOCK)
    g = neg_inv_log_c * K.to_acc(tl.load(g_ptr + p * g_stride, mask=mask, other=0.0), F64)
    m, ls, h = _plogp_stats(z_ptr, base, inner, C, mask, F64, BLOCK)
    for c in range(C):
        lp = K.load_class(z_ptr, base, c, inner, mask, F64) - m - ls
        K.store(gz_ptr, K.class_off(base, c, inner), g * K.mul0(tl.exp(lp), lp - h), mask)


@torch.library.custom_op(f"{K.LIB}::entropy", mutates_args=())
def entropy(z: Tensor, dim: int) -> Tensor:
    K.check_launch("entropy", z)
    L = K.class_layout(z, dim)
    K.check_classes("entropy", L)
    zc = K.to_layout(z, dim, L)
    out = torch.empty(K.map_shape(z, dim), dtype=K.acc_dtype(z), device=z.device)
    if L.pixels:
        blk = K.pixel_block(L.pixels)
        K.launch(_entropy_fwd, K.pixel_grid(L.pixels, blk), zc, out, L.pixels, L.classes, L.inner,
                                                  -1.0 / math.log(L.classes), F64=z.dtype == torch.float64,
                                                  BLOCK=blk, num_warps=K.NUM_WARPS)
    return out


@torch.library.custom_op(f"{K.LIB}::entropy_backward", mutates_args=())
def entropy_backward(grad: Tensor, z: Tensor, dim: int) -> Tensor:
    K.check_launch("entropy_backward", z)
    L = K.class_layout(z, dim)
    K.check_classes("entropy_backward", L)
    zc = K.to_layout(z, dim, L)
    g, gs = K.pixel_grad(grad, K.acc_dtype(z), L.pixels)
    gz = K.empty_in_layout(z, dim, L, z.dtype)
    if L.pixels:
        blk = K.pixel_block(L.pixels)
        K.launch(_entropy_bwd, K.pixel_grid(L.pixels, blk), zc, g, gs, gz, L.pixels, L.classes, L.inner,
                                                  -1.0 / math.log(L.classes), F64=z.dtype == torch.float64,
                                                  BLOCK=blk, num_warps=K.NUM_WARPS)
    return gz


@entropy.register_fake
def _(z, dim):
    return _ops._map_like(z, dim)


@entropy_backward.register_fake
def _(grad, z, dim):
    return _ops._like_layout(z, dim)


def _backward(ctx, grad):
    (z,) = ctx.saved_tensors
    return entropy_backward(grad, z, *ctx.args), None


entropy.register_autograd(_backward, setup_context=_ops.save_inputs(1))
