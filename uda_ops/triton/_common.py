"""Helpers shared by every Triton kernel of uda_ops: the canonical (outer, C, inner) view of an input (the
Python twin of csrc/layout.h), the per-pixel gradient reader, block-size choice, launch checks, and the
@triton.jit building blocks (accumulation-dtype loads, the softmax statistics, mul0/diff0, exp).

Kernel contract (the same math as the CPU/CUDA kernels): the input is seen as (outer, C, inner). One program
owns BP pixels and their classes as [classes x BP] tiles (`tile_config`). Planes (NCHW, inner > 1): the pixels
of a tile are BP consecutive positions of one plane (contiguous: 128-bit loads), the class stride is `inner`.
Rows (channels_last, (N, C); inner == 1): the pixels are BP consecutive rows, the class axis is the
contiguous one. A program's pixel tile and sample come from one 1-D program id (no per-pixel division);
every offset is int64.

When C fits (ONE, a constexpr) each element is loaded once, exp'd once and the gradients are written from
registers; the statistics are taken in one step (the max, then plain sums, no running max or rescale terms).
Up to C = 64 (planes) or 32 (rows) the classes are split into two power-of-two tiles, CB = the largest power
of two <= C and CB2 = next_pow2(C - CB) (C = 19: 16 + 4, not one tile of 32 with 13 padded classes), so tile 1
has no padded class and no class mask (FULL). Planes (FULL = 1) run one warp per program, so that the classes
of a pixel sit in a few lanes of one warp (warp shuffles, no shared memory). Rows are staged (FULL = 3): the
program's BP rows are one contiguous run of BP * C elements, read with 128-bit loads as a flat block of F =
next_pow2(BP * C) (`staged_flat`) and rearranged into the [classes x BP] tiles by tl.gather, which goes
through shared memory (`load_one`); the tiles are laid out pixel-major, each thread owning all the classes of
its pixels, and the gradients go back the same way (`store_one`: a gather into a flat block, 128-bit stores).
C is a compile-time constant there (SC), so the run's length and the index arithmetic are constants. FULL = 2
(UDA_OPS_TRITON_ROWS_STAGED=0, kept for the GPU comparison) reads the same tiles straight from global memory,
offsets marked non-contiguous (tl.max_contiguous 1) for the pixel-major layout: scalar loads C elements apart,
the bytes of a row shared through L1. Larger rows keep one masked tile of next_pow2(C) classes along the lanes
(CB2 = 0, FULL = 0).
Larger planes are walked in chunks of CB classes with an online max/sum (`softmax_step`, `rescale`; forward:
one read; backward: a second read of each chunk to write the gradients).

Padded classes and tail pixels are loaded as 0, never as -inf (SPEC section 6): padded classes are
neutralised with tl.where, tail pixels compute finite values that are never stored. A pixel whose logits are
all -inf ends with max -inf and NaN exps; a NaN logit makes the exp-sum NaN: both pixels yield NaN (SPEC
section 6). Accumulation is float32 (float64 for float64 input); loads and stores use the tensor dtype.
Every reduction is a fixed-order loop or tl.sum: no atomics, deterministic.

Fused "mean"/"sum" (a forward op's `reduction`, REDUCTIONS): the forward kernel is launched with REDUCE and
its map pointer pointing at a buffer of one partial sum per program (`emit`: tl.sum of the program's valid
pixels, stored at its linear program id; the map is not written); `reduce_output` then sums the partials in
one program, in order and in float64 (`_reduce_partials`), and scales by 1/pixels for the mean.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import struct
from dataclasses import dataclass
from functools import cached_property
from types import SimpleNamespace
from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _ops

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

LIB = "uda_ops_triton"


# ---------------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
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


def check_grad_dtype(grad: Tensor) -> None:
    """An upstream gradient is floating point (csrc/layout.h check_grad_dtype)."""
    if not grad.dtype.is_floating_point:
        raise RuntimeError(f"uda_ops: gradient must be floating point, got {grad.dtype}")


def pixel_grad(grad: Tensor, dtype: torch.dtype, pixels: int) -> Tuple[Tensor, int]:
    """The per-pixel upstream gradient as (storage, stride): an expanded scalar (the backward of
    .sum()/.mean()) is read in place with stride 0, never materialised; anything else is made dense."""
    check_grad_dtype(grad)
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


def pair_inputs(op: str, a: Tensor, b: Tensor, dim: int) -> Tuple[Layout, Tensor, Tensor]:
    """What every two-logit op checks first, then its layout and both inputs in it: (L, a, b)."""
    check_pair(op, a, b)
    check_launch(op, a)
    L = class_layout(a, dim)
    check_classes(op, L)
    return L, to_layout(a, dim, L), to_layout(b, dim, L)


# ---------------------------------------------------------------------------------------------------
# Op registration, and the eager path that skips the dispatcher
# ---------------------------------------------------------------------------------------------------
# Each Triton op is a torch custom op (uda_ops_triton::<name>: fake kernel, autograd, opcheck, torch.compile) whose
# body is a plain Python function. A plain eager call does not need the dispatcher's round trips around that body
# (custom_op's autograd wrapper, redispatch, the backend wrapper: a fifth of the Python time of a forward+backward);
# EAGER holds, per op, a torch.autograd.Function over the same body and the same backward formula, whose backward
# calls the backward op's body directly. uda_ops._ops.kernels() hands it out for plain tensors outside
# torch.compile, tracing and dispatch modes; everything else gets the custom ops.
BODIES: dict = {}  # custom op -> (its name, its body: the function the custom op wraps)
EAGER = SimpleNamespace()  # op name -> the eager callable (same signature as the custom op), as attributes


def op(name: str):
    """Decorator: registers `fn` as the custom op uda_ops_triton::<name> (returned) and keeps the plain function as
    its body (BODIES) and, until `autograd` gives the op an autograd.Function, as its eager callable."""
    def wrap(fn):
        custom = torch.library.custom_op(f"{LIB}::{name}", fn, mutates_args=())
        BODIES[custom] = (name, fn)
        setattr(EAGER, name, fn)
        return custom
    return wrap


# Autograd of the Triton ops (Python; the compiled ops' is C++, csrc/autograd.cpp): every backward recomputes from
# the saved inputs, first order only.
def save_inputs(n_tensors: int):
    """setup_context for register_autograd that saves the first `n_tensors` inputs for backward and keeps
    the remaining (non-tensor) arguments as ``ctx.args``: every backward recomputes from the inputs."""
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:n_tensors])
        ctx.args = inputs[n_tensors:]
    return setup_context


def reduced_grad(grad: Tensor, x: Tensor, dim: int, reduction: int) -> Tensor:
    """The per-pixel gradient a backward op takes, from the gradient of a forward op's output: the map's
    gradient as it is, or a reduced op's 0-d gradient expanded over the map (stride 0, never materialised;
    divided by the pixel count for "mean")."""
    if reduction == 0:
        return grad
    dim = dim % x.dim()
    shape = x.shape[:dim] + x.shape[dim + 1:]
    if reduction == REDUCTIONS["mean"]:
        grad = grad / max(1, shape.numel())
    return grad.expand(shape)


class _NoSecondOrder(torch.autograd.Function):
    """The identity on a backward's first `n` tensors (its gradients), whose own backward raises (first_order). The
    rest (the op's saved inputs, the upstream gradients) only link it into the graph: differentiating the
    gradients with respect to them has to pass through it."""

    @staticmethod
    def forward(ctx, op: str, n: int, *tensors: Tensor):
        ctx.op = op
        return tuple(t.view_as(t) for t in tensors[:n])

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(f"uda_ops.{ctx.op}: no second-order gradient (its backward is a fused kernel without a "
                           "derivative of its own); for double backward use uda_ops.set_backend('reference')")


def first_order(op: str, formula):
    """Backward formula `formula(ctx, *grads)` of op `op`, as a first-order gradient only. Where autograd records
    the backward (create_graph=True), the formula runs unrecorded and its gradients pass through _NoSecondOrder, so
    differentiating them again raises. Without it the Triton backward ops, which have no autograd kernel, would be
    taken as constants: second derivatives silently zero or None. Traced backwards (torch.compile, make_fx) are left
    as they are."""
    def backward(ctx, *grads):
        if not torch.is_grad_enabled() or torch.compiler.is_compiling() or _ops._in_dispatch_mode():
            return formula(ctx, *grads)
        with torch.no_grad():
            out = formula(ctx, *grads)
        out = list(out) if isinstance(out, tuple) else [out]
        idx = [i for i, g in enumerate(out) if isinstance(g, Tensor)]
        links = [t for t in (*ctx.saved_tensors, *grads) if isinstance(t, Tensor)]
        for i, g in zip(idx, _NoSecondOrder.apply(op, len(idx), *(out[i] for i in idx), *links)):
            out[i] = g
        return tuple(out) if len(out) > 1 else out[0]
    return backward


def eager_function(name: str, forward, backward, setup_context):
    """The autograd.Function of an op for plain eager calls: `forward(*args)` (the op without the dispatcher),
    `setup_context(ctx, inputs, output)` and the backward formula `backward(ctx, grad)` of its custom op, first order
    only (first_order). Returns its apply. The classic form (forward takes ctx): with a setup_context staticmethod,
    Function.apply binds the arguments with inspect.signature on every call, ~10 us."""
    class Eager(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            output = forward(*args)
            setup_context(ctx, args, output)
            return output

    Eager.backward = staticmethod(first_order(name, backward))
    Eager.__name__ = Eager.__qualname__ = f"Eager_{name}"
    return Eager.apply


def autograd(custom_op, backward, setup_context, backward_op) -> None:
    """custom_op.register_autograd(backward, setup_context), and its EAGER entry = an autograd.Function with the same
    setup_context and backward formula. The formula takes the backward op as its `bwd` keyword (default: the
    custom op `backward_op`, which the compiled graphs need); the eager backward passes its body instead. Both are
    first-order only (first_order: differentiating their gradients raises)."""
    (name, body), (_, bwd) = BODIES[custom_op], BODIES[backward_op]
    custom_op.register_autograd(first_order(name, backward), setup_context=setup_context)
    setattr(EAGER, name, eager_function(name, body, lambda ctx, grad: backward(ctx, grad, bwd=bwd),
                                        setup_context))


# The fused reduction of a forward op (the `reduction` argument): {"none": 0, "mean": 1, "sum": 2}.
REDUCTIONS = _ops.REDUCTIONS
REDUCE_BLOCK = 1024  # lanes of the one program that sums the per-program partials


def check_reduction(op: str, reduction: int) -> None:
    if isinstance(reduction, bool) or reduction not in REDUCTIONS.values():
        raise ValueError(f"{op}: reduction must be 0 (none), 1 (mean) or 2 (sum), got {reduction}")


def forward_output(x: Tensor, dim: int, reduction: int, grid=None) -> Tensor:
    """What a forward kernel writes through its map pointer: the (N, *) map in the accumulation dtype, or
    (reduction 1/2, REDUCE) one partial sum per program of `grid` (none when there are no pixels)."""
    if reduction == 0:
        return torch.empty(map_shape(x, dim), dtype=acc_dtype(x), device=x.device)
    return torch.empty(math.prod(grid) if grid is not None else 0, dtype=acc_dtype(x), device=x.device)


def reduce_output(out: Tensor, reduction: int, pixels: int) -> Tensor:
    """The op's result from what its forward kernel wrote (`forward_output`): the map as it is (reduction 0),
    else a 0-d tensor in the accumulation dtype, sum(partials) ("sum") or sum(partials) / pixels ("mean"),
    summed in float64 in a fixed order (one program: deterministic). No pixels: 0 ("sum"), NaN ("mean")."""
    if reduction == 0:
        return out
    if out.numel() == 0:
        return torch.full((), 0.0 if reduction == REDUCTIONS["sum"] else float("nan"), dtype=out.dtype,
                          device=out.device)
    res = torch.empty((), dtype=out.dtype, device=out.device)
    launch(_reduce_partials, (1,), out, res, out.numel(), pixels, MEAN=reduction == REDUCTIONS["mean"],
           BLOCK=REDUCE_BLOCK)
    return res


@dataclass(frozen=True)
class Tile:
    """Launch geometry of a loss kernel: Q pixels per group, G groups (samples for planes, 1 for rows), the
    element strides of a pixel, a class and a group, BP pixels per program; ONE (C fits): tile 1 of CB classes
    (FULL: all of them real; 1 planes, 3 rows staged, 2 rows read in place) and tile 2 of CB2 (0: none); else
    chunks of CB classes."""
    Q: int
    G: int
    C: int
    q_stride: int
    c_stride: int
    o_stride: int
    CB: int
    BP: int
    CB2: int = 0
    FULL: int = 0

    # Computed once per Tile: tile_config caches its Tiles, so a call reuses them (host time per launch).
    @cached_property
    def ONE(self) -> bool:
        return self.C <= self.CB + self.CB2

    @cached_property
    def NQ(self) -> int:
        return -(-self.Q // self.BP)

    @cached_property
    def grid(self):
        return (self.NQ * self.G,)

    @cached_property
    def args(self):
        return (self.Q, self.NQ, self.C, self.q_stride, self.c_stride, self.o_stride)

    @cached_property
    def meta(self):
        meta = {"CB": self.CB, "CB2": self.CB2, "BP": self.BP, "ONE": self.ONE, "FULL": self.FULL,
                "num_warps": tile_warps(self.FULL)}
        if self.FULL == 3:  # staged rows: C a compile-time constant (one compilation per class count <= 32)
            meta["SC"] = self.C
        return meta


# Elements of one input tile per program, per layout (in flight per program: small enough that the chip's
# whole set of resident programs fits in L2, and that a C <= CB tile and its exps stay in registers without
# spills: rows tiles are scalar loads with padded classes, so half), and the most classes one tile holds
# before C is walked in chunks. The split tiles (FULL) hold ONE_ELEMENTS per warp over all inputs (80 a
# thread: fp32 sym_kl at C = 19 on planes is 16 + 4 classes x 4 pixels x 2 inputs, in 128 registers without
# spills; float64 a quarter of that), up to MAX_SPLIT classes.
TILE_ELEMENTS = {"planes": 4096, "rows": 2048}
# Staged rows (FULL = 3): at most STAGE_ELEMENTS elements in a program's flat block (F = next_pow2(BP * C): 32
# fp32 registers a thread at 4 warps, and 16 KB of shared memory, one buffer that all its gathers reuse), and
# whether rows are staged (UDA_OPS_TRITON_ROWS_STAGED=0: read in place, FULL = 2).
STAGE_ELEMENTS = 4096
ROWS_STAGED = os.environ.get("UDA_OPS_TRITON_ROWS_STAGED", "1") not in ("", "0")
ONE_ELEMENTS = 2560
MAX_CB = {"planes": 64, "rows": 1024}
MAX_SPLIT = {"planes": 64, "rows": 32}


# Host-side integer helpers in plain Python: triton.cdiv / next_power_of_2 are ConstexprFunctions in Triton 3.9,
# microseconds a call on the launch path.
def _pow2_floor(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def pow2_ceil(n: int) -> int:
    """The least power of 2 >= n (0 for 0), as triton.next_power_of_2."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


def tile_config(L: Layout, dtype: torch.dtype, inputs: int = 1) -> Tile:
    """The tile table, keyed by the layout, the class count, the dtype (float64 takes two registers an element:
    half the elements, a quarter in the split tiles) and the number of class tiles the op reads at once
    (`inputs`, which divides the element budget). Cached per key; the budgets above are part of the key, so a
    test that changes them gets fresh tiles."""
    budgets = (ONE_ELEMENTS, NUM_WARPS, STAGE_ELEMENTS, ROWS_STAGED, *TILE_ELEMENTS.values(), *MAX_CB.values(),
               *MAX_SPLIT.values())
    return _tile_config(L, dtype, inputs, budgets)


@functools.lru_cache(maxsize=1024)
def _tile_config(L: Layout, dtype: torch.dtype, inputs: int, budgets: tuple) -> Tile:
    rows = L.inner == 1
    kind = "rows" if rows else "planes"
    f64 = 2 if dtype == torch.float64 else 1
    if rows:
        Q, G, qs, cs, os_ = L.outer, 1, L.classes, 1, 0
    else:
        Q, G, qs, cs, os_ = L.inner, L.outer, 1, L.inner, L.classes * L.inner
    q_max = pow2_ceil(Q)
    if L.classes <= min(MAX_SPLIT[kind], MAX_CB[kind]):
        cb = _pow2_floor(L.classes)
        cb2 = pow2_ceil(L.classes - cb) if L.classes > cb else 0
        full = (3 if ROWS_STAGED else 2) if rows else 1
        per_warp = ONE_ELEMENTS // inputs // f64 ** 2 // (cb + cb2)  # pixels (float64: a quarter, no spills)
        bp = min(_pow2_floor(per_warp * tile_warps(full)), q_max)
        if full == 3:  # the flat block: F = BP * CB * (2 if CB2 else 1) elements (staged_flat)
            bp = min(bp, _pow2_floor(max(1, STAGE_ELEMENTS // f64 // (cb * (2 if cb2 else 1)))))
        return Tile(Q, G, L.classes, qs, cs, os_, cb, bp, CB2=cb2, FULL=full)
    cb = min(pow2_ceil(L.classes), MAX_CB[kind])
    bp = max(1, min(TILE_ELEMENTS[kind] // inputs // f64 // cb, q_max))
    return Tile(Q, G, L.classes, qs, cs, os_, cb, bp)


NUM_WARPS = 4


def tile_warps(full: int) -> int:
    """Warps per program: one for the split planes tiles (FULL = 1), so a pixel's classes stay in one warp."""
    return 1 if full == 1 else NUM_WARPS


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


# e^x as one MUFU.EX2 of x * log2(e) with subnormal results flushed to 0 (ex2.approx.ftz.f32): tl.exp lowers to
# ex2.approx.f32, whose subnormal handling costs four more instructions an element. Under the interpreter
# (which runs no PTX), and for float64, tl.exp.
FAST_EXP = tl.constexpr(not INTERPRET)


# The split planes tiles (FULL = 1) at most PIXEL_VEC pixels a vector (UDA_OPS_TRITON_PIXEL_VEC; 0, the default:
# Triton's 128 bits, 8 pixels of bf16/fp16). 4 gives 16-bit dtypes 64-bit loads and stores: a warp's 64 pixels then
# span 16 lanes, so a pixel's classes sit on 2 lanes instead of 4 and each class reduction needs one shuffle level
# instead of two (bf16 sym_kl at C = 19: 1600 -> 1312 SASS instructions forward, 2312 -> 2056 backward; fp32 and
# fp64 compile to the same code). Bytes in flight are the same (twice the loads, half the width). An experiment
# until a GPU measures it (benchmarks/gpu_lease.sh runs both).
PIXEL_VEC = tl.constexpr(int(os.environ.get("UDA_OPS_TRITON_PIXEL_VEC", "0") or 0))


@triton.jit
def exp(x):
    if FAST_EXP and x.dtype == tl.float32:
        y = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x * 1.4426950408889634],
                                      dtype=tl.float32, is_pure=True, pack=1)
    else:
        y = tl.exp(x)
    return y


@triton.jit
def class_off(base, c, inner):
    """Offset of class c from `base` in int64 (c * inner overflows int32 past 2^31 elements per sample)."""
    return base + tl.cast(c, tl.int64) * inner


@triton.jit
def tile_pixels(NQ, BP: tl.constexpr):
    """This program's group o (sample for planes, 0 for rows) and its BP pixel indices q in the group (int64)."""
    pid = tl.program_id(0)
    o = (pid // NQ).to(tl.int64)
    q = (pid % NQ).to(tl.int64) * BP + tl.arange(0, BP)
    return o, q


@triton.jit
def tile_offsets(o, q, c0, Q, C, q_stride, c_stride, o_stride, CB: tl.constexpr):
    """int64 offsets of the [CB x BP] tile of classes c0.. of pixels q of group o, and its in-range mask."""
    c = c0 + tl.arange(0, CB)
    mask = (c < C)[:, None] & (q < Q)[None, :]
    offs = o * o_stride + class_off(q[None, :] * q_stride, c[:, None], c_stride)
    return offs, mask


@triton.jit
def one_offsets(o, q, Q, C, q_stride, c_stride, o_stride, CB: tl.constexpr, CB2: tl.constexpr,
                FULL: tl.constexpr):
    """ONE: offsets and masks of tile 1 (classes 0..CB-1; FULL: all real, its mask is the pixel mask) and of
    tile 2 (classes CB..CB+CB2-1; with CB2 = 0 there is none and tile 1's are returned twice). FULL = 3 (staged
    rows): the offsets are int32 indices into the program's flat block (pixel p, class c at p * C + c; tile 2's
    padded classes point at class C - 1), for load_one and store_one. FULL = 2 (rows in place): offsets marked
    non-contiguous, for the pixel-major layout (see the module docstring)."""
    if FULL == 3:
        p = tl.arange(0, q.shape[0]) * C
        offs1 = p[None, :] + tl.arange(0, CB)[:, None]
        mask1 = (q < Q)[None, :]
        if CB2 > 0:
            c2 = CB + tl.arange(0, CB2)
            offs2 = p[None, :] + tl.minimum(c2, C - 1)[:, None]
            mask2 = (c2 < C)[:, None] & mask1
        else:
            offs2 = offs1
            mask2 = mask1
    else:
        offs1, mask1 = tile_offsets(o, q, 0, Q, C, q_stride, c_stride, o_stride, CB)
        if FULL:
            mask1 = (q < Q)[None, :]
        if CB2 > 0:
            offs2, mask2 = tile_offsets(o, q, CB, Q, C, q_stride, c_stride, o_stride, CB2)
        else:
            offs2 = offs1
            mask2 = mask1
        if FULL == 2:
            offs1 = tl.max_contiguous(offs1, [1, 1])
            offs2 = tl.max_contiguous(offs2, [1, 1])
        if FULL == 1 and PIXEL_VEC > 0:
            offs1 = tl.max_contiguous(offs1, [1, PIXEL_VEC])
            offs2 = tl.max_contiguous(offs2, [1, PIXEL_VEC])
    return offs1, mask1, offs2, mask2


@triton.jit
def staged_flat(ptr, Q, C, BP: tl.constexpr, F: tl.constexpr):
    """Staged rows: this program's run of BP rows (BP * C contiguous elements from row pid * BP) as a flat block of
    F >= BP * C elements, 0 past the run. A full run's length is a constant multiple of BP, so Triton issues
    128-bit loads; only the last program's partial run is read element by element."""
    q0 = tl.program_id(0).to(tl.int64) * BP
    i = tl.arange(0, F).to(tl.int64)  # int64 offsets throughout (tests/test_large.py)
    if q0 + BP <= Q:
        flat = tl.load(ptr + (q0 * C + i), mask=i < BP * C, other=0.0)
    else:
        flat = tl.load(ptr + (q0 * C + i), mask=i < (Q - q0) * C, other=0.0)
    return flat


@triton.jit
def staged_tile(flat, idx):
    """The [classes x BP] tile of a staged flat block at the int32 indices `idx` (one_offsets, FULL = 3)."""
    n: tl.constexpr = idx.shape[0] * idx.shape[1]
    return tl.reshape(tl.gather(flat, tl.reshape(idx, [n]), 0), [idx.shape[0], idx.shape[1]])


@triton.jit
def load_one(ptr, offs1, mask1, offs2, mask2, Q, C, F64: tl.constexpr, CB2: tl.constexpr, FULL: tl.constexpr):
    """ONE: both tiles of one input (tile 2 is tile 1 when CB2 = 0); FULL = 3: through the flat block."""
    if FULL == 3:
        BP: tl.constexpr = offs1.shape[1]
        F: tl.constexpr = BP * offs1.shape[0] * (2 if CB2 > 0 else 1)
        flat = staged_flat(ptr, Q, C, BP, F)
        z1 = to_acc(staged_tile(flat, offs1), F64)
        if CB2 > 0:
            z2 = to_acc(staged_tile(flat, offs2), F64)
        else:
            z2 = z1
    else:
        z1 = load_tile(ptr, offs1, mask1, F64)
        if CB2 > 0:
            z2 = load_tile(ptr, offs2, mask2, F64)
        else:
            z2 = z1
    return z1, z2


@triton.jit
def store_one(ptr, offs1, v1, mask1, offs2, v2, mask2, Q, C, CB2: tl.constexpr, FULL: tl.constexpr):
    """ONE: writes both tiles of one per-class output (v2 ignored when CB2 = 0). FULL = 3: the tiles are gathered
    into the flat block of the program's run (element i = row i // C, class i % C) and stored with 128-bit
    stores."""
    if FULL == 3:
        CB: tl.constexpr = v1.shape[0]
        BP: tl.constexpr = v1.shape[1]
        F: tl.constexpr = BP * CB * (2 if CB2 > 0 else 1)
        dt = ptr.dtype.element_ty
        i = tl.arange(0, F)
        p = tl.minimum(i // C, BP - 1)  # elements past the run (p >= BP) are not stored
        c = i - p * C
        w = tl.gather(tl.reshape(v1.to(dt), [CB * BP]), tl.minimum(c, CB - 1) * BP + p, 0)
        if CB2 > 0:
            w2 = tl.gather(tl.reshape(v2.to(dt), [CB2 * BP]), tl.minimum(tl.maximum(c - CB, 0), CB2 - 1) * BP + p, 0)
            w = tl.where(c < CB, w, w2)
        q0 = tl.program_id(0).to(tl.int64) * BP
        offs = q0 * C + i.to(tl.int64)
        if q0 + BP <= Q:
            tl.store(ptr + offs, w, mask=i < BP * C)
        else:
            tl.store(ptr + offs, w, mask=i < (Q - q0) * C)
    else:
        store(ptr, offs1, v1, mask1)
        if CB2 > 0:
            store(ptr, offs2, v2, mask2)


@triton.jit
def softmax_one(z1, mask1, z2, mask2, CB2: tl.constexpr, FULL: tl.constexpr):
    """ONE: the per-pixel max m over both tiles and e = exp(z - m) of each, 0 at padded classes (no diff0: a
    pixel all -inf has m = -inf and NaN exps, and yields NaN anyway)."""
    if FULL:
        m = tl.max(z1, axis=0)
    else:
        m = tl.max(tl.where(mask1, z1, float("-inf")), axis=0)
    if CB2 > 0:
        m = tl.maximum(m, tl.max(tl.where(mask2, z2, float("-inf")), axis=0))
    e1 = exp(z1 - m[None, :])
    if not FULL:
        e1 = tl.where(mask1, e1, 0.0)
    if CB2 > 0:
        e2 = tl.where(mask2, exp(z2 - m[None, :]), 0.0)
    else:
        e2 = e1
    return m, e1, e2


@triton.jit
def sum2(x1, x2, CB2: tl.constexpr):
    """The per-pixel sum over the classes of both tiles of a per-element value (x2 ignored when CB2 = 0)."""
    s = tl.sum(x1, axis=0)
    if CB2 > 0:
        s += tl.sum(x2, axis=0)
    return s


@triton.jit
def load_tile(ptr, offs, mask, F64: tl.constexpr):
    """A tile in the accumulation dtype; out-of-range elements read 0 (finite) and are masked by the caller."""
    return to_acc(tl.load(ptr + offs, mask=mask, other=0.0), F64)


@triton.jit
def load_pair(a_ptr, b_ptr, o, q, c0, Q, C, q_stride, c_stride, o_stride, F64: tl.constexpr, CB: tl.constexpr):
    """The same tile (classes c0.., pixels q of group o) of two inputs: offsets, mask, a, b."""
    offs, mask = tile_offsets(o, q, c0, Q, C, q_stride, c_stride, o_stride, CB)
    return offs, mask, load_tile(a_ptr, offs, mask, F64), load_tile(b_ptr, offs, mask, F64)


@triton.jit
def neg_inf(q, F64: tl.constexpr):
    """Per-pixel -inf in the accumulation dtype: the running max before the first chunk."""
    return to_acc(tl.full(q.shape, float("-inf"), tl.float32), F64)


@triton.jit
def pair_max(a_ptr, b_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64: tl.constexpr, CB: tl.constexpr):
    """Per-pixel maxima of two inputs over all C classes, chunk by chunk: the first read of the two-pass
    (max, then sums w.r.t. the final max) chunked path."""
    ma = neg_inf(q, F64)
    mb = ma
    for c0 in range(0, C, CB):
        offs, mask, a, b = load_pair(a_ptr, b_ptr, o, q, c0, Q, C, q_stride, c_stride, o_stride, F64, CB)
        ma = tl.maximum(ma, tl.max(tl.where(mask, a, float("-inf")), axis=0))
        mb = tl.maximum(mb, tl.max(tl.where(mask, b, float("-inf")), axis=0))
    return ma, mb


@triton.jit
def chunk_exp(z, m, mask):
    """e = exp(z - m) for a tile and its per-pixel max m; 0 at padded classes and tail pixels. diff0 gives
    exp(0) = 1 for -inf - -inf (a pixel all -inf so far): cleared by a later finite max (rescale) or, for a
    pixel all -inf, replaced by NaN through inv_sum."""
    return tl.where(mask, exp(diff0(z, m[None, :])), 0.0)


@triton.jit
def softmax_step(m, z, mask):
    """Online softmax over one chunk of classes (C > CB): the new running max m', the factor alpha = exp(m - m')
    that rescales sums over earlier chunks, and e = exp(z - m') (chunk_exp)."""
    m_new = tl.maximum(m, tl.max(tl.where(mask, z, float("-inf")), axis=0))
    return m_new, exp(diff0(m, m_new)), chunk_exp(z, m_new, mask)


@triton.jit
def rescale(alpha, x):
    """alpha * x for a sum over earlier chunks; alpha == 0 (earlier max -inf, or underflow) clears a finite or
    infinite x, a NaN x stays NaN."""
    return tl.where((alpha == 0) & (x == x), tl.zeros_like(x), alpha * x)


@triton.jit
def inv_sum(m, s):
    """1 / s, or NaN for a pixel whose max is infinite: all its logits -inf, or one of them +inf (the chunked path's
    diff0 takes +inf - +inf as 0 and would give that pixel a finite result). Every result of that pixel is NaN."""
    return tl.where(tl.abs(m) == float("inf"), float("nan"), 1.0 / s)


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


def f64_args(*values: float) -> list:
    """Python floats as kernel arguments. Triton passes a Python float as an fp32 scalar, which would cost a
    float64 kernel 8 digits (seen on an H200: lambda 40 and 1/log C rounded to fp32, relative errors of 4e-8 in
    float64 outputs); each value goes as two fp32 numbers, (v rounded, the rest), that `scalar` adds up in float64
    kernels to ~48 bits (fp32 kernels use the first)."""
    out = []
    for v in values:
        hi = struct.unpack("f", struct.pack("f", float(v)))[0]  # v rounded to fp32 (cheaper than a tensor)
        out += [hi, float(v) - hi]
    return out


@triton.jit
def scalar(hi, lo, F64: tl.constexpr):
    """A kernel's float argument passed as f64_args (hi, lo): float64 in F64 kernels, else hi."""
    if F64:
        return tl.cast(hi, tl.float64) + tl.cast(lo, tl.float64)
    else:
        return hi


@triton.jit
def emit(out_ptr, offs, value, mask, REDUCE: tl.constexpr):
    """A forward kernel's result for its pixels: the map values at offs (mask: the valid pixels) or, REDUCE,
    their sum (masked lanes count 0) stored at out_ptr[linear program id] (the grid is 1-D)."""
    if REDUCE:
        part = tl.sum(tl.where(mask, value, 0.0), axis=0)
        tl.store(out_ptr + tl.program_id(0), part.to(out_ptr.dtype.element_ty))
    else:
        store(out_ptr, offs, value, mask)


@triton.jit
def _reduce_partials(part_ptr, res_ptr, n, pixels, MEAN: tl.constexpr, BLOCK: tl.constexpr):
    """One program: res = sum of the n partials (each lane accumulates a fixed stride of them in float64, then
    one tl.sum), divided by `pixels` for MEAN, in res's dtype."""
    acc = tl.zeros([BLOCK], dtype=tl.float64)
    for i in range(0, n, BLOCK):
        offs = i + tl.arange(0, BLOCK)
        acc += tl.load(part_ptr + offs, mask=offs < n, other=0.0).to(tl.float64)
    total = tl.sum(acc, axis=0)
    if MEAN:
        total = total / pixels
    tl.store(res_ptr, total.to(res_ptr.dtype.element_ty))


@triton.jit
def load_map(ptr, o, q, Q, stride, F64: tl.constexpr):
    """A per-pixel map value (the upstream gradient, stride 0 when expanded; CLAN's d) for pixels q of group o."""
    return to_acc(tl.load(ptr + (o * Q + q) * stride, mask=q < Q, other=0.0), F64)


# Cosine discrepancy of two softmaxes (cosine_discrepancy and clan_adversarial). The softmax normalisers
# cancel in the cosine, so only e = exp(z - max z) is needed: cos = sum e1 e2 / (|e1| |e2|), and with
# b1_j = e2_j / (|e1||e2|) - cos e1_j / |e1|^2: dM/dz1_j = -e1_j (b1_j - sum_c e1_c b1_c / S1), S1 = sum e1
# (symmetrically for z2); |e|^2 >= 1. The sum_c e1_c b1_c term (the softmax Jacobian's) is 0 in exact
# arithmetic; computed from the same rounded b1 it takes out most of their rounding, which b1_j's cancellation
# would otherwise magnify (as csrc/cpu/cosine.h). Only for fp32 and fp64 inputs (EXACT): a half-type gradient is
# stored with a rounding far above what the term takes out.
@triton.jit
def cosine_step(m1, m2, s12, s11, s22, z1, z2, mask):
    """One chunk of the cosine sums (online); also returns the chunk's exps e1, e2 (w.r.t. the new maxima)."""
    m1, a1, e1 = softmax_step(m1, z1, mask)
    m2, a2, e2 = softmax_step(m2, z2, mask)
    s12 = rescale(a1 * a2, s12) + tl.sum(e1 * e2, axis=0)
    s11 = rescale(a1 * a1, s11) + tl.sum(e1 * e1, axis=0)
    s22 = rescale(a2 * a2, s22) + tl.sum(e2 * e2, axis=0)
    return m1, m2, s12, s11, s22, e1, e2


@triton.jit
def cosine_one(z1_ptr, z2_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64: tl.constexpr, CB: tl.constexpr,
               CB2: tl.constexpr, FULL: tl.constexpr):
    """ONE: both class tiles of both predictions, one read and one exp per element: the cosine sums in one
    step (no running maxima, no rescale), the exps and the tiles' offsets and masks. Names: e<input><tile>."""
    offs1, mask1, offs2, mask2 = one_offsets(o, q, Q, C, q_stride, c_stride, o_stride, CB, CB2, FULL)
    a1, a2 = load_one(z1_ptr, offs1, mask1, offs2, mask2, Q, C, F64, CB2, FULL)
    b1, b2 = load_one(z2_ptr, offs1, mask1, offs2, mask2, Q, C, F64, CB2, FULL)
    m1, e11, e12 = softmax_one(a1, mask1, a2, mask2, CB2, FULL)
    m2, e21, e22 = softmax_one(b1, mask1, b2, mask2, CB2, FULL)
    s12 = sum2(e11 * e21, e12 * e22, CB2)
    s11 = sum2(e11 * e11, e12 * e12, CB2)
    s22 = sum2(e21 * e21, e22 * e22, CB2)
    return offs1, mask1, offs2, mask2, e11, e12, e21, e22, m1, m2, s12, s11, s22


@triton.jit
def cosine_finish(m1, m2, s12, s11, s22):
    """(cos, 1/(|e1||e2|), 1/|e1|^2, 1/|e2|^2); NaN for a pixel with either prediction all -inf or holding a +inf
    (inv_sum of the maximum of larger magnitude)."""
    inv12 = inv_sum(tl.where(tl.abs(m1) > tl.abs(m2), m1, m2), tl.sqrt(s11 * s22))
    return s12 * inv12, inv12, 1.0 / s11, 1.0 / s22


@triton.jit
def cosine_stats(z1_ptr, z2_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64: tl.constexpr, CB: tl.constexpr,
                 CB2: tl.constexpr, ONE: tl.constexpr, FULL: tl.constexpr):
    """The cosine statistics of a pixel tile (one read per element): in one step when C fits (ONE), else
    online over chunks of CB classes. Returns m1, m2, cos, inv12, inv11, inv22."""
    if ONE:
        offs1, mask1, offs2, mask2, e11, e12, e21, e22, m1, m2, s12, s11, s22 = cosine_one(
            z1_ptr, z2_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, CB2, FULL)
    else:
        m1 = neg_inf(q, F64)
        m2 = neg_inf(q, F64)
        s12 = tl.zeros_like(m1)
        s11 = tl.zeros_like(m1)
        s22 = tl.zeros_like(m1)
        for c0 in range(0, C, CB):
            offs, mask, z1, z2 = load_pair(z1_ptr, z2_ptr, o, q, c0, Q, C, q_stride, c_stride, o_stride, F64, CB)
            m1, m2, s12, s11, s22, e1, e2 = cosine_step(m1, m2, s12, s11, s22, z1, z2, mask)
    cos, inv12, inv11, inv22 = cosine_finish(m1, m2, s12, s11, s22)
    return m1, m2, cos, inv12, inv11, inv22


def cosine_exact(dtype: torch.dtype) -> bool:
    """EXACT of cosine_backward: the softmax-Jacobian term for fp32 and fp64 inputs."""
    return dtype.itemsize >= 4


@triton.jit
def cosine_b(e, f, inv12, c):
    """b of one tile of input e (f: the other input's exps): f / (|e||f|) - cos e / |e|^2, with c = cos / |e|^2."""
    return f * inv12[None, :] - c[None, :] * e


@triton.jit
def cosine_r_add(r1, r2, t1, t2, e1, e2, inv12, c1, c2):
    """r1, r2, t1, t2 plus one tile's share of sum_c e1_c b1_c, sum_c e2_c b2_c, S1 and S2."""
    r1 += tl.sum(e1 * cosine_b(e1, e2, inv12, c1), axis=0)
    r2 += tl.sum(e2 * cosine_b(e2, e1, inv12, c2), axis=0)
    return r1, r2, t1 + tl.sum(e1, axis=0), t2 + tl.sum(e2, axis=0)


@triton.jit
def cosine_grad_tile(e1, e2, inv12, c1, c2, r1, r2, gm, EXACT: tl.constexpr):
    """gm * dM/dz1 and gm * dM/dz2 of one tile (gm = dL/dM per pixel) from its exps; r1, r2 (EXACT): the
    softmax-Jacobian terms sum_c e_c b_c / S."""
    b1 = cosine_b(e1, e2, inv12, c1)
    b2 = cosine_b(e2, e1, inv12, c2)
    if EXACT:
        b1 -= r1[None, :]
        b2 -= r2[None, :]
    return -gm[None, :] * e1 * b1, -gm[None, :] * e2 * b2


@triton.jit
def cosine_backward(z1_ptr, z2_ptr, g1_ptr, g2_ptr, o, q, Q, C, q_stride, c_stride, o_stride, gm,
                    F64: tl.constexpr, CB: tl.constexpr, CB2: tl.constexpr, ONE: tl.constexpr, FULL: tl.constexpr,
                    EXACT: tl.constexpr):
    """Writes gm * dM/dz1, gm * dM/dz2 of a pixel tile and returns cos. ONE: one load and one exp per
    element, gradients from registers; else the online statistics, then each chunk re-read (EXACT: twice, the
    softmax-Jacobian terms first)."""
    if ONE:
        offs1, mask1, offs2, mask2, e11, e12, e21, e22, m1, m2, s12, s11, s22 = cosine_one(
            z1_ptr, z2_ptr, o, q, Q, C, q_stride, c_stride, o_stride, F64, CB, CB2, FULL)
        cos, inv12, inv11, inv22 = cosine_finish(m1, m2, s12, s11, s22)
    else:
        m1, m2, cos, inv12, inv11, inv22 = cosine_stats(z1_ptr, z2_ptr, o, q, Q, C, q_stride, c_stride, o_stride,
                                                        F64, CB, CB2, ONE, FULL)
    c1 = cos * inv11
    c2 = cos * inv22
    r1 = tl.zeros_like(cos)
    r2 = tl.zeros_like(cos)
    if EXACT:
        t1 = tl.zeros_like(cos)
        t2 = tl.zeros_like(cos)
        if ONE:
            r1, r2, t1, t2 = cosine_r_add(r1, r2, t1, t2, e11, e21, inv12, c1, c2)
            if CB2 > 0:
                r1, r2, t1, t2 = cosine_r_add(r1, r2, t1, t2, e12, e22, inv12, c1, c2)
        else:
            for c0 in range(0, C, CB):
                offs, mask = tile_offsets(o, q, c0, Q, C, q_stride, c_stride, o_stride, CB)
                e1 = chunk_exp(load_tile(z1_ptr, offs, mask, F64), m1, mask)
                e2 = chunk_exp(load_tile(z2_ptr, offs, mask, F64), m2, mask)
                r1, r2, t1, t2 = cosine_r_add(r1, r2, t1, t2, e1, e2, inv12, c1, c2)
        r1 = r1 / t1
        r2 = r2 / t2
    if ONE:
        d11, d21 = cosine_grad_tile(e11, e21, inv12, c1, c2, r1, r2, gm, EXACT)
        d12, d22 = d11, d21
        if CB2 > 0:
            d12, d22 = cosine_grad_tile(e12, e22, inv12, c1, c2, r1, r2, gm, EXACT)
        store_one(g1_ptr, offs1, d11, mask1, offs2, d12, mask2, Q, C, CB2, FULL)
        store_one(g2_ptr, offs1, d21, mask1, offs2, d22, mask2, Q, C, CB2, FULL)
    else:
        for c0 in range(0, C, CB):
            offs, mask = tile_offsets(o, q, c0, Q, C, q_stride, c_stride, o_stride, CB)
            e1 = chunk_exp(load_tile(z1_ptr, offs, mask, F64), m1, mask)
            e2 = chunk_exp(load_tile(z2_ptr, offs, mask, F64), m2, mask)
            d1, d2 = cosine_grad_tile(e1, e2, inv12, c1, c2, r1, r2, gm, EXACT)
            store(g1_ptr, offs, d1, mask)
            store(g2_ptr, offs, d2, mask)
    return cos
