"""Normalised entropy map E = -sum_c p_c log p_c / log C (SPEC section 2) as Triton kernels + the custom
ops uda_ops_triton::entropy / entropy_backward.

With z' = z - max z and s = sum_c e^z'_c: sum_c p_c log p_c = sum_c mul0(e^z'_c, z'_c) / s - log s (both sums
online over chunks of classes for large C, see _common)."""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _ops
from . import _common as K


@triton.jit
def _plogp_step(m, s, t, z, mask):
    """One chunk: running max m, exp-sum s and t = sum_c mul0(e_c, z_c - m), rescaled to the new max."""
    m_new, alpha, e = K.softmax_step(m, z, mask)
    t = K.rescale(alpha, t + K.mul0(s, K.diff0(m, m_new))) + tl.sum(K.mul0(e, K.diff0(z, m_new[None, :])), axis=0)
    s = K.rescale(alpha, s) + tl.sum(e, axis=0)
    return m_new, s, t, e


@triton.jit
def _plogp_one(z_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64: tl.constexpr, CB: tl.constexpr,
               CB2: tl.constexpr, FULL: tl.constexpr):
    """ONE: both class tiles, one read and one exp per element; max, exp-sum and t = sum_c mul0(e_c, z_c - max)
    in one step. Returns the tiles too (offsets, masks, z - max, exps)."""
    offs1, mask1, offs2, mask2 = K.one_offsets(o, q, Q, C, q_stride, c_stride, o_stride, CB, CB2, FULL)
    z1, z2 = K.load_one(z_ptr, offs1, mask1, offs2, mask2, Q, C, F64, CB2, FULL)
    m, e1, e2 = K.softmax_one(z1, mask1, z2, mask2, CB2, FULL)
    y1 = z1 - m[None, :]
    y2 = z2 - m[None, :]
    t = K.sum2(K.mul0(e1, y1), K.mul0(e2, y2), CB2)
    return offs1, mask1, offs2, mask2, y1, y2, e1, e2, m, K.sum2(e1, e2, CB2), t


@triton.jit
def _plogp_stats(z_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64: tl.constexpr, CB: tl.constexpr,
                 CB2: tl.constexpr, ONE: tl.constexpr, FULL: tl.constexpr):
    """One read per element: max, exp-sum and sum_c mul0(e_c, z_c - max) per pixel, in one step (ONE) or online
    over chunks."""
    if ONE:
        offs1, mask1, offs2, mask2, y1, y2, e1, e2, m, s, t = _plogp_one(z_ptr, o, q, Q, C, q_stride, c_stride,
                                                                         o_stride, F64, CB, CB2, FULL)
    else:
        m = K.neg_inf(q, F64)
        s = tl.zeros_like(m)
        t = tl.zeros_like(m)
        for c0 in range(0, C, CB):
            offs, mask = K.tile_offsets(o, q, c0, Q, C, q_stride, c_stride, o_stride, CB)
            m, s, t, e = _plogp_step(m, s, t, K.load_tile(z_ptr, offs, mask, F64), mask)
    return m, s, t


@triton.jit
def _entropy_fwd(z_ptr, out_ptr, Q, NQ, C, q_stride, c_stride, o_stride, nlc_hi, nlc_lo, F64: tl.constexpr,
                 CB: tl.constexpr, CB2: tl.constexpr, BP: tl.constexpr, ONE: tl.constexpr, FULL: tl.constexpr,
                 REDUCE: tl.constexpr = False, SC: tl.constexpr = 0):
    if SC > 0:  # staged rows: C at compile time
        C = SC
    o, q = K.tile_pixels(NQ, BP)
    neg_inv_log_c = K.scalar(nlc_hi, nlc_lo, F64)
    m, s, t = _plogp_stats(z_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, CB2, ONE, FULL)
    K.emit(out_ptr, o * Q + q, neg_inv_log_c * (t * K.inv_sum(m, s) - tl.log(s)), q < Q, REDUCE)


@triton.jit
def _entropy_grad(y, e, inv, th, g):
    """dE/dz_j = g p_j (log p_j - sum_c p_c log p_c) = g p_j (y_j - th) of one tile from its exps e and
    y = z - max (the log exp-sums cancel; g = -dL/dE / log C per pixel, inv = 1 / exp-sum, th = t * inv)."""
    return g[None, :] * K.mul0(e * inv[None, :], y - th[None, :])


@triton.jit
def _entropy_bwd(z_ptr, g_ptr, g_stride, gz_ptr, Q, NQ, C, q_stride, c_stride, o_stride, nlc_hi, nlc_lo,
                 F64: tl.constexpr, CB: tl.constexpr, CB2: tl.constexpr, BP: tl.constexpr, ONE: tl.constexpr,
                 FULL: tl.constexpr, SC: tl.constexpr = 0):
    if SC > 0:  # staged rows: C at compile time
        C = SC
    o, q = K.tile_pixels(NQ, BP)
    g = K.scalar(nlc_hi, nlc_lo, F64) * K.load_map(g_ptr, o, q, Q, g_stride, F64)
    if ONE:  # one load, one exp per element; the gradient from registers
        offs1, mask1, offs2, mask2, y1, y2, e1, e2, m, s, t = _plogp_one(z_ptr, o, q, Q, C, q_stride, c_stride,
                                                                         o_stride, F64, CB, CB2, FULL)
        inv = K.inv_sum(m, s)
        d1 = _entropy_grad(y1, e1, inv, t * inv, g)
        d2 = d1
        if CB2 > 0:
            d2 = _entropy_grad(y2, e2, inv, t * inv, g)
        K.store_one(gz_ptr, offs1, d1, mask1, offs2, d2, mask2, Q, C, CB2, FULL)
    else:
        m, s, t = _plogp_stats(z_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, CB2, ONE, FULL)
        inv = K.inv_sum(m, s)
        for c0 in range(0, C, CB):
            offs, mask = K.tile_offsets(o, q, c0, Q, C, q_stride, c_stride, o_stride, CB)
            z = K.load_tile(z_ptr, offs, mask, F64)
            K.store(gz_ptr, offs, _entropy_grad(K.diff0(z, m[None, :]), K.chunk_exp(z, m, mask), inv, t * inv, g), mask)


@K.op("entropy")
def entropy(z: Tensor, dim: int, reduction: int = 0) -> Tensor:
    K.check_reduction("entropy", reduction)
    K.check_launch("entropy", z)
    L = K.class_layout(z, dim)
    K.check_classes("entropy", L)
    zc = K.to_layout(z, dim, L)
    T = K.tile_config(L, z.dtype) if L.pixels else None
    out = K.forward_output(z, dim, reduction, T and T.grid)
    if L.pixels:
        K.launch(_entropy_fwd, T.grid, zc, out, *T.args, *K.f64_args(-1.0 / math.log(L.classes)),
                 F64=z.dtype == torch.float64, REDUCE=reduction != 0, **T.meta)
    return K.reduce_output(out, reduction, L.pixels)


@K.op("entropy_backward")
def entropy_backward(grad: Tensor, z: Tensor, dim: int) -> Tensor:
    K.check_launch("entropy_backward", z)
    L = K.class_layout(z, dim)
    K.check_classes("entropy_backward", L)
    zc = K.to_layout(z, dim, L)
    g, gs = K.pixel_grad(grad, K.acc_dtype(z), L.pixels)
    gz = K.empty_in_layout(z, dim, L, z.dtype)
    if L.pixels:
        T = K.tile_config(L, z.dtype)
        K.launch(_entropy_bwd, T.grid, zc, g, gs, gz, *T.args, *K.f64_args(-1.0 / math.log(L.classes)),
                 F64=z.dtype == torch.float64, **T.meta)
    return gz


@entropy.register_fake
def _(z, dim, reduction=0):
    K.check_reduction("entropy", reduction)
    return _ops._forward_like(z, dim, reduction)


@entropy_backward.register_fake
def _(grad, z, dim):
    return _ops._like_layout(z, dim)


def _backward(ctx, grad, bwd=entropy_backward):
    (z,) = ctx.saved_tensors
    dim, reduction = ctx.args
    return bwd(K.reduced_grad(grad, z, dim, reduction), z, dim), None, None


K.autograd(entropy, _backward, K.save_inputs(1), entropy_backward)
