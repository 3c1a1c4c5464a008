"""Argument checks for the public API: one clear ValueError/TypeError naming the argument, before any kernel."""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCTIONS = ("none", "mean", "sum")


def tensor(op: str, name: str, x) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: `{name}` must be float16, bfloat16, float32 or float64, got {x.dtype}")
    return x


def class_dim(op: str, name: str, x: Tensor, dim) -> int:
    """Normalises `dim` and checks that the class axis exists and holds at least 2 classes."""
    if type(dim) is not int:  # the common case skips the ABC check (about 0.2 us per call)
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise TypeError(f"{op}: `dim` must be an int, got {type(dim).__name__}")
        dim = int(dim)
    nd = x.dim()
    if nd == 0 or not -nd <= dim < nd:
        raise ValueError(f"{op}: dim={dim} is out of range for `{name}` of shape {tuple(x.shape)}")
    dim %= nd
    if x.shape[dim] < 2:
        raise ValueError(f"{op}: `{name}` needs at least 2 classes along dim={dim}, "
                         f"got shape {tuple(x.shape)}")
    return dim


def same(op: str, names: Sequence[str], xs: Sequence[Tensor]) -> None:
    """All of `xs` share shape, dtype and device."""
    first, x0 = names[0], xs[0]
    for name, x in zip(names[1:], xs[1:]):
        if x.shape != x0.shape:
            raise ValueError(f"{op}: `{first}` and `{name}` must have the same shape, got "
                             f"{tuple(x0.shape)} and {tuple(x.shape)}")
        if x.dtype != x0.dtype:
            raise TypeError(f"{op}: `{first}` and `{name}` must have the same dtype, got "
                            f"{x0.dtype} and {x.dtype}")
        if x.device != x0.device:
            raise ValueError(f"{op}: `{first}` and `{name}` must be on the same device, got "
                             f"{x0.device} and {x.device}")


def pair(op: str, names: Sequence[str], a, b, dim) -> int:
    tensor(op, names[0], a)
    tensor(op, names[1], b)
    same(op, names, (a, b))
    return class_dim(op, names[0], a, dim)


def reduction(op: str, value) -> str:
    if value not in REDUCTIONS:
        raise ValueError(f"{op}: `reduction` must be one of {REDUCTIONS}, got {value!r}")
    return value


def real(op: str, name: str, value, lo: Optional[float] = None, hi: Optional[float] = None) -> float:
    """A finite real number (a one-element tensor is read with .item(), outside torch.compile), in [lo, hi]."""
    if isinstance(value, Tensor) and value.numel() == 1:
        if torch.compiler.is_compiling():
            raise TypeError(f"{op}: `{name}` must be a Python number under torch.compile, got a Tensor")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: `{name}` must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{op}: `{name}` must be a finite number, got {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{op}: `{name}` must lie in [{lo}, {hi}], got {value}")
    return value


def batch_class_dim(op: str, name: str, x: Tensor, dim) -> int:
    """class_dim for the losses that work per sample: axis 0 is the batch, so the class axis is another one."""
    dim = class_dim(op, name, x, dim)
    if dim == 0:
        raise ValueError(f"{op}: `{name}` must be (N, C, *) with its batch on axis 0 and its classes on another, "
                         f"got dim=0 for shape {tuple(x.shape)}")
    return dim


def flip_budget(op: str, units: int, delta, max_flips) -> int:
    """Exactly one of delta / max_flips; returns L = max_flips or int(U * delta) (float64, truncated)."""
    if (delta is None) == (max_flips is None):
        raise ValueError(f"{op}: give exactly one of `delta` and `max_flips`, got "
                         f"delta={delta!r}, max_flips={max_flips!r}")
    if delta is not None:
        delta = real(op, "delta", delta, 0.0, 1.0)
        return int(float(units) * delta)
    if isinstance(max_flips, bool) or not isinstance(max_flips, numbers.Integral) or max_flips < 0:
        raise ValueError(f"{op}: `max_flips` must be a non-negative int, got {max_flips!r}")
    return min(int(max_flips), units)  # a row has `units` candidates at most (and the kernels take an int64)


def base_mask(op: str, mask, like: Tensor) -> Optional[Tensor]:
    """A 0/1 float mask broadcastable to `like` ((N, U) or (U,)); returned expanded, never modified."""
    if mask is None:
        return None
    tensor(op, "base_mask", mask)
    if mask.device != like.device:
        raise ValueError(f"{op}: `base_mask` is on {mask.device}, expected {like.device}")
    try:
        mask = mask.expand(like.shape)
    except RuntimeError:
        raise ValueError(f"{op}: `base_mask` of shape {tuple(mask.shape)} does not broadcast to "
                         f"{tuple(like.shape)}") from None
    if not torch.compiler.is_compiling() and mask.numel() and not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"{op}: `base_mask` must hold only 0 and 1")
    return mask
