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
def _plogp_tile(z, mask):
    """C <= CB (ONE): max, exp-sum and t of a whole tile in one step, with no rescale terms."""
    m, e = K.tile_softmax(z, mask)
    t = tl.sum(K.mul0(e, K.diff0(z, m[None, :])), axis=0)
    return m, tl.sum(e, axis=0), t, e


@triton.jit
def _plogp_stats(z_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64: tl.constexpr, CB: tl.constexpr,
                 ONE: tl.constexpr):
    """One read per element: max, exp-sum and sum_c mul0(e_c, z_c - max) per pixel, in one step (ONE) or online
    over chunks."""
    if ONE:
        offs, mask = K.tile_offsets(o, q, 0, Q, C, q_stride, c_stride, o_stride, CB)
        m, s, t, e = _plogp_tile(K.load_tile(z_ptr, offs, mask, F64), mask)
    else:
        m = K.neg_inf(q, F64)
        s = tl.zeros_like(m)
        t = tl.zeros_like(m)
        for c0 in range(0, C, CB):
            offs, mask = K.tile_offsets(o, q, c0, Q, C, q_stride, c_stride, o_stride, CB)
            m, s, t, e = _plogp_step(m, s, t, K.load_tile(z_ptr, offs, mask, F64), mask)
    return m, s, t


@triton.jit
def _entropy_fwd(z_ptr, out_ptr, Q, NQ, C, q_stride, c_stride, o_stride, neg_inv_log_c, F64: tl.constexpr,
                 CB: tl.constexpr, BP: tl.constexpr, ONE: tl.constexpr):
    o, q = K.tile_pixels(NQ, BP)
    m, s, t = _plogp_stats(z_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, ONE)
    K.store(out_ptr, o * Q + q, neg_inv_log_c * (t * K.inv_sum(m, s) - tl.log(s)), q < Q)


@triton.jit
def _entropy_grad(gz_ptr, offs, mask, z, e, m, s, t, g):
    """dE/dz_j = g (p_j)(log p_j - H) of one tile from its exps (g = -dL/dE / log C per pixel)."""
    inv = K.inv_sum(m, s)
    ls = tl.log(s)
    h = t * inv - ls
    lp = K.diff0(z, m[None, :]) - ls[None, :]
    K.store(gz_ptr, offs, g[None, :] * K.mul0(e * inv[None, :], lp - h[None, :]), mask)


@triton.jit
def _entropy_bwd(z_ptr, g_ptr, g_stride, gz_ptr, Q, NQ, C, q_stride, c_stride, o_stride, neg_inv_log_c,
                 F64: tl.constexpr, CB: tl.constexpr, BP: tl.constexpr, ONE: tl.constexpr):
    o, q = K.tile_pixels(NQ, BP)
    g = neg_inv_log_c * K.load_map(g_ptr, o, q, Q, g_stride, F64)
    if ONE:  # one load, one exp per element; the gradient from registers
        offs, mask = K.tile_offsets(o, q, 0, Q, C, q_stride, c_stride, o_stride, CB)
        z = K.load_tile(z_ptr, offs, mask, F64)
        m, s, t, e = _plogp_tile(z, mask)
        _entropy_grad(gz_ptr, offs, mask, z, e, m, s, t, g)
    else:
        m, s, t = _plogp_stats(z_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, ONE)
        for c0 in range(0, C, CB):
            offs, mask = K.tile_offsets(o, q, c0, Q, C, q_stride, c_stride, o_stride, CB)
            z = K.load_tile(z_ptr, offs, mask, F64)
            _entropy_grad(gz_ptr, offs, mask, z, K.chunk_exp(z, m, mask), m, s, t, g)


@torch.library.custom_op(f"{K.LIB}::entropy", mutates_args=())
def entropy(z: Tensor, dim: int) -> Tensor:
    K.check_launch("entropy", z)
    L = K.class_layout(z, dim)
    K.check_classes("entropy", L)
    zc = K.to_layout(z, dim, L)
    out = torch.empty(K.map_shape(z, dim), dtype=K.acc_dtype(z), device=z.device)
    if L.pixels:
        T = K.tile_config(L, z.dtype)
        K.launch(_entropy_fwd, T.grid, zc, out, *T.args, -1.0 / math.log(L.classes), F64=z.dtype == torch.float64,
                 **T.meta)
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
        T = K.tile_config(L, z.dtype)
        K.launch(_entropy_bwd, T.grid, zc, g, gs, gz, *T.args, -1.0 / math.log(L.classes),
                 F64=z.dtype == torch.float64, **T.meta)
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
