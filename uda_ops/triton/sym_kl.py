"""Symmetric KL between two predictions (SPEC section 1) as Triton kernels + the custom ops
uda_ops_triton::sym_kl / sym_kl_backward. d = 1/2 sum_c (p_c - q_c)(a_c - b_c).

The class differences are taken between the shifted logits, (a_c - max a) - (b_c - max b): they differ from a_c - b_c
by a per-pixel constant, which cancels in every use (sum_c (p_c - q_c) = 0, and d_c - sum_c p_c d_c), and they are exact
near the maxima, so a per-pixel offset of the logits changes nothing (as in the CPU and CUDA kernels). Over chunks
(C > 64 NCHW) that takes the maxima before the sums: a second read of each chunk in the statistics, as kl_div; an online
shift of the running sums instead cost the gradient an ulp of the 1e4 logits."""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _ops
from . import _common as K


@triton.jit
def _pair_sums(a, b, ea, eb):
    """One class tile of both predictions (ONE, a and b shifted by their maxima): exp-sums and
    t = sum_c mul0(e_c, a_c - b_c) of each, over the tile's classes (mul0: a class -inf in one prediction has e = 0
    there)."""
    d = a - b
    return tl.sum(ea, axis=0), tl.sum(K.mul0(ea, d), axis=0), tl.sum(eb, axis=0), tl.sum(K.mul0(eb, d), axis=0)


@triton.jit
def _pair_one(a_ptr, b_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64: tl.constexpr, CB: tl.constexpr,
              CB2: tl.constexpr, FULL: tl.constexpr):
    """ONE: both class tiles of both predictions, one read and one exp per element; the statistics in one
    step. Returns the tiles (offsets, masks, logits, exps: <input><tile>) and ma, sa, ta, mb, sb, tb."""
    offs1, mask1, offs2, mask2 = K.one_offsets(o, q, Q, C, q_stride, c_stride, o_stride, CB, CB2, FULL)
    a1, a2 = K.load_one(a_ptr, offs1, mask1, offs2, mask2, Q, C, F64, CB2, FULL)
    b1, b2 = K.load_one(b_ptr, offs1, mask1, offs2, mask2, Q, C, F64, CB2, FULL)
    ma, ea1, ea2 = K.softmax_one(a1, mask1, a2, mask2, CB2, FULL)
    mb, eb1, eb2 = K.softmax_one(b1, mask1, b2, mask2, CB2, FULL)
    sa, ta, sb, tb = _pair_sums(a1 - ma[None, :], b1 - mb[None, :], ea1, eb1)
    if CB2 > 0:
        sa2, ta2, sb2, tb2 = _pair_sums(a2 - ma[None, :], b2 - mb[None, :], ea2, eb2)
        sa += sa2
        ta += ta2
        sb += sb2
        tb += tb2
    return offs1, mask1, offs2, mask2, a1, a2, b1, b2, ea1, ea2, eb1, eb2, ma, sa, ta, mb, sb, tb


@triton.jit
def _pair_stats(a_ptr, b_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64: tl.constexpr, CB: tl.constexpr,
                CB2: tl.constexpr, ONE: tl.constexpr, FULL: tl.constexpr):
    if ONE:
        (offs1, mask1, offs2, mask2, a1, a2, b1, b2, ea1, ea2, eb1, eb2,
         ma, sa, ta, mb, sb, tb) = _pair_one(a_ptr, b_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, CB2, FULL)
    else:  # over chunks: the maxima first, then the sums w.r.t. the final maxima (a second read of each chunk)
        ma, mb = K.pair_max(a_ptr, b_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB)
        sa = tl.zeros_like(ma)
        sb = sa
        ta = sa
        tb = sa
        for c0 in range(0, C, CB):
            offs, mask, a, b = K.load_pair(a_ptr, b_ptr, o, q, c0, Q, C, q_stride, c_stride, o_stride, F64, CB)
            sa_c, ta_c, sb_c, tb_c = _pair_sums(a - ma[None, :], b - mb[None, :], K.chunk_exp(a, ma, mask),
                                                K.chunk_exp(b, mb, mask))
            sa += sa_c
            ta += ta_c
            sb += sb_c
            tb += tb_c
    return ma, sa, ta, mb, sb, tb


@triton.jit
def _sym_kl_fwd(a_ptr, b_ptr, out_ptr, Q, NQ, C, q_stride, c_stride, o_stride, F64: tl.constexpr,
                CB: tl.constexpr, CB2: tl.constexpr, BP: tl.constexpr, ONE: tl.constexpr, FULL: tl.constexpr,
                REDUCE: tl.constexpr = False, SC: tl.constexpr = 0):
    if SC > 0:  # staged rows: C at compile time
        C = SC
    o, q = K.tile_pixels(NQ, BP)
    ma, sa, ta, mb, sb, tb = _pair_stats(a_ptr, b_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, CB2, ONE,
                                         FULL)
    K.emit(out_ptr, o * Q + q, 0.5 * (ta * K.inv_sum(ma, sa) - tb * K.inv_sum(mb, sb)), q < Q, REDUCE)


@triton.jit
def _sym_kl_grad(a, b, ea, eb, ia, ib, ta, tb, hg, DETACH: tl.constexpr):
    """One tile of the gradients (da, db) from its exps and its logits shifted by their maxima; ia, ib = 1/exp-sums,
    ta, tb = sum p (a - b), sum q (a - b)."""
    pa = ea * ia[None, :]
    pb = eb * ib[None, :]
    if DETACH:
        da = hg[None, :] * (pa - pb)
        db = -da
    else:
        d = a - b  # NaN where both are -inf: pa = pb = 0 there, and mul0 gives 0
        da = hg[None, :] * (K.mul0(pa, d - ta[None, :]) + pa - pb)
        db = hg[None, :] * (K.mul0(pb, tb[None, :] - d) + pb - pa)
    return da, db


@triton.jit
def _sym_kl_bwd(a_ptr, b_ptr, g_ptr, g_stride, ga_ptr, gb_ptr, Q, NQ, C, q_stride, c_stride, o_stride,
                DETACH: tl.constexpr, F64: tl.constexpr, CB: tl.constexpr, CB2: tl.constexpr, BP: tl.constexpr,
                ONE: tl.constexpr, FULL: tl.constexpr, SC: tl.constexpr = 0):
    if SC > 0:  # staged rows: C at compile time
        C = SC
    o, q = K.tile_pixels(NQ, BP)
    hg = 0.5 * K.load_map(g_ptr, o, q, Q, g_stride, F64)
    if ONE:  # one load, one exp per element; gradients from registers
        (offs1, mask1, offs2, mask2, a1, a2, b1, b2, ea1, ea2, eb1, eb2,
         ma, sa, ta, mb, sb, tb) = _pair_one(a_ptr, b_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, CB2, FULL)
        ia = K.inv_sum(ma, sa)
        ib = K.inv_sum(mb, sb)
        da1, db1 = _sym_kl_grad(a1 - ma[None, :], b1 - mb[None, :], ea1, eb1, ia, ib, ta * ia, tb * ib, hg, DETACH)
        da2, db2 = da1, db1
        if CB2 > 0:
            da2, db2 = _sym_kl_grad(a2 - ma[None, :], b2 - mb[None, :], ea2, eb2, ia, ib, ta * ia, tb * ib, hg,
                                    DETACH)
        K.store_one(ga_ptr, offs1, da1, mask1, offs2, da2, mask2, Q, C, CB2, FULL)
        K.store_one(gb_ptr, offs1, db1, mask1, offs2, db2, mask2, Q, C, CB2, FULL)
    else:
        ma, sa, ta, mb, sb, tb = _pair_stats(a_ptr, b_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, CB2,
                                             ONE, FULL)
        ia = K.inv_sum(ma, sa)
        ib = K.inv_sum(mb, sb)
        for c0 in range(0, C, CB):
            offs, mask, a, b = K.load_pair(a_ptr, b_ptr, o, q, c0, Q, C, q_stride, c_stride, o_stride, F64, CB)
            da, db = _sym_kl_grad(a - ma[None, :], b - mb[None, :], K.chunk_exp(a, ma, mask), K.chunk_exp(b, mb, mask),
                                  ia, ib, ta * ia, tb * ib, hg, DETACH)
            K.store(ga_ptr, offs, da, mask)
            K.store(gb_ptr, offs, db, mask)


@K.op("sym_kl")
def sym_kl(a: Tensor, b: Tensor, dim: int, detach_targets: bool, reduction: int = 0) -> Tensor:
    K.check_reduction("sym_kl", reduction)
    L, ac, bc = K.pair_inputs("sym_kl", a, b, dim)
    T = K.tile_config(L, a.dtype, inputs=2) if L.pixels else None
    out = K.forward_output(a, dim, reduction, T and T.grid)
    if L.pixels:
        K.launch(_sym_kl_fwd, T.grid, ac, bc, out, *T.args, F64=a.dtype == torch.float64, REDUCE=reduction != 0,
                 **T.meta)
    return K.reduce_output(out, reduction, L.pixels)


@K.op("sym_kl_backward")
def sym_kl_backward(grad: Tensor, a: Tensor, b: Tensor, dim: int, detach_targets: bool) -> Tuple[Tensor, Tensor]:
    L, ac, bc = K.pair_inputs("sym_kl_backward", a, b, dim)
    g, gs = K.pixel_grad(grad, K.acc_dtype(a), L.pixels)
    ga, gb = K.empty_in_layout(a, dim, L, a.dtype), K.empty_in_layout(a, dim, L, a.dtype)
    if L.pixels:
        T = K.tile_config(L, a.dtype, inputs=2)
        K.launch(_sym_kl_bwd, T.grid, ac, bc, g, gs, ga, gb, *T.args, DETACH=bool(detach_targets),
                 F64=a.dtype == torch.float64, **T.meta)
    return ga, gb


@sym_kl.register_fake
def _(a, b, dim, detach_targets, reduction=0):
    K.check_reduction("sym_kl", reduction)
    return _ops._forward_like(a, dim, reduction)


@sym_kl_backward.register_fake
def _(grad, a, b, dim, detach_targets):
    return _ops._like_layout(a, dim), _ops._like_layout(a, dim)


def _backward(ctx, grad, bwd=sym_kl_backward):
    a, b = ctx.saved_tensors
    dim, detach_targets, reduction = ctx.args
    ga, gb = bwd(K.reduced_grad(grad, a, dim, reduction), a, b, dim, detach_targets)
    return ga, gb, None, None, None


K.autograd(sym_kl, _backward, K.save_inputs(2), sym_kl_backward)
