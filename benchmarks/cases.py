"""What the benchmarks measure: each op as uda_ops runs it, as the eager reference, as torch.compile of the
reference, and as the official repositories' eager formula (benchmarks/official.py; the losses only), on the
same inputs. Shared by the pytest-benchmark suite and the summary script."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor

import uda_ops
from uda_ops import reference as R

try:
    from official import OFFICIAL
except ImportError:  # imported as benchmarks.cases
    from .official import OFFICIAL

IMPLS = ("uda_ops", "eager", "compile", "official")
MODES = ("fwd", "fwdbwd")


def bench_shape() -> Tuple[int, ...]:
    """Logits shape, default (2, 19, 128, 256); override with UDA_BENCH_SHAPE=2,19,64,64."""
    env = os.environ.get("UDA_BENCH_SHAPE")
    return tuple(int(s) for s in env.split(",")) if env else (2, 19, 128, 256)


def bench_dtype() -> torch.dtype:
    return getattr(torch, os.environ.get("UDA_BENCH_DTYPE", "float32"))


@dataclass
class Case:
    """One op: `make(device, shape=None, dtype=None)` builds inputs (those requiring grad first; shape and
    dtype default to UDA_BENCH_SHAPE / UDA_BENCH_DTYPE), `fn(impl)` the callable for an impl."""

    name: str
    make: Callable[[torch.device], List[Tensor]]
    fused: Callable[..., Tensor]
    ref: Callable[..., Tensor]
    differentiable: bool = True

    @property
    def impls(self) -> Tuple[str, ...]:
        return IMPLS if self.name in OFFICIAL else tuple(i for i in IMPLS if i != "official")

    def fn(self, impl: str) -> Callable[..., Tensor]:
        if impl == "uda_ops":
            return self.fused
        if impl == "eager":
            return self.ref
        if impl == "official":
            return OFFICIAL[self.name]
        return torch.compile(self.ref)


def _logits(device, *, n=1, shape=None, dtype=None, grad=True) -> List[Tensor]:
    g = torch.Generator().manual_seed(0)
    shape, dtype = shape or bench_shape(), dtype or bench_dtype()
    return [(3 * torch.randn(shape, generator=g)).to(device=device, dtype=dtype).requires_grad_(grad)
            for _ in range(n)]


def _clan_inputs(device, shape=None, dtype=None):
    z1, z2 = _logits(device, n=2, shape=shape, dtype=dtype)
    shape = (z1.shape[0], 1) + tuple(z1.shape[2:])
    d = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device, z1.dtype).requires_grad_()
    return [z1, z2, d]


def _mask_inputs(device, shape=None, dtype=None):
    # Channel-wise search at DTA's scale: (g, h) of a (N, C, H, W) feature map, N=32, C=512, 8x8
    # (whatever the logits shape).
    g = torch.Generator().manual_seed(2)
    return [torch.randn(32, 512, 8, 8, generator=g).to(device, dtype or bench_dtype()) for _ in range(2)]


def _jac_inputs(device, shape=None, dtype=None):
    return [torch.randn(128, 1024, generator=torch.Generator().manual_seed(3)).to(device, dtype or bench_dtype())]


CASES: Dict[str, Case] = {c.name: c for c in [
    Case("sym_kl", lambda d, **kw: _logits(d, n=2, **kw), uda_ops.sym_kl, R.sym_kl),
    Case("kl_div", lambda d, **kw: _logits(d, n=2, **kw), uda_ops.kl_div, R.kl_div),
    Case("entropy", lambda d, **kw: _logits(d, **kw), uda_ops.entropy, R.entropy),
    Case("self_information", lambda d, **kw: _logits(d, **kw),
         lambda z: uda_ops.self_information(z), lambda z: R.self_information(z)),
    Case("cosine_discrepancy", lambda d, **kw: _logits(d, n=2, **kw), uda_ops.cosine_discrepancy,
         R.cosine_discrepancy),
    Case("clan_adversarial", _clan_inputs,
         lambda z1, z2, d: uda_ops.clan_adversarial_loss(d, z1, z2, 1.0),
         lambda z1, z2, d: R.clan_adversarial_loss(d, z1, z2, 1.0)),
    Case("channel_mask", _mask_inputs,
         lambda g, h: uda_ops.channel_adversarial_dropout_mask(g, h, delta=0.01),
         lambda g, h: R.channel_adversarial_dropout_mask(g, h, delta=0.01), differentiable=False),
    Case("element_mask", _jac_inputs,
         lambda j: uda_ops.adversarial_dropout_mask(j, delta=0.1),
         lambda j: R.adversarial_dropout_mask(j, delta=0.1), differentiable=False),
]}


def step(fn: Callable[..., Tensor], inputs: Sequence[Tensor], mode: str) -> Callable[[], object]:
    """A zero-argument callable running one forward (fwd) or forward + backward (fwdbwd) step.
    The backward uses torch.autograd.grad (no accumulation into .grad) with the upstream gradient of
    a sum: the case every reduction of these losses reduces to."""
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return fn(*inputs)
        return run
    wrt = [x for x in inputs if x.requires_grad]

    def run():
        out = fn(*inputs)
        return torch.autograd.grad(out.sum() if out.dim() else out, wrt)
    return run


def bytes_moved(case: Case, inputs: Sequence[Tensor], mode: str) -> int:
    """Bytes that must cross memory at least once: inputs read, outputs (and gradients) written."""
    ins = sum(x.numel() * x.element_size() for x in inputs)
    out = case.fused(*inputs)
    out_b = out.numel() * out.element_size()
    if mode == "fwd" or not case.differentiable:
        return ins + out_b
    grads = sum(x.numel() * x.element_size() for x in inputs if x.requires_grad)
    return 2 * ins + out_b + grads  # forward reads inputs; backward re-reads them and writes grads


def peak_bytes(run: Callable[[], object]) -> int:
    """Peak bytes allocated by torch's CPU allocator during one call (profiler memory events); the
    inputs already exist, so this is the step's extra memory (outputs and gradients included)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = run()
    del result
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    finally:
        os.remove(path)
    mem = [e["args"] for e in events
           if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == 0]
    if not mem:
        return 0
    # "Total Allocated" counts everything the allocator holds; subtract what was held before the step.
    before = mem[0]["Total Allocated"] - mem[0]["Bytes"]
    return max(m["Total Allocated"] for m in mem) - before
