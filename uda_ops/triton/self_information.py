"""Weighted self-information I_c = -p_c log p_c / log C (SPEC section 2), same shape as z, as Triton
kernels + the custom ops uda_ops_triton::self_information / self_information_backward.

Backward for the upstream gradient G (same shape as z): u_c = G_c (1 + log p_c),
dL/dz_j = -(p_j / log C)(u_j - sum_c p_c u_c); sum_c p_c u_c is accumulated in pass 2 unnormalised:
sum_c mul0(e_c, G_c (1 + z'_c)) / s - log s * sum_c e_c G_c / s, with z' = z - max z."""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _ops
from . import _common as K


@triton.jit
def _self_information_fwd(z_ptr, out_ptr, P, C, inner, neg_inv_log_c, F64: tl.constexpr, BLOCK: tl.constexpr):
    p, base, mask = K.pixel_offsets(tl.program_id(0), inner, C, P, BLOCK)
    m = K.class_max(z_ptr, base, inner, C, mask, F64, BLOCK)
    ls = tl.log(K.exp_sum(z_ptr, base, inner, C, mask, m, F64))
    for c in range(C):
        lp = K.load_class(z_ptr, base, c, inner, mask, F64) - m - ls
        K.store(out_ptr, K.class_off(base, c, inner), neg_inv_log_c * K.mul0(tl.exp(lp), lp), mask)


@triton.jit
def _self_information_bwd(z_ptr, g_ptr, g_so, g_sc, g_si, gz_ptr, P, C, inner, neg_inv_log_c, F64: tl.constexpr,
                          BLOCK: tl.constexpr):
    """The upstream gradient G is read through its own (outer, C, inner) strides (0 for an expanded one)."""
    p, base, mask = K.pixel_offsets(tl.program_id(0), inner, C, P, BLOCK)
    gbase = (p // inner) * g_so + (p % inner) * g_si
    m = K.class_max(z_ptr, base, inner, C, mask, F64, BLOCK)
    s = tl.zeros_like(m)
    t1 = tl.zeros_like(m)
    t2 = tl.zeros_like(m)
    for c in range(C):
        z = K.load_class(z_ptr, base, c, inner, mask, F64) - m
        g = K.load_class(g_ptr, gbase, c, g_sc, mask, F64)
        e = tl.exp(z)
        s += e
        t1 += K.mul0(e, g * (1.0 + z))
        t2 += e * g
    ls = tl.log(s)
    pu = (t1 - ls * t2) / s  # sum_c p_c u_c
    for c in range(C):
        lp = K.load_class(z_ptr, base, c, inner, mask, F64) - m - ls
        g = K.load_class(g_ptr, gbase, c, g_sc, mask, F64)
        pc = tl.exp(lp)
        K.store(gz_ptr, K.class_off(base, c, inner), neg_inv_log_c * (K.mul0(pc, g * (1.0 + lp)) - pc * pu), mask)


@torch.library.custom_op(f"{K.LIB}::self_information", mutates_args=())
def self_information(z: Tensor, dim: int) -> Tensor:
    K.check_launch("self_information", z)
    L = K.class_layout(z, dim)
    K.check_classes("self_information", L)
    zc = K.to_layout(z, dim, L)
    out = K.empty_in_layout(z, dim, L, z.dtype)
    if L.pixels:
        blk = K.pixel_block(L.pixels)
        K.launch(_self_information_fwd, K.pixel_grid(L.pixels, blk), zc, out, L.pixels, L.classes, L.inner,
                                                           -1.0 / math.log(L.classes),
                                                           F64=z.dtype == torch.float64, BLOCK=blk,
                                                           num_warps=K.NUM_WARPS)
    return out


@torch.library.custom_op(f"{K.LIB}::self_information_backward", mutates_args=())
def self_information_backward(grad: Tensor, z: Tensor, dim: int) -> Tensor:
    K.check_launch("self_information_backward", z)
    L = K.class_layout(z, dim)
    K.check_classes("self_information_backward", L)
    zc = K.to_layout(z, dim, L)
    if grad.shape != z.shape:
        raise RuntimeError(f"self_information_backward: gradient shape {tuple(grad.shape)} != {tuple(z.shape)}")
    gv, g_so, g_sc, g_si = K.canonical_view(grad, dim, L)
    gz = K.empty_in_layout(z, dim, L, z.dtype)
    if L.pixels:
        blk = K.pixel_block(L.pixels)
        K.launch(_self_information_bwd, K.pixel_grid(L.pixels, blk), zc, gv, g_so, g_sc, g_si, gz, L.pixels, L.classes, L.inner,
                                                           -1.0 / math.log(L.classes),
                                                           F64=z.dtype == torch.float64, BLOCK=blk,
                                                           num_warps=K.NUM_WARPS)
    return gz


@self_information.register_fake
def _(z, dim):
    return _ops._like_layout(z, dim)


@self_information_backward.register_fake
def _(grad, z, dim):
    return _ops._like_layout(z, dim)


def _backward(ctx, grad):
    (z,) = ctx.saved_tensors
    return self_information_backward(grad, z, *ctx.args), None


self_information.register_autograd(_backward, setup_context=_ops.save_inputs(1))
