"""Adversarial dropout mask search (SPEC section 4; DTA Eqs. 3-5) as Triton kernels + the custom ops
uda_ops_triton::adversarial_dropout_mask (element-wise, on an (N, U) Jacobian) and
uda_ops_triton::channel_adversarial_dropout_mask (channel-wise, from (g, h) of shape (N, C, *)).

Channel-wise: `_channel_impact` reduces s_nc = sum_hw g h over H*W, one program per (sample, block of
channels), with a [BLOCK_C, BLOCK_P] fp32 accumulator summed by tl.sum at the end (fixed order:
deterministic) and works for NCHW and channels_last alike (strides are arguments).

Selection (both ops), `_search_rows`, one program per row, entirely in Triton:
  a_u = |J_u| for candidates ((2 m0 - 1) sign(J) < 0), else 0, so a >= 0 and its IEEE bit pattern, read as
  a signed integer, is ordered like its value. The (L+1)-th largest value t is found by a bisection on
  that integer: the largest bit pattern b with #{u : bits(a_u) >= b} >= L + 1 (32 steps in float32, 64 in
  float64; each step counts over the row held in registers, or, for rows longer than ROW_BLOCK, one
  counting pass over the row; integer sums: exact). When L + 1 > U no pattern
  qualifies but 0, so t = 0 as the SPEC asks. Then flip exactly the units with a > t, m = |m0 - flip|,
  and rescale by U / sum(m) when asked (and L > 0). A row holding a NaN gives a NaN row, except with L == 0,
which returns m0 unchanged (SPEC section 4 step 1).
The result carries no gradient (no autograd registered: the inputs are detached by uda_ops.functional).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import _common as K


@triton.jit
def _candidate_value(j_ptr, m_ptr, offs, mask, HAS_M0: tl.constexpr, F64: tl.constexpr):
    j = K.to_acc(tl.load(j_ptr + offs, mask=mask, other=0.0), F64)
    if HAS_M0:
        m0 = K.to_acc(tl.load(m_ptr + offs, mask=mask, other=1.0), F64)
    else:
        m0 = tl.full(j.shape, 1.0, j.dtype)
    kept = m0 != 0
    cand = tl.where(kept, j < 0, j > 0)
    a = tl.where(cand & mask, tl.abs(j), tl.zeros_like(j))
    return j, m0, a


@triton.jit
def _chunk(j_row, m_row, u0, U, HAS_M0: tl.constexpr, F64: tl.constexpr, BLOCK_U: tl.constexpr):
    """Units u = u0 .. u0 + BLOCK_U - 1 of one row (j_row, m_row: pointers to the row's first unit, offset by the
    int64 row * U): their int64 offsets u, mask u < U and (j, m0, a). u has U's type: int64 in the chunked search
    (an int32 u0 + arange wraps past 2^31 - BLOCK_U units, and so would the loop counter u0), int32 in the
    one-chunk search (U <= BLOCK_U <= ROW_BLOCK)."""
    u = u0 + tl.arange(0, BLOCK_U)
    offs = u.to(tl.int64)
    mask = u < U
    j, m0, a = _candidate_value(j_row, m_row, offs, mask, HAS_M0, F64)
    return offs, mask, j, m0, a


@triton.jit
def _chunk_nan_count(j_row, m_row, u0, U, HAS_M0: tl.constexpr, F64: tl.constexpr, BLOCK_U: tl.constexpr):
    offs, mask, j, m0, a = _chunk(j_row, m_row, u0, U, HAS_M0, F64, BLOCK_U)
    return tl.sum(((j != j) & mask).to(tl.int32), axis=0)


@triton.jit
def _chunk_count_at_least(j_row, m_row, u0, U, mid, HAS_M0: tl.constexpr, F64: tl.constexpr, BLOCK_U: tl.constexpr):
    offs, mask, j, m0, a = _chunk(j_row, m_row, u0, U, HAS_M0, F64, BLOCK_U)
    bits = _float_to_bits(a, F64)
    return tl.sum(((bits >= mid) & mask).to(tl.int64), axis=0)


@triton.jit
def _chunk_mask_sum(j_row, m_row, u0, U, t, HAS_M0: tl.constexpr, F64: tl.constexpr, BLOCK_U: tl.constexpr):
    offs, mask, j, m0, a = _chunk(j_row, m_row, u0, U, HAS_M0, F64, BLOCK_U)
    m = tl.where(a > t, 1.0 - m0, m0)
    return tl.sum(tl.where(mask, m, 0.0), axis=0)


@triton.jit
def _chunk_store(j_row, m_row, out_row, u0, U, t, scale, make_nan, HAS_M0: tl.constexpr, F64: tl.constexpr,
                 BLOCK_U: tl.constexpr):
    offs, mask, j, m0, a = _chunk(j_row, m_row, u0, U, HAS_M0, F64, BLOCK_U)
    m = tl.where(a > t, 1.0 - m0, m0) * scale
    m = tl.where(make_nan, float("nan"), m)  # L == 0: m0 unchanged (SPEC 4 step 1)
    K.store(out_row, offs, m, mask)


@triton.jit
def _search_rows(j_ptr, m_ptr, out_ptr, U, L, HAS_M0: tl.constexpr, RESCALE: tl.constexpr, F64: tl.constexpr,
                 ONE_CHUNK: tl.constexpr, BLOCK_U: tl.constexpr):
    if not ONE_CHUNK:  # a long row: the in-row index, the loop counter and every offset in int64 (see _chunk)
        U = tl.cast(U, tl.int64)
    row_off = tl.program_id(0).to(tl.int64) * U
    j_row, m_row, out_row = j_ptr + row_off, m_ptr + row_off, out_ptr + row_off
    if F64:
        hi = tl.full([], 0x7FF0000000000001, tl.int64)  # the bit pattern just above +inf
    else:
        hi = tl.full([], 0x7F800001, tl.int32)
    lo = tl.zeros_like(hi)
    k = L + 1
    nan_count = tl.zeros([], tl.int32)
    for u0 in range(0, U, BLOCK_U):
        nan_count += _chunk_nan_count(j_row, m_row, u0, U, HAS_M0, F64, BLOCK_U)
    # bisection for the bit pattern of the (L+1)-th largest candidate value
    if ONE_CHUNK:  # the whole row stays in registers: one load, then 32 (float64: 64) compare-and-count steps
        offs, mask, j, m0, a = _chunk(j_row, m_row, 0, U, HAS_M0, F64, BLOCK_U)
        bits = _float_to_bits(a, F64)
        for _ in range(64 if F64 else 32):
            mid = lo + (hi - lo) // 2
            cnt = tl.sum(((bits >= mid) & mask).to(tl.int32), axis=0)
            ok = cnt >= k
            lo = tl.where(ok, mid, lo)
            hi = tl.where(ok, hi, mid)
    else:  # long rows: one counting pass over the row per step
        for _ in range(64 if F64 else 32):
            mid = lo + (hi - lo) // 2
            cnt = tl.zeros([], tl.int64)
            for u0 in range(0, U, BLOCK_U):
                cnt += _chunk_count_at_least(j_row, m_row, u0, U, mid, HAS_M0, F64, BLOCK_U)
            ok = cnt >= k
            lo = tl.where(ok, mid, lo)
            hi = tl.where(ok, hi, mid)
    t = _bits_to_float(lo, F64)
    total = tl.zeros([], tl.float64) if F64 else tl.zeros([], tl.float32)
    for u0 in range(0, U, BLOCK_U):
        total += _chunk_mask_sum(j_row, m_row, u0, U, t, HAS_M0, F64, BLOCK_U)
    scale = tl.where(total > 0, U / tl.where(total > 0, total, 1.0), 1.0) if RESCALE else 1.0
    make_nan = (nan_count > 0) & (L > 0)
    for u0 in range(0, U, BLOCK_U):
        _chunk_store(j_row, m_row, out_row, u0, U, t, scale, make_nan, HAS_M0, F64, BLOCK_U)


@triton.jit
def _float_to_bits(x, F64: tl.constexpr):
    if F64:
        b = x.to(tl.int64, bitcast=True)
    else:
        b = x.to(tl.int32, bitcast=True)
    return b


@triton.jit
def _bits_to_float(bits, F64: tl.constexpr):
    if F64:
        v = bits.to(tl.float64, bitcast=True)
    else:
        v = bits.to(tl.float32, bitcast=True)
    return v


@triton.jit
def _channel_impact(g_ptr, h_ptr, out_ptr, C, HW, c_stride, p_stride, F64: tl.constexpr, BLOCK_C: tl.constexpr,
                    BLOCK_P: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    base = n * C * HW + c.to(tl.int64) * c_stride
    if F64:
        acc = tl.zeros([BLOCK_C, BLOCK_P], tl.float64)
    else:
        acc = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    for p0 in range(0, HW, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        m = cmask[:, None] & (p < HW)[None, :]
        off = base[:, None] + p.to(tl.int64)[None, :] * p_stride
        g = K.to_acc(tl.load(g_ptr + off, mask=m, other=0.0), F64)
        h = K.to_acc(tl.load(h_ptr + off, mask=m, other=0.0), F64)
        acc += g * h
    K.store(out_ptr, n * C + c, tl.sum(acc, axis=1), cmask)


# Rows of up to ROW_BLOCK units are searched in registers (one load); longer rows in chunks.
ROW_BLOCK = 4096


def _search(jac: Tensor, base_mask: Optional[Tensor], max_flips: int, rescale: bool, dtype: torch.dtype) -> Tensor:
    """jac: dense (N, U) in the accumulation dtype."""
    if max_flips < 0:
        raise RuntimeError(f"adversarial_dropout_mask: max_flips must be >= 0, got {max_flips}")
    N, U = jac.shape
    out = torch.empty((N, U), dtype=dtype, device=jac.device)
    if N == 0 or U == 0:
        return out
    m0 = None
    if base_mask is not None:
        m0 = base_mask.to(device=jac.device, dtype=jac.dtype).expand(N, U).contiguous()
    blk = max(16, min(ROW_BLOCK, K.pow2_ceil(U)))
    K.launch(_search_rows, (N,), jac, m0 if m0 is not None else jac, out, U, int(max_flips), HAS_M0=m0 is not None,
             RESCALE=bool(rescale) and max_flips > 0, F64=jac.dtype == torch.float64,
             ONE_CHUNK=U <= blk, BLOCK_U=blk, num_warps=8 if blk >= 2048 else K.NUM_WARPS)
    return out


@K.op("adversarial_dropout_mask")
def adversarial_dropout_mask(jacobian: Tensor, base_mask: Optional[Tensor], max_flips: int, rescale: bool) -> Tensor:
    if jacobian.dim() != 2:
        raise RuntimeError(f"adversarial_dropout_mask: expected an (N, U) Jacobian, got shape {tuple(jacobian.shape)}")
    K.check_launch("adversarial_dropout_mask", jacobian)
    jac = jacobian.to(K.acc_dtype(jacobian)).contiguous()
    return _search(jac, base_mask, max_flips, rescale, jacobian.dtype)


@K.op("channel_adversarial_dropout_mask")
def channel_adversarial_dropout_mask(grad: Tensor, activation: Tensor, base_mask: Optional[Tensor], max_flips: int,
                                     rescale: bool) -> Tensor:
    op = "channel_adversarial_dropout_mask"
    K.check_pair(op, grad, activation)
    if grad.dim() < 2:
        raise RuntimeError(f"{op}: expected (N, C, *) inputs, got shape {tuple(grad.shape)}")
    K.check_launch(op, grad)
    N, C = grad.shape[0], grad.shape[1]
    L = K.class_layout(grad, 1)
    gc, hc = K.to_layout(grad, 1, L), K.to_layout(activation, 1, L)
    HW = L.pixels // N if N else 0
    rows = L.inner == 1  # class axis contiguous (channels_last or (N, C))
    impact = torch.empty((N, C), dtype=K.acc_dtype(grad), device=grad.device)
    if N and C:
        cap_p = 1024 if K.INTERPRET else 128
        block_p = max(16, min(cap_p, K.pow2_ceil(max(HW, 1))))
        block_c = max(2, min(64 if rows else 16, K.pow2_ceil(C)))
        K.launch(_channel_impact, (N, -(-C // block_c)), gc, hc, impact, C, HW, 1 if rows else HW,
                 C if rows else 1, F64=grad.dtype == torch.float64, BLOCK_C=block_c, BLOCK_P=block_p,
                 num_warps=K.NUM_WARPS)
    return _search(impact, base_mask, max_flips, rescale, grad.dtype)


@adversarial_dropout_mask.register_fake
def _(jacobian, base_mask, max_flips, rescale):
    return jacobian.new_empty(jacobian.shape)


@channel_adversarial_dropout_mask.register_fake
def _(grad, activation, base_mask, max_flips, rescale):
    return grad.new_empty(grad.shape[:2])
