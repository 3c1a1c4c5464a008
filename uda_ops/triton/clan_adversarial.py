"""CLAN Eq. 5 (SPEC section 3): loss = (epsilon + lambda_local * M) * BCEWithLogits(d, target) per pixel, as
Triton kernels + the custom ops uda_ops_triton::clan_adversarial / clan_adversarial_backward.
`d` is the discriminator map with the map's shape (N, *)."""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _ops
from . import _common as K


@triton.jit
def _bce_with_logits(d, t):
    """BCE with logits and its derivative sigmoid(d) - t, stable for any d; log(1 + e) for e in (0, 1]
    computed as log(u) * e / (u - 1), u = 1 + e (exact for tiny e)."""
    e = tl.exp(-tl.abs(d))
    u = 1.0 + e
    l1p = tl.where(u == 1.0, e, tl.log(u) * (e / tl.where(u == 1.0, 1.0, u - 1.0)))
    loss = tl.maximum(d, 0.0) - d * t + l1p
    dloss = tl.where(d >= 0, 1.0, e) / u - t
    return loss, dloss


@triton.jit
def _clan_fwd(d_ptr, z1_ptr, z2_ptr, out_ptr, Q, NQ, C, q_stride, c_stride, o_stride, t_hi, t_lo, lam_hi, lam_lo,
              eps_hi, eps_lo, F64: tl.constexpr, CB: tl.constexpr, CB2: tl.constexpr, BP: tl.constexpr,
              ONE: tl.constexpr, FULL: tl.constexpr, REDUCE: tl.constexpr = False, SC: tl.constexpr = 0):
    if SC > 0:  # staged rows: C at compile time
        C = SC
    o, q = K.tile_pixels(NQ, BP)
    target, lam, eps = K.scalar(t_hi, t_lo, F64), K.scalar(lam_hi, lam_lo, F64), K.scalar(eps_hi, eps_lo, F64)
    d = K.load_map(d_ptr, o, q, Q, 1, F64)
    m1, m2, cos, inv12, inv11, inv22 = K.cosine_stats(z1_ptr, z2_ptr, o, q, Q, C, q_stride, c_stride, o_stride,
                                                      F64, CB, CB2, ONE, FULL)
    loss, dloss = _bce_with_logits(d, target)
    K.emit(out_ptr, o * Q + q, (eps + lam * (1.0 - cos)) * loss, q < Q, REDUCE)


@triton.jit
def _clan_bwd(d_ptr, z1_ptr, z2_ptr, g_ptr, g_stride, gd_ptr, g1_ptr, g2_ptr, Q, NQ, C, q_stride, c_stride,
              o_stride, t_hi, t_lo, lam_hi, lam_lo, eps_hi, eps_lo, NEED_LOGITS: tl.constexpr, F64: tl.constexpr,
              CB: tl.constexpr, CB2: tl.constexpr, BP: tl.constexpr, ONE: tl.constexpr, FULL: tl.constexpr,
              EXACT: tl.constexpr, SC: tl.constexpr = 0):
    if SC > 0:  # staged rows: C at compile time
        C = SC
    o, q = K.tile_pixels(NQ, BP)
    target, lam, eps = K.scalar(t_hi, t_lo, F64), K.scalar(lam_hi, lam_lo, F64), K.scalar(eps_hi, eps_lo, F64)
    d = K.load_map(d_ptr, o, q, Q, 1, F64)
    g = K.load_map(g_ptr, o, q, Q, g_stride, F64)
    loss, dloss = _bce_with_logits(d, target)
    if NEED_LOGITS:
        cos = K.cosine_backward(z1_ptr, z2_ptr, g1_ptr, g2_ptr, o, q, Q, C, q_stride, c_stride, o_stride,
                                g * lam * loss, F64, CB, CB2, ONE, FULL, EXACT)
    else:
        m1, m2, cos, inv12, inv11, inv22 = K.cosine_stats(z1_ptr, z2_ptr, o, q, Q, C, q_stride, c_stride,
                                                          o_stride, F64, CB, CB2, ONE, FULL)
    K.store(gd_ptr, o * Q + q, g * (eps + lam * (1.0 - cos)) * dloss, q < Q)


def _inputs(op: str, d: Tensor, z1: Tensor, z2: Tensor, dim: int):
    L, ac, bc = K.pair_inputs(op, z1, z2, dim)
    if d.numel() != L.pixels:
        raise RuntimeError(f"{op}: d has {d.numel()} elements, expected one per pixel ({L.pixels})")
    return L, ac, bc


@K.op("clan_adversarial")
def clan_adversarial(d: Tensor, z1: Tensor, z2: Tensor, target: float, lambda_local: float, epsilon: float,
                     dim: int, reduction: int = 0) -> Tensor:
    K.check_reduction("clan_adversarial", reduction)
    L, ac, bc = _inputs("clan_adversarial", d, z1, z2, dim)
    dc = d.contiguous()  # read in its own dtype (load_map converts): no float32 copy of a bf16 d
    T = K.tile_config(L, z1.dtype, inputs=2) if L.pixels else None
    out = K.forward_output(z1, dim, reduction, T and T.grid)
    if L.pixels:
        K.launch(_clan_fwd, T.grid, dc, ac, bc, out, *T.args, *K.f64_args(target, lambda_local, epsilon),
                 F64=z1.dtype == torch.float64, REDUCE=reduction != 0, **T.meta)
    return K.reduce_output(out, reduction, L.pixels)


@K.op("clan_adversarial_backward")
def clan_adversarial_backward(grad: Tensor, d: Tensor, z1: Tensor, z2: Tensor, target: float, lambda_local: float,
                              epsilon: float, dim: int, need_logit_grads: bool) -> Tuple[Tensor, Tensor, Tensor]:
    L, ac, bc = _inputs("clan_adversarial_backward", d, z1, z2, dim)
    dc = d.contiguous()
    g, gs = K.pixel_grad(grad, K.acc_dtype(z1), L.pixels)
    # d's gradient in float32, then cast: storing bf16 from the kernel costs the bf16 backward 46 more registers
    # (168 -> 214 at C = 19: 12 -> 9 warps an SM), so the float32 map stays (+4 MiB at (2, 19, 512, 1024))
    gd = torch.empty(d.shape, dtype=K.acc_dtype(z1), device=d.device)
    g1 = K.empty_in_layout(z1, dim, L, z1.dtype) if need_logit_grads else z1.new_empty(0)
    g2 = K.empty_in_layout(z1, dim, L, z1.dtype) if need_logit_grads else z1.new_empty(0)
    if L.pixels:
        T = K.tile_config(L, z1.dtype, inputs=2)
        K.launch(_clan_bwd, T.grid, dc, ac, bc, g, gs, gd, g1 if need_logit_grads else gd,
                 g2 if need_logit_grads else gd, *T.args, *K.f64_args(target, lambda_local, epsilon),
                 NEED_LOGITS=bool(need_logit_grads), F64=z1.dtype == torch.float64,
                 EXACT=K.cosine_exact(z1.dtype), **T.meta)
    return (gd if gd.dtype == d.dtype else gd.to(d.dtype)), g1, g2


@clan_adversarial.register_fake
def _(d, z1, z2, target, lambda_local, epsilon, dim, reduction=0):
    K.check_reduction("clan_adversarial", reduction)
    return _ops._forward_like(z1, dim, reduction)


@clan_adversarial_backward.register_fake
def _(grad, d, z1, z2, target, lambda_local, epsilon, dim, need_logit_grads):
    gz = (lambda: _ops._like_layout(z1, dim)) if need_logit_grads else (lambda: z1.new_empty(0))
    return d.new_empty(d.shape), gz(), gz()


def _backward(ctx, grad, bwd=clan_adversarial_backward):
    d, z1, z2 = ctx.saved_tensors
    *args, reduction = ctx.args  # target, lambda_local, epsilon, dim
    need = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
    grad = K.reduced_grad(grad, z1, args[-1], reduction)
    gd, g1, g2 = bwd(grad, d, z1, z2, *args, need)
    return gd, (g1 if need else None), (g2 if need else None), None, None, None, None, None


K.autograd(clan_adversarial, _backward, K.save_inputs(3), clan_adversarial_backward)
