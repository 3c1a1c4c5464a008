"""Directed KL(softmax(target) || softmax(input)) on logits (SPEC section 1) as Triton kernels + the custom
ops uda_ops_triton::kl_div / kl_div_backward.

With max-shifted logits x' = x - max x, y' = y - max y and exp-sums sx, sy:
KL = sum_c mul0(e^y'_c, y'_c - x'_c) / sy + log sx - log sy (no cancellation against a large common shift)."""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _ops
from . import _common as K


@triton.jit
def _kl_stats(x_ptr, y_ptr, base, inner, C, mask, F64: tl.constexpr, BLOCK: tl.constexpr):
    """Passes 1-2: maxima, exp-sums and the KL value per lane."""
    mx = K.class_max(x_ptr, base, inner, C, mask, F64, BLOCK)
    my = K.class_max(y_ptr, base, inner, C, mask, F64, BLOCK)
    sx = tl.zeros_like(mx)
    sy = tl.zeros_like(mx)
    t = tl.zeros_like(mx)
    for c in range(C):
        x = K.load_class(x_ptr, base, c, inner, mask, F64) - mx
        y = K.load_class(y_ptr, base, c, inner, mask, F64) - my
        ex = tl.exp(x)
        ey = tl.exp(y)
        sx += ex
        sy += ey
        t += K.mul0(ey, K.diff0(y, x))
    kl = t / sy + tl.log(sx) - tl.log(sy)
    return mx, my, sx, sy, kl


@triton.jit
def _kl_div_fwd(x_ptr, y_ptr, out_ptr, P, C, inner, F64: tl.constexpr, BLOCK: tl.constexpr):
    p, base, mask = K.pixel_offsets(tl.program_id(0), inner, C, P, BLOCK)
    mx, my, sx, sy, kl = _kl_stats(x_ptr, y_ptr, base, inner, C, mask, F64, BLOCK)
    K.store(out_ptr, p, kl, mask)


@triton.jit
def _kl_div_bwd(x_ptr, y_ptr, g_ptr, g_stride, gx_ptr, gy_ptr, P, C, inner, NEED_TARGET: tl.constexpr,
                F64: tl.constexpr, BLOCK: tl.constexpr):
    p, base, mask = K.pixel_offsets(tl.program_id(0), inner, C, P, BLOCK)
    g = K.to_acc(tl.load(g_ptr + p * g_stride, mask=mask, other=0.0), F64)
    mx, my, sx, sy, kl = _kl_stats(x_ptr, y_ptr, base, inner, C, mask, F64, BLOCK)
    lx = tl.log(sx)
    ly = tl.log(sy)
    for c in range(C):
        off = K.class_off(base, c, inner)
        x = K.load_class(x_ptr, base, c, inner, mask, F64) - mx - lx  # log p
        y = K.load_class(y_ptr, base, c, inner, mask, F64) - my - ly  # log q
        p_ = tl.exp(x)
        q = tl.exp(y)
        K.store(gx_ptr, off, g * (p_ - q), mask)
        if NEED_TARGET:
            K.store(gy_ptr, off, g * K.mul0(q, K.diff0(y, x) - kl), mask)


@torch.library.custom_op(f"{K.LIB}::kl_div", mutates_args=())
def kl_div(input: Tensor, target: Tensor, dim: int) -> Tensor:
    K.check_pair("kl_div", input, target)
    K.check_launch("kl_div", input)
    L = K.class_layout(input, dim)
    K.check_classes("kl_div", L)
    xc, yc = K.to_layout(input, dim, L), K.to_layout(target, dim, L)
    out = torch.empty(K.map_shape(input, dim), dtype=K.acc_dtype(input), device=input.device)
    if L.pixels:
        blk = K.pixel_block(L.pixels)
        K.launch(_kl_div_fwd, K.pixel_grid(L.pixels, blk), xc, yc, out, L.pixels, L.classes, L.inner,
                                                 F64=input.dtype == torch.float64, BLOCK=blk,
                                                 num_warps=K.NUM_WARPS)
    return out


@torch.library.custom_op(f"{K.LIB}::kl_div_backward", mutates_args=())
def kl_div_backward(grad: Tensor, input: Tensor, target: Tensor, dim: int,
                    need_target: bool) -> Tuple[Tensor, Tensor]:
    K.check_pair("kl_div_backward", input, target)
    K.check_launch("kl_div_backward", input)
    L = K.class_layout(input, dim)
    K.check_classes("kl_div_backward", L)
    xc, yc = K.to_layout(input, dim, L), K.to_layout(target, dim, L)
    g, gs = K.pixel_grad(grad, K.acc_dtype(input), L.pixels)
    gx = K.empty_in_layout(input, dim, L, input.dtype)
    gy = K.empty_in_layout(input, dim, L, input.dtype) if need_target else input.new_empty(0)
    if L.pixels:
        blk = K.pixel_block(L.pixels)
        K.launch(_kl_div_bwd, K.pixel_grid(L.pixels, blk), xc, yc, g, gs, gx, gy if need_target else gx, L.pixels,
                                                 L.classes, L.inner, NEED_TARGET=bool(need_target),
                                                 F64=input.dtype == torch.float64, BLOCK=blk,
                                                 num_warps=K.NUM_WARPS)
    return gx, gy


@kl_div.register_fake
def _(input, target, dim):
    return _ops._map_like(input, dim)


@kl_div_backward.register_fake
def _(grad, input, target, dim, need_target):
    return _ops._like_layout(input, dim), (_ops._like_layout(input, dim) if need_target else input.new_empty(0))


def _backward(ctx, grad):
    x, y = ctx.saved_tensors
    need_target = ctx.needs_input_grad[1]
    gx, gy = kl_div_backward(grad, x, y, *ctx.args, need_target)
    return gx, (gy if need_target else None), None


kl_div.register_autograd(_backward, setup_context=_ops.save_inputs(2))
