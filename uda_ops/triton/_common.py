"""Helpers shared by every Triton kernel of uda_ops: the canonical (outer, C, inner) view of an input (the
Python twin of csrc/layout.h), the per-pixel gradient reader, block-size choice, launch checks, and the
@triton.jit building blocks (accumulation-dtype loads, the two-pass softmax statistics, mul0/diff0).

Kernel contract (the same as the CPU/CUDA kernels): a program owns BLOCK consecutive pixels of the
canonical view; element (o, c, i) of pixel p = o * inner + i lives at o * C * inner + c * inner + i, so
for NCHW inputs (planes) the lanes are contiguous and the class stride is `inner`, and for channels_last
inputs (rows, inner = 1) the class axis is the contiguous one. Classes are walked by a loop. The softmax is
two-pass: pass 1 takes the per-pixel max, pass 2 accumulates exp(z - max) and whatever statistics the op
needs (unnormalised, divided once at the end), a third pass (backward and same-shape outputs only) writes
the per-class result. Accumulation is float32 (float64 for float64 input); loads and stores use the tensor
dtype. Tail lanes load 0 and are masked at the store (never -inf, which would give NaN). A pixel whose
logits are all -inf gets max = -inf and z - max = NaN, and a NaN logit makes the exp-sum NaN: both pixels
yield NaN (SPEC section 6). Every reduction is a fixed-order loop or tl.sum: no atomics, deterministic.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

LIB = "uda_ops_triton"


# ---------------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------------
@dataclass
class Layout:
    outer: int
    classes: int
    inner: int
    moved: bool  # class axis moved last without a copy (channels_last-like input)

    @property
    def pixels(self) -> int:
        return self.outer * self.inner


def class_layout(x: Tensor, dim: int) -> Layout:
    """Same decision as csrc/layout.h class_layout: rows (class axis contiguous) or planes."""
    dim = dim % x.dim()
    C = x.shape[dim]
    moved = (not x.is_contiguous()) and x.movedim(dim, -1).is_contiguous()
    if moved or dim == x.dim() - 1:
        return Layout(math.prod(s for i, s in enumerate(x.shape) if i != dim), C, 1, moved)
    return Layout(math.prod(x.shape[:dim]), C, math.prod(x.shape[dim + 1:]), False)


def to_layout(x: Tensor, dim: int, L: Layout) -> Tensor:
    """`x` densely in the memory order of `L` (no copy when it already is)."""
    dim = dim % x.dim()
    return x.movedim(dim, -1).contiguous() if L.moved else x.contiguous()


def empty_in_layout(like: Tensor, dim: int, L: Layout, dtype: torch.dtype) -> Tensor:
    """A new tensor shaped like `like` in the memory order of `L` (channels_last stays channels_last)."""
    dim = dim % like.dim()
    if not L.moved:
        return torch.empty(like.shape, dtype=dtype, device=like.device)
    return torch.empty(like.movedim(dim, -1).shape, dtype=dtype, device=like.device).movedim(-1, dim)


def map_shape(x: Tensor, dim: int):
    dim = dim % x.dim()
    return [s for i, s in enumerate(x.shape) if i != dim]


def canonical_view(t: Tensor, dim: int, L: Layout) -> Tuple[Tensor, int, int, int]:
    """`t` (shaped like the input) as an (outer, C, inner) view and its three strides, without a copy where a
    view exists: an expanded gradient (the backward of .sum()/.mean()) keeps its 0 strides and is read in
    place. Otherwise a dense copy in the memory order of `L`."""
    dim = dim % t.dim()
    shape = (L.outer, L.classes, L.inner)
    try:
        v = (t.movedim(dim, -1) if L.moved else t).view(shape)
    except RuntimeError:
        v = to_layout(t, dim, L).view(shape)
    return (v, *v.stride())


def acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def pixel_grad(grad: Tensor, dtype: torch.dtype, pixels: int) -> Tuple[Tensor, int]:
    """The per-pixel upstream gradient as (storage, stride): an expanded scalar (the backward of
    .sum()/.mean()) is read in place with stride 0, never materialised; anything else is made dense."""
    if grad.numel() != pixels:
        raise RuntimeError(f"uda_ops: gradient has {grad.numel()} elements, expected {pixels}")
    if grad.dim() > 0 and grad.numel() > 0 and all(st == 0 or sz == 1 for st, sz in zip(grad.stride(), grad.size())):
        return grad.as_strided((1,), (1,)).to(dtype), 0
    return grad.to(dtype).contiguous(), 1


def check_launch(op: str, *xs: Tensor) -> None:
    """Triton runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1 only."""
    for x in xs:
        if x.device.type == "cpu" and not INTERPRET:
            raise RuntimeError(f"uda_ops: the triton backend ({op}) runs on CUDA tensors; CPU tensors need "
                               "TRITON_INTERPRET=1 set before triton is first imported")
        if x.dtype == torch.bfloat16 and x.device.type == "cpu":
            raise RuntimeError(f"uda_ops: the Triton interpreter has no bfloat16 ({op}); cast the input")


def check_classes(op: str, L: Layout) -> None:
    if L.classes < 2:
        raise RuntimeError(f"{op}: needs at least 2 classes along dim, got {L.classes}")


def check_pair(op: str, a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        raise RuntimeError(f"{op}: inputs must have the same shape, dtype and device, got "
                           f"{tuple(a.shape)}/{a.dtype}/{a.device} and {tuple(b.shape)}/{b.dtype}/{b.device}")


def pixel_block(pixels: int) -> int:
    """Pixels per program: large under the interpreter (few, wide numpy steps), 1024 on GPU (enough bytes
    in flight per SM for a memory-bound kernel with a class loop; to be tuned from GPU benchmarks)."""
    cap = 16384 if INTERPRET else 1024
    return max(16, min(cap, triton.next_power_of_2(max(pixels, 1))))


def pixel_grid(pixels: int, block: int):
    return (triton.cdiv(pixels, block),)


NUM_WARPS = 4


def device_guard(device: torch.device):
    """Makes `device` current for a launch: Triton launches on the current device's current stream, so a
    tensor on cuda:1 while cuda:0 is current runs on cuda:1 and on cuda:1's current stream."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def launch(kernel, grid, *args, **meta) -> None:
    """Every Triton launch of uda_ops: kernel[grid](*args, **meta) on the device of args[0] (a tensor) and on
    that device's current stream."""
    with device_guard(args[0].device):
        kernel[grid](*args, **meta)


# ---------------------------------------------------------------------------------------------------
# Device side
# ---------------------------------------------------------------------------------------------------
@triton.jit
def to_acc(x, F64: tl.constexpr):
    if F64:
        y = x.to(tl.float64)
    else:
        y = x.to(tl.float32)
    return y


@triton.jit
def pixel_offsets(pid, inner, C, P, BLOCK: tl.constexpr):
    """Offsets of class 0 of this program's BLOCK pixels (int64), and the in-range lane mask."""
    p = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = p < P
    inner64 = tl.full([], inner, tl.int64)
    base = (p // inner64) * C * inner64 + p % inner64
    return p, base, mask


@triton.jit
def class_off(base, c, inner):
    """Offset of class c from `base` in int64 (c * inner overflows int32 past 2^31 elements per sample)."""
    return base + tl.cast(c, tl.int64) * inner


@triton.jit
def load_class(ptr, base, c, inner, mask, F64: tl.constexpr):
    """Class c of every lane in the accumulation dtype; tail lanes read 0 (finite: nothing to subtract)."""
    return to_acc(tl.load(ptr + class_off(base, c, inner), mask=mask, other=0.0), F64)


@triton.jit
def class_max(ptr, base, inner, C, mask, F64: tl.constexpr, BLOCK: tl.constexpr):
    """Pass 1: per-lane max over classes (-inf for an all -inf pixel)."""
    m = to_acc(tl.full([BLOCK], float("-inf"), tl.float32), F64)
    for c in range(C):
        m = tl.maximum(m, load_class(ptr, base, c, inner, mask, F64))
    return m


@triton.jit
def exp_sum(ptr, base, inner, C, mask, m, F64: tl.constexpr):
    """Pass 2 for ops that need only the normaliser: sum_c exp(z_c - max)."""
    s = tl.zeros_like(m)
    for c in range(C):
        s += tl.exp(load_class(ptr, base, c, inner, mask, F64) - m)
    return s


@triton.jit
def mul0(w, x):
    """w * x with 0 * anything = 0 (p log p -> 0 for p == 0); a NaN weight stays NaN."""
    return tl.where(w == 0, tl.zeros_like(w * x), w * x)


@triton.jit
def diff0(a, b):
    """a - b, but 0 where a == b (two -inf logits give 0, not NaN)."""
    return tl.where(a == b, tl.zeros_like(a - b), a - b)


@triton.jit
def store(ptr, offs, val, mask):
    tl.store(ptr + offs, val.to(ptr.dtype.element_ty), mask=mask)


# Cosine discrepancy of two softmaxes (cosine_discrepancy and clan_adversarial). The softmax normalisers
# cancel in the cosine, so only e = exp(z - max z) is needed: cos = sum e1 e2 / (|e1| |e2|), and
# dM/dz1_j = -(e1_j e2_j / (|e1||e2|) - cos e1_j^2 / |e1|^2) (symmetrically for z2); |e|^2 >= 1.
@triton.jit
def cosine_stats(z1_ptr, z2_ptr, base, inner, C, mask, F64: tl.constexpr, BLOCK: tl.constexpr):
    m1 = class_max(z1_ptr, base, inner, C, mask, F64, BLOCK)
    m2 = class_max(z2_ptr, base, inner, C, mask, F64, BLOCK)
    s12 = tl.zeros_like(m1)
    s11 = tl.zeros_like(m1)
    s22 = tl.zeros_like(m1)
    for c in range(C):
        e1 = tl.exp(load_class(z1_ptr, base, c, inner, mask, F64) - m1)
        e2 = tl.exp(load_class(z2_ptr, base, c, inner, mask, F64) - m2)
        s12 += e1 * e2
        s11 += e1 * e1
        s22 += e2 * e2
    inv12 = 1.0 / tl.sqrt(s11 * s22)
    return m1, m2, s12 * inv12, inv12, 1.0 / s11, 1.0 / s22


@triton.jit
def cosine_grad(z1_ptr, z2_ptr, g1_ptr, g2_ptr, base, inner, C, mask, m1, m2, cos, inv12, inv11, inv22, gm,
                F64: tl.constexpr):
    """Writes gm * dM/dz1 and gm * dM/dz2 (gm = dL/dM per lane)."""
    for c in range(C):
        off = class_off(base, c, inner)
        e1 = tl.exp(load_class(z1_ptr, base, c, inner, mask, F64) - m1)
        e2 = tl.exp(load_class(z2_ptr, base, c, inner, mask, F64) - m2)
        x = e1 * e2 * inv12
        store(g1_ptr, off, -gm * (x - cos * e1 * e1 * inv11), mask)
        store(g2_ptr, off, -gm * (x - cos * e2 * e2 * inv22), mask)
