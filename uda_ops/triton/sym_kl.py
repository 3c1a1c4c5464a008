"""Symmetric KL between two predictions (SPEC section 1) as Triton kernels + the custom ops
uda_ops_triton::sym_kl / sym_kl_backward. d = 1/2 sum_c (p_c - q_c)(a_c - b_c)."""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _ops
from . import _common as K


@triton.jit
def _pair_step(ma, sa, ta, mb, sb, tb, a, b, mask):
    """One chunk of both predictions, online: maxima, exp-sums and t = sum_c mul0(e_c, a_c - b_c) of each
    (a - b needs no shift: diff0 gives 0 for equal logits, -inf included)."""
    ma, xa, ea = K.softmax_step(ma, a, mask)
    mb, xb, eb = K.softmax_step(mb, b, mask)
    d = K.diff0(a, b)
    ta = K.rescale(xa, ta) + tl.sum(K.mul0(ea, d), axis=0)
    tb = K.rescale(xb, tb) + tl.sum(K.mul0(eb, d), axis=0)
    sa = K.rescale(xa, sa) + tl.sum(ea, axis=0)
    sb = K.rescale(xb, sb) + tl.sum(eb, axis=0)
    return ma, sa, ta, mb, sb, tb, ea, eb


@triton.jit
def _pair_tile(a, b, mask):
    """C <= CB (ONE): _pair_step's maxima, exp-sums and t of a whole tile in one step, with no rescale terms."""
    ma, ea = K.tile_softmax(a, mask)
    mb, eb = K.tile_softmax(b, mask)
    d = K.diff0(a, b)
    ta = tl.sum(K.mul0(ea, d), axis=0)
    tb = tl.sum(K.mul0(eb, d), axis=0)
    return ma, tl.sum(ea, axis=0), ta, mb, tl.sum(eb, axis=0), tb, ea, eb


@triton.jit
def _pair_stats(a_ptr, b_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64: tl.constexpr, CB: tl.constexpr,
                ONE: tl.constexpr):
    if ONE:
        offs, mask, a, b = K.load_pair(a_ptr, b_ptr, o, q, 0, Q, C, q_stride, c_stride, o_stride, F64, CB)
        ma, sa, ta, mb, sb, tb, ea, eb = _pair_tile(a, b, mask)
    else:
        ma = K.neg_inf(q, F64)
        mb = ma
        sa = tl.zeros_like(ma)
        sb = sa
        ta = sa
        tb = sa
        for c0 in range(0, C, CB):
            offs, mask, a, b = K.load_pair(a_ptr, b_ptr, o, q, c0, Q, C, q_stride, c_stride, o_stride, F64, CB)
            ma, sa, ta, mb, sb, tb, ea, eb = _pair_step(ma, sa, ta, mb, sb, tb, a, b, mask)
    return ma, sa, ta, mb, sb, tb


@triton.jit
def _sym_kl_fwd(a_ptr, b_ptr, out_ptr, Q, NQ, C, q_stride, c_stride, o_stride, F64: tl.constexpr,
                CB: tl.constexpr, BP: tl.constexpr, ONE: tl.constexpr):
    o, q = K.tile_pixels(NQ, BP)
    ma, sa, ta, mb, sb, tb = _pair_stats(a_ptr, b_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, ONE)
    K.store(out_ptr, o * Q + q, 0.5 * (ta * K.inv_sum(ma, sa) - tb * K.inv_sum(mb, sb)), q < Q)


@triton.jit
def _sym_kl_grad(ga_ptr, gb_ptr, offs, mask, a, b, ea, eb, ia, ib, ta, tb, hg, DETACH: tl.constexpr):
    """One tile of the gradients from its exps; ia, ib = 1/exp-sums, ta, tb = sum p (a - b), sum q (a - b)."""
    pa = ea * ia[None, :]
    pb = eb * ib[None, :]
    if DETACH:
        da = hg[None, :] * (pa - pb)
        db = -da
    else:
        d = K.diff0(a, b)
        da = hg[None, :] * (K.mul0(pa, d - ta[None, :]) + pa - pb)
        db = hg[None, :] * (K.mul0(pb, tb[None, :] - d) + pb - pa)
    K.store(ga_ptr, offs, da, mask)
    K.store(gb_ptr, offs, db, mask)


@triton.jit
def _sym_kl_bwd(a_ptr, b_ptr, g_ptr, g_stride, ga_ptr, gb_ptr, Q, NQ, C, q_stride, c_stride, o_stride,
                DETACH: tl.constexpr, F64: tl.constexpr, CB: tl.constexpr, BP: tl.constexpr, ONE: tl.constexpr):
    o, q = K.tile_pixels(NQ, BP)
    hg = 0.5 * K.load_map(g_ptr, o, q, Q, g_stride, F64)
    if ONE:  # one load, one exp per element; gradients from registers
        offs, mask, a, b = K.load_pair(a_ptr, b_ptr, o, q, 0, Q, C, q_stride, c_stride, o_stride, F64, CB)
        ma, sa, ta, mb, sb, tb, ea, eb = _pair_tile(a, b, mask)
        ia = K.inv_sum(ma, sa)
        ib = K.inv_sum(mb, sb)
        _sym_kl_grad(ga_ptr, gb_ptr, offs, mask, a, b, ea, eb, ia, ib, ta * ia, tb * ib, hg, DETACH)
    else:
        ma, sa, ta, mb, sb, tb = _pair_stats(a_ptr, b_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, ONE)
        ia = K.inv_sum(ma, sa)
        ib = K.inv_sum(mb, sb)
        for c0 in range(0, C, CB):
            offs, mask, a, b = K.load_pair(a_ptr, b_ptr, o, q, c0, Q, C, q_stride, c_stride, o_stride, F64, CB)
            _sym_kl_grad(ga_ptr, gb_ptr, offs, mask, a, b, K.chunk_exp(a, ma, mask), K.chunk_exp(b, mb, mask),
                         ia, ib, ta * ia, tb * ib, hg, DETACH)


@torch.library.custom_op(f"{K.LIB}::sym_kl", mutates_args=())
def sym_kl(a: Tensor, b: Tensor, dim: int, detach_targets: bool) -> Tensor:
    K.check_pair("sym_kl", a, b)
    K.check_launch("sym_kl", a)
    L = K.class_layout(a, dim)
    K.check_classes("sym_kl", L)
    ac, bc = K.to_layout(a, dim, L), K.to_layout(b, dim, L)
    out = torch.empty(K.map_shape(a, dim), dtype=K.acc_dtype(a), device=a.device)
    if L.pixels:
        T = K.tile_config(L, a.dtype, inputs=2)
        K.launch(_sym_kl_fwd, T.grid, ac, bc, out, *T.args, F64=a.dtype == torch.float64, **T.meta)
    return out


@torch.library.custom_op(f"{K.LIB}::sym_kl_backward", mutates_args=())
def sym_kl_backward(grad: Tensor, a: Tensor, b: Tensor, dim: int, detach_targets: bool) -> Tuple[Tensor, Tensor]:
    K.check_pair("sym_kl_backward", a, b)
    K.check_launch("sym_kl_backward", a)
    L = K.class_layout(a, dim)
    K.check_classes("sym_kl_backward", L)
    ac, bc = K.to_layout(a, dim, L), K.to_layout(b, dim, L)
    g, gs = K.pixel_grad(grad, K.acc_dtype(a), L.pixels)
    ga, gb = K.empty_in_layout(a, dim, L, a.dtype), K.empty_in_layout(a, dim, L, a.dtype)
    if L.pixels:
        T = K.tile_config(L, a.dtype, inputs=2)
        K.launch(_sym_kl_bwd, T.grid, ac, bc, g, gs, ga, gb, *T.args, DETACH=bool(detach_targets),
                 F64=a.dtype == torch.float64, **T.meta)
    return ga, gb


@sym_kl.register_fake
def _(a, b, dim, detach_targets):
    return _ops._map_like(a, dim)


@sym_kl_backward.register_fake
def _(grad, a, b, dim, detach_targets):
    return _ops._like_layout(a, dim), _ops._like_layout(a, dim)


def _backward(ctx, grad):
    a, b = ctx.saved_tensors
    ga, gb = sym_kl_backward(grad, a, b, *ctx.args)
    return ga, gb, None, None


sym_kl.register_autograd(_backward, setup_context=_ops.save_inputs(2))
