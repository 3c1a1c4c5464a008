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
def _sym_kl_fwd(a_ptr, b_ptr, out_ptr, P, C, inner, F64: tl.constexpr, BLOCK: tl.constexpr):
    p, base, mask = K.pixel_offsets(tl.program_id(0), inner, C, P, BLOCK)
    ma = K.class_max(a_ptr, base, inner, C, mask, F64, BLOCK)
    mb = K.class_max(b_ptr, base, inner, C, mask, F64, BLOCK)
    sa = tl.zeros_like(ma)
    sb = tl.zeros_like(ma)
    ta = tl.zeros_like(ma)
    tb = tl.zeros_like(ma)
    for c in range(C):
        a = K.load_class(a_ptr, base, c, inner, mask, F64)
        b = K.load_class(b_ptr, base, c, inner, mask, F64)
        ea = tl.exp(a - ma)
        eb = tl.exp(b - mb)
        d = K.diff0(a, b)
        sa += ea
        sb += eb
        ta += K.mul0(ea, d)
        tb += K.mul0(eb, d)
    K.store(out_ptr, p, 0.5 * (ta / sa - tb / sb), mask)


@triton.jit
def _sym_kl_bwd(a_ptr, b_ptr, g_ptr, g_stride, ga_ptr, gb_ptr, P, C, inner, DETACH: tl.constexpr,
                F64: tl.constexpr, BLOCK: tl.constexpr):
    p, base, mask = K.pixel_offsets(tl.program_id(0), inner, C, P, BLOCK)
    hg = 0.5 * K.to_acc(tl.load(g_ptr + p * g_stride, mask=mask, other=0.0), F64)
    ma = K.class_max(a_ptr, base, inner, C, mask, F64, BLOCK)
    mb = K.class_max(b_ptr, base, inner, C, mask, F64, BLOCK)
    sa = tl.zeros_like(ma)
    sb = tl.zeros_like(ma)
    ta = tl.zeros_like(ma)
    tb = tl.zeros_like(ma)
    for c in range(C):
        a = K.load_class(a_ptr, base, c, inner, mask, F64)
        b = K.load_class(b_ptr, base, c, inner, mask, F64)
        ea = tl.exp(a - ma)
        eb = tl.exp(b - mb)
        sa += ea
        sb += eb
        if not DETACH:
            d = K.diff0(a, b)
            ta += K.mul0(ea, d)
            tb += K.mul0(eb, d)
    ia = 1.0 / sa
    ib = 1.0 / sb
    ta = ta * ia  # sum_c p_c (a_c - b_c)
    tb = tb * ib  # sum_c q_c (a_c - b_c)
    for c in range(C):
        off = K.class_off(base, c, inner)
        a = K.load_class(a_ptr, base, c, inner, mask, F64)
        b = K.load_class(b_ptr, base, c, inner, mask, F64)
        pa = tl.exp(a - ma) * ia
        pb = tl.exp(b - mb) * ib
        if DETACH:
            da = hg * (pa - pb)
            db = -da
        else:
            d = K.diff0(a, b)
            da = hg * (K.mul0(pa, d - ta) + pa - pb)
            db = hg * (K.mul0(pb, tb - d) + pb - pa)
        K.store(ga_ptr, off, da, mask)
        K.store(gb_ptr, off, db, mask)


@torch.library.custom_op(f"{K.LIB}::sym_kl", mutates_args=())
def sym_kl(a: Tensor, b: Tensor, dim: int, detach_targets: bool) -> Tensor:
    K.check_pair("sym_kl", a, b)
    K.check_launch("sym_kl", a)
    L = K.class_layout(a, dim)
    K.check_classes("sym_kl", L)
    ac, bc = K.to_layout(a, dim, L), K.to_layout(b, dim, L)
    out = torch.empty(K.map_shape(a, dim), dtype=K.acc_dtype(a), device=a.device)
    if L.pixels:
        blk = K.pixel_block(L.pixels)
        K.launch(_sym_kl_fwd, K.pixel_grid(L.pixels, blk), ac, bc, out, L.pixels, L.classes, L.inner,
                                                 F64=a.dtype == torch.float64, BLOCK=blk, num_warps=K.NUM_WARPS)
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
        blk = K.pixel_block(L.pixels)
        K.launch(_sym_kl_bwd, K.pixel_grid(L.pixels, blk), ac, bc, g, gs, ga, gb, L.pixels, L.classes, L.inner,
                                                 DETACH=bool(detach_targets), F64=a.dtype == torch.float64,
                                                 BLOCK=blk, num_warps=K.NUM_WARPS)
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
