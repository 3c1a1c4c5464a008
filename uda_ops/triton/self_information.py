"""Weighted self-information I_c = -p_c log p_c / log C (SPEC section 2), same shape as z, as Triton
kernels + the custom ops uda_ops_triton::self_information / self_information_backward.

Backward for the upstream gradient G (same shape as z): u_c = G_c (1 + log p_c),
dL/dz_j = -(p_j / log C)(u_j - sum_c p_c u_c); sum_c p_c u_c is accumulated unnormalised (online over chunks
of classes, with the exp-sum s): sum_c mul0(e_c, G_c (1 + z'_c)) / s - log s * sum_c e_c G_c / s, with
z' = z - max z. G is read through its own strides: the expanded gradient of .sum() is never materialised."""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _ops
from . import _common as K


@triton.jit
def _lse_stats(z_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64: tl.constexpr, CB: tl.constexpr):
    """Online over chunks: max and exp-sum per pixel."""
    m = K.neg_inf(q, F64)
    s = tl.zeros_like(m)
    for c0 in range(0, C, CB):
        offs, mask = K.tile_offsets(o, q, c0, Q, C, q_stride, c_stride, o_stride, CB)
        m_new, alpha, e = K.softmax_step(m, K.load_tile(z_ptr, offs, mask, F64), mask)
        s = K.rescale(alpha, s) + tl.sum(e, axis=0)
        m = m_new
    return m, s


@triton.jit
def _si_tile(z, e, m, s, neg_inv_log_c):
    inv = K.inv_sum(m, s)
    lp = (z - m[None, :]) - tl.log(s)[None, :]
    return neg_inv_log_c * K.mul0(e * inv[None, :], lp)


@triton.jit
def _self_information_fwd(z_ptr, out_ptr, Q, NQ, C, q_stride, c_stride, o_stride, nlc_hi, nlc_lo,
                          F64: tl.constexpr, CB: tl.constexpr, CB2: tl.constexpr, BP: tl.constexpr,
                          ONE: tl.constexpr, FULL: tl.constexpr, SC: tl.constexpr = 0):
    if SC > 0:  # staged rows: C at compile time
        C = SC
    o, q = K.tile_pixels(NQ, BP)
    neg_inv_log_c = K.scalar(nlc_hi, nlc_lo, F64)
    if ONE:  # one load, one exp per element, written from registers
        offs1, mask1, offs2, mask2 = K.one_offsets(o, q, Q, C, q_stride, c_stride, o_stride, CB, CB2, FULL)
        z1, z2 = K.load_one(z_ptr, offs1, mask1, offs2, mask2, Q, C, F64, CB2, FULL)
        m, e1, e2 = K.softmax_one(z1, mask1, z2, mask2, CB2, FULL)
        s = K.sum2(e1, e2, CB2)
        v1 = _si_tile(z1, e1, m, s, neg_inv_log_c)
        v2 = v1
        if CB2 > 0:
            v2 = _si_tile(z2, e2, m, s, neg_inv_log_c)
        K.store_one(out_ptr, offs1, v1, mask1, offs2, v2, mask2, Q, C, CB2, FULL)
    else:
        m, s = _lse_stats(z_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB)
        for c0 in range(0, C, CB):
            offs, mask = K.tile_offsets(o, q, c0, Q, C, q_stride, c_stride, o_stride, CB)
            z = K.load_tile(z_ptr, offs, mask, F64)
            K.store(out_ptr, offs, _si_tile(z, K.chunk_exp(z, m, mask), m, s, neg_inv_log_c), mask)


@triton.jit
def _si_bwd_step(m, s, t1, t2, z, g, mask):
    """One chunk: max, exp-sum, t1 = sum_c mul0(e_c, G_c (1 + z_c - m)) and t2 = sum_c e_c G_c (online)."""
    m_new, alpha, e = K.softmax_step(m, z, mask)
    t1 = K.rescale(alpha, t1 + K.mul0(t2, K.diff0(m, m_new))) + \
        tl.sum(K.mul0(e, g * (1.0 + K.diff0(z, m_new[None, :]))), axis=0)
    t2 = K.rescale(alpha, t2) + tl.sum(e * g, axis=0)
    s = K.rescale(alpha, s) + tl.sum(e, axis=0)
    return m_new, s, t1, t2, e


@triton.jit
def _si_bwd_sums(z, g, e, m):
    """One class tile (ONE): t1 = sum_c mul0(e_c, G_c (1 + z_c - m)) and t2 = sum_c e_c G_c over its classes."""
    return tl.sum(K.mul0(e, g * (1.0 + (z - m[None, :]))), axis=0), tl.sum(e * g, axis=0)


@triton.jit
def _si_bwd_tile(z, g, e, m, s, t1, t2, neg_inv_log_c):
    inv = K.inv_sum(m, s)
    ls = tl.log(s)
    pu = (t1 - ls * t2) * inv  # sum_c p_c u_c
    lp = (z - m[None, :]) - ls[None, :]
    pc = e * inv[None, :]
    return neg_inv_log_c * (K.mul0(pc, g * (1.0 + lp)) - pc * pu[None, :])


@triton.jit
def _self_information_bwd(z_ptr, g_ptr, g_o, g_q, g_c, gz_ptr, Q, NQ, C, q_stride, c_stride, o_stride,
                          nlc_hi, nlc_lo, F64: tl.constexpr, CB: tl.constexpr, CB2: tl.constexpr, BP: tl.constexpr,
                          ONE: tl.constexpr, FULL: tl.constexpr, SC: tl.constexpr = 0, G_ROWS: tl.constexpr = False):
    """The upstream gradient G is read through its own (group, pixel, class) strides (0 for an expanded one);
    G_ROWS (staged rows only): G is dense in z's rows layout and is staged like z."""
    if SC > 0:  # staged rows: C at compile time
        C = SC
    o, q = K.tile_pixels(NQ, BP)
    neg_inv_log_c = K.scalar(nlc_hi, nlc_lo, F64)
    if ONE:  # one load of z and G, one exp per element; the gradient from registers
        offs1, mask1, offs2, mask2 = K.one_offsets(o, q, Q, C, q_stride, c_stride, o_stride, CB, CB2, FULL)
        z1, z2 = K.load_one(z_ptr, offs1, mask1, offs2, mask2, Q, C, F64, CB2, FULL)
        # staged z, G not dense in its layout: G read in place through its strides (expanded: 0)
        GF: tl.constexpr = 2 if FULL == 3 and not G_ROWS else FULL
        goffs1, _, goffs2, _ = K.one_offsets(o, q, Q, C, g_q, g_c, g_o, CB, CB2, GF)
        g1, g2 = K.load_one(g_ptr, goffs1, mask1, goffs2, mask2, Q, C, F64, CB2, GF)
        m, e1, e2 = K.softmax_one(z1, mask1, z2, mask2, CB2, FULL)
        s = K.sum2(e1, e2, CB2)
        t1, t2 = _si_bwd_sums(z1, g1, e1, m)
        if CB2 > 0:
            u1, u2 = _si_bwd_sums(z2, g2, e2, m)
            t1 += u1
            t2 += u2
        d1 = _si_bwd_tile(z1, g1, e1, m, s, t1, t2, neg_inv_log_c)
        d2 = d1
        if CB2 > 0:
            d2 = _si_bwd_tile(z2, g2, e2, m, s, t1, t2, neg_inv_log_c)
        K.store_one(gz_ptr, offs1, d1, mask1, offs2, d2, mask2, Q, C, CB2, FULL)
    else:
        m = K.neg_inf(q, F64)
        s = tl.zeros_like(m)
        t1 = tl.zeros_like(m)
        t2 = tl.zeros_like(m)
        for c0 in range(0, C, CB):
            offs, mask = K.tile_offsets(o, q, c0, Q, C, q_stride, c_stride, o_stride, CB)
            goffs, _ = K.tile_offsets(o, q, c0, Q, C, g_q, g_c, g_o, CB)
            m, s, t1, t2, e = _si_bwd_step(m, s, t1, t2, K.load_tile(z_ptr, offs, mask, F64),
                                           K.load_tile(g_ptr, goffs, mask, F64), mask)
        for c0 in range(0, C, CB):
            offs, mask = K.tile_offsets(o, q, c0, Q, C, q_stride, c_stride, o_stride, CB)
            goffs, _ = K.tile_offsets(o, q, c0, Q, C, g_q, g_c, g_o, CB)
            z = K.load_tile(z_ptr, offs, mask, F64)
            K.store(gz_ptr, offs, _si_bwd_tile(z, K.load_tile(g_ptr, goffs, mask, F64), K.chunk_exp(z, m, mask), m, s,
                                               t1, t2, neg_inv_log_c), mask)


@K.op("self_information")
def self_information(z: Tensor, dim: int) -> Tensor:
    K.check_launch("self_information", z)
    L = K.class_layout(z, dim)
    K.check_classes("self_information", L)
    zc = K.to_layout(z, dim, L)
    out = K.empty_in_layout(z, dim, L, z.dtype)
    if L.pixels:
        T = K.tile_config(L, z.dtype)
        K.launch(_self_information_fwd, T.grid, zc, out, *T.args, *K.f64_args(-1.0 / math.log(L.classes)),
                 F64=z.dtype == torch.float64, **T.meta)
    return out


@K.op("self_information_backward")
def self_information_backward(grad: Tensor, z: Tensor, dim: int) -> Tensor:
    K.check_launch("self_information_backward", z)
    L = K.class_layout(z, dim)
    K.check_classes("self_information_backward", L)
    K.check_grad_dtype(grad)
    if grad.shape != z.shape:
        raise RuntimeError(f"self_information_backward: gradient has shape {list(grad.shape)}, "
                           f"expected {list(z.shape)}")
    zc = K.to_layout(z, dim, L)
    gv, g_so, g_sc, g_si = K.canonical_view(grad, dim, L)
    gz = K.empty_in_layout(z, dim, L, z.dtype)
    if L.pixels:
        T = K.tile_config(L, z.dtype, inputs=2)
        g_o, g_q = (0, g_so) if L.inner == 1 else (g_so, g_si)  # the (group, pixel) strides of T's geometry
        K.launch(_self_information_bwd, T.grid, zc, gv, g_o, g_q, g_sc, gz, *T.args,
                 *K.f64_args(-1.0 / math.log(L.classes)), F64=z.dtype == torch.float64,
                 G_ROWS=T.FULL == 3 and (g_q, g_sc) == (L.classes, 1), **T.meta)
    return gz


@self_information.register_fake
def _(z, dim):
    return _ops._like_layout(z, dim)


@self_information_backward.register_fake
def _(grad, z, dim):
    return _ops._like_layout(z, dim)


def _backward(ctx, grad, bwd=self_information_backward):
    (z,) = ctx.saved_tensors
    return bwd(grad, z, *ctx.args), None


K.autograd(self_information, _backward, K.save_inputs(1), self_information_backward)
