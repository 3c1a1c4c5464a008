"""Shared helpers for the suite: tolerances (stated once, per dtype), input generators, and the table of
differentiable ops that the per-op tests walk through.

Every comparison is against ``uda_ops.reference`` evaluated in float64 on the same (already rounded)
inputs, so the tolerance only has to cover the kernel's own accumulation error plus the rounding of the
result to the output dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Sequence

import pytest
import torch

import uda_ops
from uda_ops import reference

# (rtol, atol) of an output or gradient in each dtype, against the float64 oracle.
TOL = {
    torch.float64: (1e-9, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (4e-3, 2e-3),
    torch.bfloat16: (2e-2, 1e-2),
}
DTYPES = list(TOL)
HALF = (torch.float16, torch.bfloat16)

requires_ext = pytest.mark.skipif(not uda_ops.backend_info()["extension"],
                                  reason="compiled extension uda_ops._C not built")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype = None, scale: float = 1.0,
                 msg: str = "") -> None:
    """``actual`` against the float64 ``expected`` with the tolerance of ``dtype`` (default: actual's)."""
    rtol, atol = TOL[dtype or actual.dtype]
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol * scale,
                               equal_nan=True, msg=msg or None)


def logits(shape: Sequence[int], dtype=torch.float32, kind: str = "random", layout: str = "contiguous",
           dim: int = 1, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    """Logits of a given kind, laid out as asked, class axis `dim`.

    kinds: random, large (|z| ~ 1e4), neg_inf (some classes -inf), one_hot, uniform, nan (one NaN
    pixel), all_neg_inf (one pixel all -inf).
    layouts: contiguous, channels_last (class axis innermost in memory), strided (every other element
    of the last axis), transposed (two spatial axes swapped in memory).
    """
    g = torch.Generator().manual_seed(seed)
    shape = list(shape)
    dim = dim % len(shape)
    z = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    C = shape[dim]
    cls_shape = [1] * len(shape)
    cls_shape[dim] = C
    if kind == "large":
        z = z / scale * 1e4
    elif kind == "neg_inf":
        # classes 0 and C-1 masked everywhere, plus random -inf entries that always leave one class.
        masked = torch.zeros(cls_shape, dtype=torch.bool)
        masked.view(-1)[0] = True
        if C > 2:
            masked.view(-1)[-1] = True
        z = z.masked_fill(masked, -math.inf)
        # the same pattern for every seed, so that pairs of logits mask the same classes (else KL = inf)
        extra = torch.rand(shape, generator=torch.Generator().manual_seed(1234)) < 0.2
        keep = torch.zeros(cls_shape, dtype=torch.bool)
        keep.view(-1)[min(1, C - 1)] = True
        z = z.masked_fill(extra & ~keep, -math.inf)
    elif kind == "one_hot":
        hot = torch.randint(0, C, shape[:dim] + [1] + shape[dim + 1:], generator=g)
        z = torch.full(shape, -1e4, dtype=torch.float64).scatter(dim, hot, 0.0)
    elif kind == "uniform":
        z = torch.zeros(shape, dtype=torch.float64)
    elif kind in ("nan", "all_neg_inf"):
        idx = [0] * len(shape)
        if kind == "nan":
            idx[dim] = C // 2
            z[tuple(idx)] = math.nan
        else:
            idx[dim] = slice(None)
            z[tuple(idx)] = -math.inf
    elif kind != "random":
        raise ValueError(kind)
    z = z.to(dtype)
    return _relayout(z, layout, dim)


def _relayout(z: torch.Tensor, layout: str, dim: int) -> torch.Tensor:
    if layout == "contiguous":
        return z.contiguous()
    if layout == "channels_last":  # class axis innermost in memory, logical shape unchanged
        return z.movedim(dim, -1).contiguous().movedim(-1, dim)
    if layout == "strided":
        big = torch.zeros(*z.shape[:-1], 2 * z.shape[-1], dtype=z.dtype)
        big[..., ::2] = z
        return big[..., ::2]
    if layout == "transposed":
        return z.transpose(-1, -2).contiguous().transpose(-1, -2)
    raise ValueError(layout)


@dataclass
class Op:
    """A differentiable op under test: ``fn(inputs, dim)`` returns its unreduced result (map or same
    shape), ``ref`` the same from uda_ops.reference; ``make(shape, dtype, kind, layout, dim)`` its inputs."""
    name: str
    fn: Callable
    ref: Callable
    n_logits: int
    with_d: bool = False  # clan: a discriminator map comes first

    def make(self, shape, dtype=torch.float32, kind="random", layout="contiguous", dim=1, seed=0) -> List:
        xs = [logits(shape, dtype, kind, layout, dim, seed + i) for i in range(self.n_logits)]
        if self.with_d:
            map_shape = [s for i, s in enumerate(shape) if i != dim % len(shape)]
            d = torch.randn(map_shape, generator=torch.Generator().manual_seed(seed + 7), dtype=torch.float64)
            xs = [(d * 4).to(dtype)] + xs
        return xs


CLAN_ARGS = dict(target=1.0, lambda_local=40.0, epsilon=0.4)

OPS = [
    Op("sym_kl", lambda x, dim: uda_ops.sym_kl(*x, dim=dim, reduction="none"),
       lambda x, dim: reference.sym_kl(*x, dim=dim, reduction="none"), 2),
    Op("kl_div", lambda x, dim: uda_ops.kl_div(*x, dim=dim, reduction="none"),
       lambda x, dim: reference.kl_div(*x, dim=dim, reduction="none"), 2),
    Op("entropy", lambda x, dim: uda_ops.entropy(*x, dim=dim, reduction="none"),
       lambda x, dim: reference.entropy(*x, dim=dim, reduction="none"), 1),
    Op("self_information", lambda x, dim: uda_ops.self_information(*x, dim=dim),
       lambda x, dim: reference.self_information(*x, dim=dim), 1),
    Op("cosine_discrepancy", lambda x, dim: uda_ops.cosine_discrepancy(*x, dim=dim),
       lambda x, dim: reference.cosine_discrepancy(*x, dim=dim), 2),
    Op("clan_adversarial", lambda x, dim: uda_ops.clan_adversarial_loss(*x, **CLAN_ARGS, dim=dim, reduction="none"),
       lambda x, dim: reference.clan_adversarial_loss(*x, **CLAN_ARGS, dim=dim, reduction="none"), 2, True),
]
OP_IDS = [op.name for op in OPS]

# Backward op -> its arguments after the upstream gradient, for logits z of shape (2, 3, 4, 5); the gradient has the
# forward's output shape: (2, 4, 5), or z's shape for self_information_backward.
BACKWARDS = {
    "entropy_backward": lambda z: (z, 1),
    "self_information_backward": lambda z: (z, 1),
    "sym_kl_backward": lambda z: (z, z, 1, False),
    "kl_div_backward": lambda z: (z, z, 1, True),
    "cosine_discrepancy_backward": lambda z: (z, z, 1),
    "clan_adversarial_backward": lambda z: (torch.zeros(z.shape[0], *z.shape[2:], device=z.device), z, z, 1.0, 40.0,
                                            0.4, 1, True),
}


def backward_case(name: str, device="cpu"):
    """(the arguments of backward op `name` after the gradient, the shape of its right gradient) for random logits
    (2, 3, 4, 5) on `device`."""
    z = torch.randn(2, 3, 4, 5, device=device)
    return BACKWARDS[name](z), (z.shape if name == "self_information_backward" else (2, 4, 5))


def check_logit_offsets(op: Op, shape, dim: int, dtype) -> None:
    """Every loss sees its logits only through softmax, so adding a per-pixel constant K to an input (here exactly
    representable: logits on a 1/16 grid, K an integer up to 1e4) must leave the value and the gradients as they were
    (within 1e-6). Kernels that work on the shifted logits x - max x, which the offset leaves bit for bit unchanged,
    pass; differences of raw logits (a_c - b_c) or a rounded logsumexp turn the ulps of the large logits (1e-3 at
    1e4) into errors of 1e-4 to 1e-3."""
    xs = [(x * 16).round() / 16 for x in op.make(shape, dtype, dim=dim)]
    first = 1 if op.with_d else 0  # clan's d is not a logit
    g = torch.Generator().manual_seed(5)
    cdim = dim % len(shape)
    offset_shape = tuple(shape[:cdim]) + (1,) + tuple(shape[cdim + 1:])
    offsets = [torch.randint(-10000, 10001, offset_shape, generator=g).to(dtype) if i >= first else 0
               for i in range(len(xs))]
    base, base_grads, _ = run_with_grad(op.fn, xs, dim)
    out, grads, _ = run_with_grad(op.fn, [x + k for x, k in zip(xs, offsets)], dim)
    torch.testing.assert_close(out, base, rtol=0, atol=1e-6)
    for got, want in zip(grads, base_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def check_backward_gradient_errors(ns, name: str, device="cpu") -> None:
    """Backward op `name` of op namespace `ns` (torch.ops.uda_ops or uda_ops_triton) works with the right upstream
    gradient and raises a clear error for an integer one or one of the wrong shape."""
    args, shape = backward_case(name, device)
    fn = getattr(ns, name)
    fn(torch.ones(shape, device=device), *args)
    with pytest.raises(RuntimeError, match="floating point"):
        fn(torch.ones(shape, device=device, dtype=torch.int64), *args)
    with pytest.raises(RuntimeError, match="gradient has"):
        fn(torch.ones(2, *shape, device=device), *args)


def run_with_grad(fn, inputs, dim, grad_seed=1):
    """Forward, then backward with a random (non-uniform) output gradient; returns (out, grads, g)."""
    xs = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(xs, dim)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    out.backward(g.to(out.dtype))
    return out, [x.grad for x in xs], g


def eager_path_results(op: Op, xs, reduction: str, flag: str, eager_ops, monkeypatch) -> dict:
    """{on: [value, *gradients]} of `op` on `xs` with uda_ops._ops.<flag> on (kernels() hands out `eager_ops`, the
    eager path) and off (the custom ops). reduction "none" runs op.fn; "mean"/"sum" the public function with that
    fused reduction (skips the ops without one)."""
    from uda_ops import _ops
    fn = op.fn
    if reduction != "none":
        if op.name in ("self_information", "cosine_discrepancy"):
            pytest.skip("no fused reduction")
        kwargs = {"clan_adversarial": dict(target=1.0)}.get(op.name, {})
        public = {"clan_adversarial": uda_ops.clan_adversarial_loss}.get(op.name) or getattr(uda_ops, op.name)
        fn = lambda x, dim: public(*x, dim=dim, reduction=reduction, **kwargs).reshape(1)  # noqa: E731
    results = {}
    for on in (True, False):
        monkeypatch.setattr(_ops, flag, on)
        assert (_ops.kernels(op.name, xs[-1]) is eager_ops) is on
        out, grads, _ = run_with_grad(fn, xs, 1)
        results[on] = [out] + grads
    return results


def check_op(op: Op, inputs, dim=1, dtype=None, grads=True):
    """The op (current backend) against the float64 reference on the same inputs: value and gradients."""
    dtype = dtype or inputs[-1].dtype
    if not grads:
        assert_close(op.fn(inputs, dim), op.ref([x.double() for x in inputs], dim), dtype)
        return
    out, gs, g = run_with_grad(op.fn, inputs, dim)
    xs64 = [x.detach().double().requires_grad_(True) for x in inputs]
    ref = op.ref(xs64, dim)
    ref.backward(g.to(out.dtype).double())
    assert out.dtype == dtype and out.shape == ref.shape
    assert_close(out, ref, dtype, msg=f"{op.name}: value")
    for i, (a, b) in enumerate(zip(gs, [x.grad for x in xs64])):
        assert a.dtype == dtype and a.shape == b.shape
        # gradients scale with |output gradient| (~3 at most) and with C for the pairwise ops
        assert_close(a, b, dtype, scale=4.0, msg=f"{op.name}: grad of input {i}")


@pytest.fixture
def backend():
    """Run a test under a given backend and restore the previous one afterwards."""
    before = uda_ops.get_backend()
    yield uda_ops.set_backend
    uda_ops.set_backend(before)


def check_first_order_only(op: Op) -> None:
    """With create_graph=True the op's gradient equals the plain one, and differentiating that gradient raises: the
    backward ops are fused kernels without a derivative, so second derivatives must not come back silently zero or
    None (the reference backend, an autograd graph, has them)."""
    xs = [x.requires_grad_(True) for x in op.make((2, 4, 3, 5), torch.float64)]
    w = torch.rand(op.fn(xs, 1).shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    plain = torch.autograd.grad((op.fn(xs, 1) * w).sum(), xs)
    grads = torch.autograd.grad((op.fn(xs, 1) * w).sum(), xs, create_graph=True)
    for g, p in zip(grads, plain):
        assert g.requires_grad and torch.equal(g.detach(), p)
    with pytest.raises(RuntimeError, match="no second-order gradient"):
        torch.autograd.grad(sum((g * g).sum() for g in grads), xs, allow_unused=True)


def check_pos_inf_pixel(op: Op, C: int, which: str, layout: str = "contiguous") -> None:
    """A +inf logit (one class, or every class) makes its pixel NaN, inf - inf, on every backend and path, and leaves
    the other pixels as the reference has them."""
    xs = op.make((2, C, 3, 4), torch.float32, layout=layout)
    for x in xs[1:] if op.with_d else xs:
        x[0, C // 2 if which == "one" else slice(None), 1, 2] = math.inf
    out = op.fn(xs, 1)
    bad = out[0, :, 1, 2] if out.dim() == 4 else out[0, 1, 2]
    assert torch.isnan(bad).all(), bad
    assert_close(out, op.ref([x.double() for x in xs], 1), torch.float32)
