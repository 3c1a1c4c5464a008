"""Directed KL(softmax(target) || softmax(input)) on logits (SPEC section 1) as Triton kernels + the custom
ops uda_ops_triton::kl_div / kl_div_backward.

With max-shifted logits x' = x - max x, y' = y - max y and exp-sums sx, sy:
KL = sum_c mul0(e^y'_c, y'_c - x'_c) / sy + log sx - log sy (no cancellation against a large common shift), the
sums taken online over chunks of classes."""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _ops
from . import _common as K


@triton.jit
def _kl_step(mx, sx, my, sy, t, x, y, mask):
    """One chunk, online: maxima, exp-sums and t = sum_c mul0(e^y'_c, y'_c - x'_c) with y' = y - max y and
    x' = x - max x for the running maxima (when they move, y' - x' moves by a per-pixel shift)."""
    mx_new, ax, ex = K.softmax_step(mx, x, mask)
    my_new, ay, ey = K.softmax_step(my, y, mask)
    shift = K.diff0(my, my_new) - K.diff0(mx, mx_new)
    d = K.diff0(y - my_new[None, :], x - mx_new[None, :])
    t = tl.where(ay == 0, 0.0, ay * (t + K.mul0(sy, shift))) + tl.sum(K.mul0(ey, d), axis=0)
    sx = K.rescale(ax, sx) + tl.sum(ex, axis=0)
    sy = K.rescale(ay, sy) + tl.sum(ey, axis=0)
    return mx_new, sx, my_new, sy, t, ex, ey


@triton.jit
def _kl_one(x_ptr, y_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64: tl.constexpr, CB: tl.constexpr,
            CB2: tl.constexpr, FULL: tl.constexpr):
    """ONE: both class tiles of both inputs, one read and one exp per element; maxima, exp-sums and
    t = sum_c mul0(e^y'_c, y'_c - x'_c) in one step (no shift, no rescale). Returns the tiles too."""
    offs1, mask1, offs2, mask2 = K.one_offsets(o, q, Q, C, q_stride, c_stride, o_stride, CB, CB2, FULL)
    x1, x2 = K.load_one(x_ptr, offs1, mask1, offs2, mask2, Q, C, F64, CB2, FULL)
    y1, y2 = K.load_one(y_ptr, offs1, mask1, offs2, mask2, Q, C, F64, CB2, FULL)
    mx, ex1, ex2 = K.softmax_one(x1, mask1, x2, mask2, CB2, FULL)
    my, ey1, ey2 = K.softmax_one(y1, mask1, y2, mask2, CB2, FULL)
    t = K.sum2(K.mul0(ey1, (y1 - my[None, :]) - (x1 - mx[None, :])),
               K.mul0(ey2, (y2 - my[None, :]) - (x2 - mx[None, :])), CB2)
    return offs1, mask1, offs2, mask2, x1, x2, y1, y2, ex1, ex2, ey1, ey2, mx, K.sum2(ex1, ex2, CB2), my, \
        K.sum2(ey1, ey2, CB2), t


@triton.jit
def _kl_finish(mx, sx, my, sy, t):
    """1/sx, 1/sy, ty = sum q (y' - x') and KL = ty + log sx - log sy (one log, of sx / sy; NaN for a pixel with
    either all -inf)."""
    ix = K.inv_sum(mx, sx)
    iy = K.inv_sum(my, sy)
    ty = t * iy
    kl = ty + tl.log(sx / sy)
    return ix, iy, ty, tl.where(mx == float("-inf"), float("nan"), kl)


@triton.jit
def _kl_stats(x_ptr, y_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64: tl.constexpr, CB: tl.constexpr,
              CB2: tl.constexpr, ONE: tl.constexpr, FULL: tl.constexpr):
    """ONE: one read, one step (_kl_one). Over chunks: the maxima first, then the sums w.r.t. the
    final maxima (a second read of each chunk): KL's y' - x' then rounds exactly as in a single tile, which the
    target gradient q (log q - log p - KL) needs at |z| ~ 1e4 (an online shift of t costs an ulp of KL there)."""
    if ONE:
        (offs1, mask1, offs2, mask2, x1, x2, y1, y2, ex1, ex2, ey1, ey2,
         mx, sx, my, sy, t) = _kl_one(x_ptr, y_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, CB2, FULL)
    else:
        mx, my = K.pair_max(x_ptr, y_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB)
        sx = tl.zeros_like(mx)
        sy = sx
        t = sx
        for c0 in range(0, C, CB):
            offs, mask, x, y = K.load_pair(x_ptr, y_ptr, o, q, c0, Q, C, q_stride, c_stride, o_stride, F64, CB)
            mx, sx, my, sy, t, ex, ey = _kl_step(mx, sx, my, sy, t, x, y, mask)
    return mx, sx, my, sy, t


@triton.jit
def _kl_div_fwd(x_ptr, y_ptr, out_ptr, Q, NQ, C, q_stride, c_stride, o_stride, F64: tl.constexpr,
                CB: tl.constexpr, CB2: tl.constexpr, BP: tl.constexpr, ONE: tl.constexpr, FULL: tl.constexpr,
                REDUCE: tl.constexpr = False, SC: tl.constexpr = 0):
    if SC > 0:  # staged rows: C at compile time
        C = SC
    o, q = K.tile_pixels(NQ, BP)
    mx, sx, my, sy, t = _kl_stats(x_ptr, y_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, CB2, ONE, FULL)
    ix, iy, ty, kl = _kl_finish(mx, sx, my, sy, t)
    K.emit(out_ptr, o * Q + q, kl, q < Q, REDUCE)


@triton.jit
def _kl_grad(x, y, ex, ey, mx, my, ix, iy, ty, g, NEED_TARGET: tl.constexpr):
    """One tile of the gradients (dx, dy; dy = dx when not NEED_TARGET, unused)."""
    p = ex * ix[None, :]
    q = ey * iy[None, :]
    dx = g[None, :] * (p - q)
    dy = dx
    if NEED_TARGET:
        # q (log q - log p - KL) = q ((y' - x') - ty): the log-sums cancel; q = 0 where y' = -inf
        dy = g[None, :] * K.mul0(q, ((y - my[None, :]) - (x - mx[None, :])) - ty[None, :])
    return dx, dy


@triton.jit
def _kl_div_bwd(x_ptr, y_ptr, g_ptr, g_stride, gx_ptr, gy_ptr, Q, NQ, C, q_stride, c_stride, o_stride,
                NEED_TARGET: tl.constexpr, F64: tl.constexpr, CB: tl.constexpr, CB2: tl.constexpr,
                BP: tl.constexpr, ONE: tl.constexpr, FULL: tl.constexpr, SC: tl.constexpr = 0):
    if SC > 0:  # staged rows: C at compile time
        C = SC
    o, q = K.tile_pixels(NQ, BP)
    g = K.load_map(g_ptr, o, q, Q, g_stride, F64)
    if ONE:  # one load, one exp per element; gradients from registers
        (offs1, mask1, offs2, mask2, x1, x2, y1, y2, ex1, ex2, ey1, ey2,
         mx, sx, my, sy, t) = _kl_one(x_ptr, y_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, CB2, FULL)
        ix, iy, ty, kl = _kl_finish(mx, sx, my, sy, t)
        dx1, dy1 = _kl_grad(x1, y1, ex1, ey1, mx, my, ix, iy, ty, g, NEED_TARGET)
        dx2, dy2 = dx1, dy1
        if CB2 > 0:
            dx2, dy2 = _kl_grad(x2, y2, ex2, ey2, mx, my, ix, iy, ty, g, NEED_TARGET)
        K.store_one(gx_ptr, offs1, dx1, mask1, offs2, dx2, mask2, Q, C, CB2, FULL)
        if NEED_TARGET:
            K.store_one(gy_ptr, offs1, dy1, mask1, offs2, dy2, mask2, Q, C, CB2, FULL)
    else:
        mx, sx, my, sy, t = _kl_stats(x_ptr, y_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, CB2, ONE,
                                      FULL)
        ix, iy, ty, kl = _kl_finish(mx, sx, my, sy, t)
        for c0 in range(0, C, CB):
            offs, mask, x, y = K.load_pair(x_ptr, y_ptr, o, q, c0, Q, C, q_stride, c_stride, o_stride, F64, CB)
            dx, dy = _kl_grad(x, y, K.chunk_exp(x, mx, mask), K.chunk_exp(y, my, mask), mx, my, ix, iy, ty, g,
                              NEED_TARGET)
            K.store(gx_ptr, offs, dx, mask)
            if NEED_TARGET:
                K.store(gy_ptr, offs, dy, mask)


@K.op("kl_div")
def kl_div(input: Tensor, target: Tensor, dim: int, reduction: int = 0) -> Tensor:
    K.check_reduction("kl_div", reduction)
    L, xc, yc = K.pair_inputs("kl_div", input, target, dim)
    T = K.tile_config(L, input.dtype, inputs=2) if L.pixels else None
    out = K.forward_output(input, dim, reduction, T and T.grid)
    if L.pixels:
        K.launch(_kl_div_fwd, T.grid, xc, yc, out, *T.args, F64=input.dtype == torch.float64,
                 REDUCE=reduction != 0, **T.meta)
    return K.reduce_output(out, reduction, L.pixels)


@K.op("kl_div_backward")
def kl_div_backward(grad: Tensor, input: Tensor, target: Tensor, dim: int,
                    need_target: bool) -> Tuple[Tensor, Tensor]:
    L, xc, yc = K.pair_inputs("kl_div_backward", input, target, dim)
    g, gs = K.pixel_grad(grad, K.acc_dtype(input), L.pixels)
    gx = K.empty_in_layout(input, dim, L, input.dtype)
    gy = K.empty_in_layout(input, dim, L, input.dtype) if need_target else input.new_empty(0)
    if L.pixels:
        T = K.tile_config(L, input.dtype, inputs=2)
        K.launch(_kl_div_bwd, T.grid, xc, yc, g, gs, gx, gy if need_target else gx, *T.args,
                 NEED_TARGET=bool(need_target), F64=input.dtype == torch.float64, **T.meta)
    return gx, gy


@kl_div.register_fake
def _(input, target, dim, reduction=0):
    K.check_reduction("kl_div", reduction)
    return _ops._forward_like(input, dim, reduction)


@kl_div_backward.register_fake
def _(grad, input, target, dim, need_target):
    return _ops._like_layout(input, dim), (_ops._like_layout(input, dim) if need_target else input.new_empty(0))


def _backward(ctx, grad, bwd=kl_div_backward):
    x, y = ctx.saved_tensors
    dim, reduction = ctx.args
    need_target = ctx.needs_input_grad[1]
    gx, gy = bwd(K.reduced_grad(grad, x, dim, reduction), x, y, dim, need_target)
    return gx, (gy if need_target else None), None, None


K.autograd(kl_div, _backward, K.save_inputs(2), kl_div_backward)
