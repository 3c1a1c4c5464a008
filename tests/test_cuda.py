"""The CUDA kernels (backend "native" on CUDA tensors, csrc/cuda/) against the float64 reference: every op,
every dtype, layouts, extremes (SPEC section 6), reductions (expanded stride-0 gradients), gradcheck,
opcheck, torch.compile(fullgraph=True), bitwise determinism, and the mask search (element-wise and
channel-wise, planes and rows layouts, several chunk counts). Skipped without a CUDA device.

    pytest tests/test_cuda.py -q                                   # or: make gpu-test
    compute-sanitizer --tool memcheck python -m pytest tests/test_cuda.py -q -k "not compile"
"""
from __future__ import annotations

import math
import os

import pytest
import torch

import uda_ops
from uda_ops import reference
from conftest import (BACKWARDS, CLAN_ARGS, DTYPES, OP_IDS, OPS, TOL, assert_close, backward_case,
                      check_backward_gradient_errors, logits)

# UDA_TEST_DEVICE=cpu runs this file against the CPU kernels: a check of the tests themselves on a
# machine without a GPU (the two backends share one contract).
DEV = torch.device(os.environ.get("UDA_TEST_DEVICE", "cuda"))
AVAILABLE = DEV.type == "cpu" or torch.cuda.is_available()
HAS_KERNELS = AVAILABLE and all(uda_ops._ops.has_kernel(op, DEV.type) for op in uda_ops._ops.OPS)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not AVAILABLE, reason="needs a CUDA device"),
    pytest.mark.skipif(AVAILABLE and not HAS_KERNELS, reason=f"uda_ops._C has no {DEV.type} kernels"),
]
LAYOUTS = ["contiguous", "channels_last", "strided", "transposed"]
KINDS = ["large", "neg_inf", "one_hot", "uniform", "nan", "all_neg_inf"]


@pytest.fixture(autouse=True)
def native_backend():
    """Every test here runs the compiled CUDA kernels (never the Triton or eager paths)."""
    before = uda_ops.get_backend()
    uda_ops.set_backend("native")
    yield
    uda_ops.set_backend(before)


def relayout(z: torch.Tensor, layout: str, dim: int) -> torch.Tensor:
    """conftest's layouts, built on z's device (conftest's helper allocates on the CPU)."""
    if layout == "contiguous":
        return z.contiguous()
    if layout == "channels_last":
        return z.movedim(dim, -1).contiguous().movedim(-1, dim)
    if layout == "strided":
        big = torch.zeros(*z.shape[:-1], 2 * z.shape[-1], dtype=z.dtype, device=z.device)
        big[..., ::2] = z
        return big[..., ::2]
    if layout == "transposed":
        return z.transpose(-1, -2).contiguous().transpose(-1, -2)
    raise ValueError(layout)


def make_inputs(op, shape, dtype, kind="random", layout="contiguous", dim=1, seed=0):
    """(cpu inputs, cuda inputs): the same values; the logits laid out as asked on the device."""
    xs = op.make(shape, dtype, kind, "contiguous", dim, seed)
    first = 1 if op.with_d else 0
    cuda = [x.to(DEV) if i < first else relayout(x.to(DEV), layout, dim) for i, x in enumerate(xs)]
    return xs, cuda


def check_cuda_op(op, cpu_inputs, cuda_inputs, dim=1, grads=True, grad_seed=1, clone=True):
    """The CUDA kernel against the float64 reference on the same (rounded) values: value and gradients.
    clone=False: the inputs are used as they are (a view keeps its storage offset)."""
    dtype = cuda_inputs[-1].dtype
    xs = [(x.detach().clone() if clone else x.detach()).requires_grad_(grads) for x in cuda_inputs]
    out = op.fn(xs, dim)
    assert out.device.type == DEV.type
    xs64 = [x.detach().double().requires_grad_(grads) for x in cpu_inputs]
    ref = op.ref(xs64, dim)
    assert out.dtype == dtype and out.shape == ref.shape
    assert_close(out.cpu(), ref.detach(), dtype, msg=f"{op.name}: value")
    if not grads:
        return
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    out.backward(g.to(DEV, out.dtype))
    ref.backward(g.to(out.dtype).double())
    for i, (x, r) in enumerate(zip(xs, xs64)):
        assert x.grad is not None and x.grad.dtype == dtype and x.grad.shape == r.grad.shape
        assert_close(x.grad.cpu(), r.grad, dtype, scale=4.0, msg=f"{op.name}: grad of input {i}")


# ------------------------------------------------------------------------------------------------------
# Values and gradients
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_op_matches_reference(op, dtype, layout):
    cpu, cuda = make_inputs(op, (2, 5, 6, 7), dtype, layout=layout)
    check_cuda_op(op, cpu, cuda)


@pytest.mark.parametrize("shape,dim", [((37, 11), 1), ((3, 4, 10), -1), ((3, 7, 4), 2), ((2, 19, 33, 65), 1),
                                       ((1, 300, 5), 1), ((4, 2, 3, 3), 1), ((5000, 19), -1)],
                         ids=str)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_op_shapes_and_dims(op, shape, dim):
    """Rows layout (class axis last), planes with odd sizes (tail threads), many classes, many pixels."""
    cpu, cuda = make_inputs(op, shape, torch.float32, dim=dim)
    check_cuda_op(op, cpu, cuda, dim=dim)


@pytest.mark.parametrize("shape", [(2, 19, 33, 65), (3, 150, 9, 11), (4, 3, 40, 41)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_channels_last_staged_blocks(op, dtype, shape):
    """channels_last through the staged-rows kernels (common.cuh StagedRows) over many blocks, the last one
    partial: C = 19 (the shared-memory run of a block at 64 or 128 threads), C = 150 (opt-in shared memory, 32
    threads), C = 3."""
    cpu, cuda = make_inputs(op, shape, dtype, layout="channels_last")
    check_cuda_op(op, cpu, cuda)


@pytest.mark.parametrize("shape,layout", [((64, 1000), "contiguous"), ((37, 345), "contiguous"),
                                          ((2, 600, 3, 5), "channels_last"), ((5, 4097), "contiguous")], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_rows_warp_per_pixel(op, dtype, shape, layout):
    """Rows too wide for the staged slab (C > ~227 for two inputs, ~454 for one): the per-pixel kernels with
    a warp per row (common.cuh WarpLanes), C below, above and far above a multiple of 32; -inf classes and
    NaN / all -inf rows stay in their row."""
    cpu, cuda = make_inputs(op, shape, dtype, layout=layout)
    check_cuda_op(op, cpu, cuda)
    if dtype == torch.float32:
        for kind in ("neg_inf", "nan", "all_neg_inf"):
            cpu, cuda = make_inputs(op, shape, dtype, kind=kind, layout=layout)
            assert_close(op.fn(cuda, 1).cpu(), op.ref([x.double() for x in cpu], 1), dtype, msg=f"{op.name}: {kind}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_op_extremes(op, dtype, kind):
    """SPEC section 6: -inf classes, 1e4 logits, NaN and all -inf pixels give NaN only there."""
    if kind == "large" and dtype != torch.float32:
        pytest.skip("1e4 logits are the fp32 case; half types use their own range below")
    cpu, cuda = make_inputs(op, (2, 5, 4, 6), dtype, kind=kind)
    out = op.fn(cuda, 1)
    ref = op.ref([x.double() for x in cpu], 1)
    assert_close(out.cpu(), ref, dtype)
    if kind in ("nan", "all_neg_inf"):
        assert out.isnan().any() and not out.isnan().all()
    else:
        assert not out.isnan().any()
        check_cuda_op(op, cpu, cuda)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_full_half_range(dtype):
    top = torch.finfo(dtype).max
    z = torch.tensor([[top, -top, 0.0, top / 2]], dtype=dtype, device=DEV)
    e = uda_ops.entropy(z, reduction="none")
    assert torch.isfinite(e).all()
    ref = reference.entropy(z.cpu().double(), reduction="none")
    assert_close(e.cpu(), ref, dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("op_name", ["sym_kl", "kl_div", "entropy", "clan_adversarial"])
def test_reductions_expanded_gradient(op_name, reduction):
    """The backward of mean/sum hands over an expanded stride-0 gradient, read in place."""
    a = logits((2, 6, 5, 7), seed=0).to(DEV).requires_grad_()
    b = logits((2, 6, 5, 7), seed=1).to(DEV).requires_grad_()
    d = torch.randn(2, 5, 7, device=DEV, requires_grad=True)
    fns = {
        "sym_kl": (lambda m, a, b, d: m.sym_kl(a, b, reduction=reduction)),
        "kl_div": (lambda m, a, b, d: m.kl_div(a, b, reduction=reduction)),
        "entropy": (lambda m, a, b, d: m.entropy(a, reduction=reduction)),
        "clan_adversarial": (lambda m, a, b, d: m.clan_adversarial_loss(d, a, b, **CLAN_ARGS, reduction=reduction)),
    }
    fn = fns[op_name]
    out = fn(uda_ops, a, b, d)
    grads = torch.autograd.grad(out, (a, b, d), allow_unused=True)
    a64, b64, d64 = (x.detach().cpu().double().requires_grad_() for x in (a, b, d))
    ref = fn(reference, a64, b64, d64)
    refs = torch.autograd.grad(ref, (a64, b64, d64), allow_unused=True)
    assert_close(out.cpu(), ref, torch.float32)
    for g, r in zip(grads, refs):
        if r is not None:
            assert_close(g.cpu(), r, torch.float32)


def test_self_information_scalar_and_full_grad():
    z = logits((2, 5, 4, 3)).to(DEV).requires_grad_()
    (g1,) = torch.autograd.grad(uda_ops.self_information(z).sum(), z)
    (g2,) = torch.autograd.grad(uda_ops.self_information(z), z, torch.ones_like(z))
    torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_cuda_matches_cpu_kernel(op):
    """The two compiled backends agree to float64 rounding."""
    cpu, cuda = make_inputs(op, (2, 7, 5, 6), torch.float64, layout="channels_last")
    out_gpu = op.fn(cuda, 1).cpu()
    out_cpu = op.fn(cpu, 1)
    torch.testing.assert_close(out_gpu, out_cpu, rtol=1e-12, atol=1e-13)


def test_detach_flags():
    a = logits((2, 5, 3, 4)).to(DEV).requires_grad_()
    b = logits((2, 5, 3, 4), seed=1).to(DEV).requires_grad_()
    ga, gb = torch.autograd.grad(uda_ops.sym_kl(a, b, detach_targets=True), (a, b))
    a64, b64 = a.detach().cpu().double().requires_grad_(), b.detach().cpu().double().requires_grad_()
    ra, rb = torch.autograd.grad(reference.sym_kl(a64, b64, detach_targets=True), (a64, b64))
    assert_close(ga.cpu(), ra, torch.float32)
    assert_close(gb.cpu(), rb, torch.float32)
    (gx,) = torch.autograd.grad(uda_ops.kl_div(a, b.detach()), (a,))
    (rx,) = torch.autograd.grad(reference.kl_div(a64, b64.detach()), (a64,))
    assert_close(gx.cpu(), rx, torch.float32)
    # CLAN discriminator step: no gradient into the logits
    d = torch.randn(2, 3, 4, device=DEV, requires_grad=True)
    loss = uda_ops.clan_adversarial_loss(d, a.detach(), b.detach(), 0.0)
    (gd,) = torch.autograd.grad(loss, (d,))
    d64 = d.detach().cpu().double().requires_grad_()
    (rd,) = torch.autograd.grad(reference.clan_adversarial_loss(d64, a64.detach(), b64.detach(), 0.0), (d64,))
    assert_close(gd.cpu(), rd, torch.float32)


def test_empty_batch():
    z = torch.randn(0, 5, 3, 4, device=DEV, requires_grad=True)
    assert uda_ops.entropy(z, reduction="none").shape == (0, 3, 4)
    assert uda_ops.sym_kl(z, z.detach(), reduction="sum").item() == 0


# ------------------------------------------------------------------------------------------------------
# gradcheck, opcheck, torch.compile
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_gradcheck(op, layout):
    _, cuda = make_inputs(op, (2, 4, 3, 3), torch.float64, layout=layout)
    xs = [x.detach().requires_grad_() for x in cuda]
    assert torch.autograd.gradcheck(lambda *x: op.fn(list(x), 1), xs, eps=1e-6, atol=1e-7, rtol=1e-5)


def _opcheck_cases():
    a = logits((2, 5, 3, 4)).to(DEV).requires_grad_()
    b = logits((2, 5, 3, 4), seed=1).to(DEV).requires_grad_()
    d = torch.randn(2, 3, 4, device=DEV, requires_grad=True)
    ops = torch.ops.uda_ops
    return {
        "sym_kl": (ops.sym_kl.default, (a, b, 1, False)),
        "kl_div": (ops.kl_div.default, (a, b, 1)),
        "entropy": (ops.entropy.default, (a, 1)),
        "self_information": (ops.self_information.default, (a, 1)),
        "cosine_discrepancy": (ops.cosine_discrepancy.default, (a, b, 1)),
        "clan_adversarial": (ops.clan_adversarial.default, (d, a, b, 1.0, 40.0, 0.4, 1)),
        "sym_kl/mean": (ops.sym_kl.default, (a, b, 1, False, 1)),  # the fused "mean" (1) / "sum" (2)
        "kl_div/sum": (ops.kl_div.default, (a, b, 1, 2)),
        "entropy/mean": (ops.entropy.default, (a, 1, 1)),
        "clan_adversarial/sum": (ops.clan_adversarial.default, (d, a, b, 1.0, 40.0, 0.4, 1, 2)),
        "adversarial_dropout_mask": (ops.adversarial_dropout_mask.default,
                                     (torch.randn(4, 50, device=DEV), None, 5, True)),
        "channel_adversarial_dropout_mask": (ops.channel_adversarial_dropout_mask.default,
                                             (torch.randn(2, 8, 3, 3, device=DEV),
                                              torch.randn(2, 8, 3, 3, device=DEV), None, 2, True)),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", list(uda_ops._ops.OPS) + ["sym_kl/mean", "kl_div/sum", "entropy/mean",
                                                             "clan_adversarial/sum"])
def test_opcheck(name):
    op, args = _opcheck_cases()[name]
    torch.library.opcheck(op, args)


@pytest.mark.slow
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_compile_fullgraph(op):
    _, cuda = make_inputs(op, (2, 5, 8, 12), torch.float32)
    xs = [x.detach().requires_grad_() for x in cuda]
    eager = op.fn(xs, 1).sum()
    g_eager = torch.autograd.grad(eager, xs)
    torch._dynamo.reset()
    compiled_fn = torch.compile(lambda *x: op.fn(list(x), 1).sum(), fullgraph=True, dynamic=False)
    comp = compiled_fn(*xs)
    g_comp = torch.autograd.grad(comp, xs)
    torch.testing.assert_close(comp, eager, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend_name", ["native", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("shape,layout", [((2, 19, 33, 65), "contiguous"), ((2, 19, 33, 65), "channels_last"),
                                          ((3, 150, 7, 9), "contiguous"), ((64, 1000), "contiguous"),
                                          ((5, 2000, 3), "contiguous"), ((70000, 3), "contiguous"),
                                          ((0, 5, 4), "contiguous")], ids=str)
@pytest.mark.parametrize("op_name", ["sym_kl", "kl_div", "entropy", "clan_adversarial"])
def test_fused_reduction_matches_map(op_name, shape, layout, dtype, backend_name):
    """The fused "mean"/"sum" (one partial per block/program, then a fixed-order float64 sum) against the float64
    sum of the same backend's map, bitwise the same on a second call; sum 0 and mean NaN for no pixels."""
    if backend_name == "triton" and (DEV.type != "cuda" or not uda_ops.backend_info()["triton"]["available"]):
        pytest.skip("triton on CUDA only")
    uda_ops.set_backend(backend_name)
    op = next(o for o in OPS if o.name == op_name)
    _, xs = make_inputs(op, shape, dtype, layout=layout)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    the_map = op.fn([x.to(acc) for x in xs], 1).double()
    kw = dict(CLAN_ARGS) if op.with_d else {}
    fn = getattr(uda_ops, "clan_adversarial_loss" if op.with_d else op_name)
    for reduction, expected in (("sum", the_map.sum()), ("mean", the_map.mean())):
        out = fn(*xs, **kw, reduction=reduction)
        assert out.shape == () and out.dtype == dtype
        assert torch.equal(out, fn(*xs, **kw, reduction=reduction)) or the_map.numel() == 0
        rtol = 2.0 ** -8 if dtype == torch.bfloat16 else 1e-5 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(out.double().cpu(), expected.cpu(), rtol=rtol, atol=1e-6 * the_map.numel() ** 0.5,
                                   equal_nan=True)
    if the_map.numel() == 0:
        assert fn(*xs, **kw, reduction="sum").item() == 0 and torch.isnan(fn(*xs, **kw, reduction="mean"))


# ------------------------------------------------------------------------------------------------------
# Determinism: the same inputs give bitwise the same outputs
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_bitwise_deterministic(op):
    _, cuda = make_inputs(op, (2, 19, 64, 96), torch.float32)

    def run():
        xs = [x.detach().clone().requires_grad_() for x in cuda]
        out = op.fn(xs, 1)
        return [out] + list(torch.autograd.grad(out.sum(), xs))

    first = run()
    for _ in range(3):
        for a, b in zip(first, run()):
            assert torch.equal(a, b)


def test_mask_bitwise_deterministic():
    g = torch.randn(8, 256, 64, 64, device=DEV)  # several H*W chunks per channel
    h = torch.randn(8, 256, 64, 64, device=DEV)
    first = uda_ops.channel_adversarial_dropout_mask(g, h, delta=0.1)
    for _ in range(3):
        assert torch.equal(first, uda_ops.channel_adversarial_dropout_mask(g, h, delta=0.1))


# ------------------------------------------------------------------------------------------------------
# Mask search
# ------------------------------------------------------------------------------------------------------
SPEC_VECTORS = [
    ([-0.5, 0.2, -0.1, -0.3, 0.0], 0.4, [0, 5 / 3, 5 / 3, 0, 5 / 3]),
    ([-0.3, -0.3, -0.3, 0.1], 0.25, [1, 1, 1, 1]),
    ([0.3, 0.2, -0.1, 0.1], 0.5, [4 / 3, 4 / 3, 0, 4 / 3]),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("jac,delta,expected", SPEC_VECTORS)
def test_mask_spec_vectors(dtype, jac, delta, expected):
    j = torch.tensor([jac], dtype=dtype, device=DEV)
    want = torch.tensor([expected], dtype=torch.float64)
    rtol, atol = TOL[dtype]
    for out in (uda_ops.adversarial_dropout_mask(j, delta=delta),
                uda_ops.channel_adversarial_dropout_mask(j[:, :, None, None].expand(1, len(jac), 2, 3).contiguous() / 6,
                                                         torch.ones(1, len(jac), 2, 3, dtype=dtype, device=DEV),
                                                         delta=delta)):
        assert out.device.type == DEV.type and out.dtype == dtype
        torch.testing.assert_close(out.cpu().double(), want, rtol=rtol, atol=atol)


def _int_valued(shape, seed, lo=-4, hi=5):
    """Small integers: every sum is exact in any order, so the CUDA and reference masks must be equal."""
    return torch.randint(lo, hi, shape, generator=torch.Generator().manual_seed(seed)).double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("N,U,delta", [(3, 5, 0.4), (16, 1000, 0.1), (4, 4096, 0.05), (2, 7, 1.0), (5, 33, 0.0)])
@pytest.mark.parametrize("with_base", [False, True])
def test_element_mask_matches_reference(dtype, N, U, delta, with_base):
    jac = _int_valued((N, U), 0).to(dtype)
    base = (torch.rand(N, U, generator=torch.Generator().manual_seed(1)) < 0.7).to(dtype) if with_base else None
    out = uda_ops.adversarial_dropout_mask(jac.to(DEV), delta=delta, base_mask=None if base is None else base.to(DEV))
    ref = reference.adversarial_dropout_mask(jac, delta=delta, base_mask=base)
    torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=0) if dtype == torch.float64 else \
        torch.testing.assert_close(out.cpu(), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,delta", [((4, 64, 8, 8), 0.1), ((2, 512, 8, 8), 0.01), ((2, 16, 300, 300), 0.25),
                                         ((3, 5, 1, 1), 0.4), ((2, 2048, 4, 4), 0.1)], ids=str)
def test_channel_mask_matches_reference(shape, delta, dtype, layout):
    g = relayout(_int_valued(shape, 2).to(DEV, dtype), layout, 1)
    h = relayout(_int_valued(shape, 3, 0, 3).to(DEV, dtype), layout, 1)
    out = uda_ops.channel_adversarial_dropout_mask(g, h, delta=delta)
    ref = reference.channel_adversarial_dropout_mask(g.cpu().double(), h.cpu().double(), delta=delta)
    assert out.shape == shape[:2] and out.dtype == dtype
    assert_close(out.cpu(), ref, dtype)


def test_mask_nan_row_and_budget_zero():
    jac = torch.randn(3, 10, device=DEV)
    jac[1, 4] = math.nan
    out = uda_ops.adversarial_dropout_mask(jac, max_flips=2)
    assert out[1].isnan().all() and not out[[0, 2]].isnan().any()
    base = (torch.rand(3, 10, device=DEV) < 0.5).float()
    assert torch.equal(uda_ops.adversarial_dropout_mask(jac.nan_to_num(), max_flips=0, base_mask=base), base)


def test_mask_all_flipped_row_stays_zero():
    jac = -torch.ones(2, 6, device=DEV)
    out = uda_ops.adversarial_dropout_mask(jac.clone().sub_(torch.arange(6, device=DEV)), max_flips=10)
    assert torch.equal(out, torch.zeros_like(out))


# ------------------------------------------------------------------------------------------------------
# The vectorised planes kernels: aligned 128-bit tiles, tails, views misaligned by one element
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 19, 16, 32), (3, 5, 8, 9), (2, 150, 8, 8), (1, 2, 1, 13), (2, 40, 4, 6)],
                         ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_planes_tiles_and_misaligned_views(op, dtype, shape):
    cpu, cuda = make_inputs(op, shape, dtype)
    check_cuda_op(op, cpu, cuda)
    # the same values one element into a buffer: the data pointer is not 16-byte aligned
    first = 1 if op.with_d else 0
    shifted = [x if i < first else torch.cat([x.new_zeros(1), x.reshape(-1)])[1:].view(x.shape)
               for i, x in enumerate(cuda)]
    assert all(x.data_ptr() % 16 for x in shifted[first:])
    check_cuda_op(op, cpu, shifted, clone=False)


@pytest.mark.skipif(DEV.type != "cuda", reason="needs a CUDA device (a gradient on another device)")
@pytest.mark.parametrize("name", sorted(BACKWARDS))
def test_backward_checks_gradient_device_dtype_shape(name):
    args, shape = backward_case(name, DEV)
    with pytest.raises(RuntimeError, match="gradient is on cpu"):
        getattr(torch.ops.uda_ops, name)(torch.ones(shape), *args)
    check_backward_gradient_errors(torch.ops.uda_ops, name, DEV)
