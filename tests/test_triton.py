"""The Triton backend (uda_ops/triton, ops torch.ops.uda_ops_triton.*) against the float64 reference.

Without CUDA the kernels run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set here before
triton is first imported; the interpreter has no bfloat16, so those tests use fp16/fp32/fp64). With CUDA the
interpreter is left off, the CPU tests skip, and the tests marked `cuda` run every op on the GPU with both
backends ("triton" and the compiled "native") in every dtype. Skipped entirely when triton is missing.
"""
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")

import uda_ops  # noqa: E402
from uda_ops import _ops, reference  # noqa: E402
from conftest import (CLAN_ARGS, OP_IDS, OPS, assert_close, check_logit_offsets, check_op,  # noqa: E402
                      check_pos_inf_pixel, logits, run_with_grad)

try:
    import uda_ops.triton as TT  # noqa: E402
except Exception as exc:  # pragma: no cover - broken triton install
    pytest.skip(f"uda_ops.triton does not import: {exc}", allow_module_level=True)

INTERPRET = TT.INTERPRET
cpu_only = pytest.mark.skipif(not INTERPRET, reason="CPU tensors need TRITON_INTERPRET=1 (set only without CUDA)")
cuda = pytest.mark.cuda
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# numpy warns about the NaN that all -inf / NaN pixels are required to produce
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

CPU_DTYPES = [torch.float32, torch.float64, torch.float16]


@pytest.fixture
def triton_backend(backend):
    backend("triton")
    yield


# ---------------------------------------------------------------------------------------------------
# Differentiable ops on CPU tensors (interpreter): values and gradients against the float64 reference
# ---------------------------------------------------------------------------------------------------
@cpu_only
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_dtype_and_layout(triton_backend, op, dtype, layout):
    check_op(op, op.make((2, 19, 5, 7), dtype, layout=layout), dim=1)


@cpu_only
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("shape,dim,layout", [
    ((3, 2), 1, "contiguous"),               # C = 2, rows layout
    ((2, 19, 9, 70), 1, "contiguous"),       # tail lanes (630 pixels)
    ((2, 6, 7, 19), -1, "contiguous"),       # class axis last
    ((2, 19, 5, 7), 1, "strided"),           # non-dense: copied once
    ((19, 6, 5), 0, "contiguous"),           # unbatched, dim=0
    ((1, 3, 1, 1), 1, "contiguous"),         # one pixel
    ((0, 4, 3, 5), 1, "contiguous"),         # empty batch: nothing launched
])
def test_shapes_and_dims(triton_backend, op, shape, dim, layout):
    check_op(op, op.make(shape, torch.float32, layout=layout, dim=dim), dim=dim)


@cpu_only
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("kind", ["large", "neg_inf", "one_hot", "uniform", "nan", "all_neg_inf"])
def test_extreme_inputs(triton_backend, op, kind):
    """SPEC section 6: |z| = 1e4, -inf classes: finite and exact; NaN / all -inf pixel: NaN there only."""
    xs = op.make((2, 5, 4, 9), torch.float32, kind=kind)
    out = op.fn(xs, 1)
    if kind in ("nan", "all_neg_inf"):
        nan = out.isnan()
        assert nan.any() and nan.float().mean() < 0.2, "NaN must be confined to the bad pixel"
    else:
        assert torch.isfinite(out).all()
    check_op(op, xs, dim=1)


@cpu_only
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("shape,dim", [((2, 19, 3, 4), 1), ((2, 80, 3, 2), 1), ((5, 345), 1)], ids=str)
def test_logit_offsets_change_nothing(triton_backend, op, shape, dim):
    """A per-pixel logit offset changes nothing (conftest.check_logit_offsets): one class tile (C = 19), chunks
    with running maxima (C = 80 NCHW) and a rows tile (C = 345). Triton's sym_kl failed it with a_c - b_c."""
    check_logit_offsets(op, shape, dim, torch.float32)


@cpu_only
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("C,layout", [(5, "contiguous"), (5, "channels_last"), (65, "contiguous"),
                                      (65, "channels_last")])
@pytest.mark.parametrize("which", ["one", "all"])
def test_pos_inf_pixel_is_nan(triton_backend, op, C, layout, which):
    """+inf logits: NaN at their pixel, in the split tiles and the chunked path (C > 64 NCHW), which took
    +inf - +inf as 0 and gave a finite pixel."""
    check_pos_inf_pixel(op, C, which, layout)


@cpu_only
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_neg_inf_classes_fp64_zero_gradient(triton_backend, op):
    xs = op.make((2, 5, 4, 9), torch.float64, kind="neg_inf", layout="channels_last")
    check_op(op, xs, dim=1)
    ys = [x.detach().clone().requires_grad_(True) for x in xs]
    op.fn(ys, 1).sum().backward()
    for x, y in zip(xs, ys):
        assert torch.isfinite(y.grad).all()
        if x.dim() == 4:
            assert (y.grad[torch.isinf(x)] == 0).all()


@cpu_only
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_gradcheck(triton_backend, op):
    xs = [x.requires_grad_(True) for x in op.make((1, 3, 2), torch.float64)]
    assert torch.autograd.gradcheck(lambda *x: op.fn(list(x), 1), xs, eps=1e-6, atol=1e-7)


@cpu_only
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reductions_read_expanded_gradient(triton_backend, reduction):
    """"mean"/"sum" hand the backward an expanded (stride-0) gradient: read in place, same result."""
    a, b = logits((2, 7, 4, 5), seed=1), logits((2, 7, 4, 5), seed=2)
    a1, a2 = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
    uda_ops.sym_kl(a1, b, reduction=reduction).backward()
    reference.sym_kl(a2.double(), b.double(), reduction=reduction).backward()
    assert_close(a1.grad, a2.grad, torch.float32)
    for detach in (True, False):
        x = a.clone().requires_grad_(True)
        y = x.detach().clone().requires_grad_(True)
        uda_ops.sym_kl(x, b, detach_targets=detach).backward()
        reference.sym_kl(y.double(), b.double(), detach_targets=detach).backward()
        assert_close(x.grad, y.grad, torch.float32)
    # kl_div with and without the target's gradient
    x, t = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    uda_ops.kl_div(x, t, reduction=reduction).backward()
    x64, t64 = a.double().requires_grad_(True), b.double().requires_grad_(True)
    reference.kl_div(x64, t64, reduction=reduction).backward()
    assert_close(x.grad, x64.grad, torch.float32)
    assert_close(t.grad, t64.grad, torch.float32)


@cpu_only
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_deterministic(triton_backend, op):
    xs = op.make((2, 19, 6, 9), torch.float32)
    o1, g1, _ = run_with_grad(op.fn, xs, 1)
    o2, g2, _ = run_with_grad(op.fn, xs, 1)
    assert torch.equal(o1, o2) and all(torch.equal(a, b) for a, b in zip(g1, g2))


# ---------------------------------------------------------------------------------------------------
# Mask search
# ---------------------------------------------------------------------------------------------------
SPEC_VECTORS = [
    ([-0.5, 0.2, -0.1, -0.3, 0.0], 0.4, [0, 5 / 3, 5 / 3, 0, 5 / 3]),
    ([-0.3, -0.3, -0.3, 0.1], 0.25, [1, 1, 1, 1]),
    ([0.3, 0.2, -0.1, 0.1], 0.5, [4 / 3, 4 / 3, 0, 4 / 3]),
]


@cpu_only
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_mask_spec_vectors(triton_backend, dtype):
    for jac, delta, expected in SPEC_VECTORS:
        j = torch.tensor([jac], dtype=dtype)
        exp = torch.tensor([expected], dtype=torch.float64)
        assert_close(uda_ops.adversarial_dropout_mask(j, delta=delta), exp, dtype)
        g = j[:, :, None, None].expand(1, len(jac), 2, 3) / 6
        assert_close(uda_ops.channel_adversarial_dropout_mask(g.contiguous(), torch.ones_like(g), delta=delta),
                     exp, dtype)


@cpu_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("flips,with_base", [(0, True), (1, False), (7, True), (36, False), (40, True)])
def test_mask_element_against_reference(triton_backend, dtype, flips, with_base):
    g = torch.Generator().manual_seed(flips)
    j = torch.randn(5, 37, generator=g, dtype=torch.float64).to(dtype)
    j[1, 3] = 0
    j[2, :6] = j[2, 7]  # ties at the threshold
    j[3] = torch.where(j[3] > 0, 1e-30, -1e30).to(dtype)  # extreme magnitudes
    base = (torch.rand(5, 37, generator=g) < 0.7).to(dtype) if with_base else None
    for rescale in (True, False):
        out = torch.ops.uda_ops_triton.adversarial_dropout_mask(j, base, flips, rescale)
        ref = reference.adversarial_dropout_mask(j, None, flips, base, rescale)
        assert out.dtype == dtype
        torch.testing.assert_close(out, ref)  # same flips; the rescale may round differently


@cpu_only
def test_mask_long_rows_chunked(triton_backend, monkeypatch):
    """Rows longer than ROW_BLOCK are searched chunk by chunk: same result as the in-register path."""
    from uda_ops.triton import adversarial_dropout_mask as M
    j = torch.randn(3, 37, generator=torch.Generator().manual_seed(0))
    base = (torch.rand(3, 37, generator=torch.Generator().manual_seed(1)) < 0.7).float()
    fast = torch.ops.uda_ops_triton.adversarial_dropout_mask(j, base, 5, True)
    monkeypatch.setattr(M, "ROW_BLOCK", 16)
    chunked = torch.ops.uda_ops_triton.adversarial_dropout_mask(j, base, 5, True)
    torch.testing.assert_close(chunked, fast)
    torch.testing.assert_close(chunked, reference.adversarial_dropout_mask(j, None, 5, base, True))


@cpu_only
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_mask_channel_fused_against_reference(triton_backend, dtype, layout):
    grad = logits((3, 20, 7, 9), dtype, layout=layout, seed=3, scale=1.0)
    act = logits((3, 20, 7, 9), dtype, layout=layout, seed=4, scale=1.0).abs()
    base = (torch.rand(3, 20, generator=torch.Generator().manual_seed(5)) < 0.8).to(dtype)
    for kw in (dict(delta=0.25), dict(max_flips=3, base_mask=base), dict(max_flips=30, rescale=False)):
        out = uda_ops.channel_adversarial_dropout_mask(grad, act, **kw)
        ref = reference.channel_adversarial_dropout_mask(grad.double(), act.double(), **kw)
        assert out.shape == (3, 20) and out.dtype == dtype
        assert_close(out, ref, dtype)
    # the impact reduction is bitwise reproducible
    assert torch.equal(uda_ops.channel_adversarial_dropout_mask(grad, act, delta=0.25),
                       uda_ops.channel_adversarial_dropout_mask(grad, act, delta=0.25))


@cpu_only
def test_mask_nan_row_and_empty(triton_backend):
    j = torch.randn(3, 8)
    j[1, 2] = float("nan")
    out = uda_ops.adversarial_dropout_mask(j, max_flips=2)
    assert out[1].isnan().all() and not out[[0, 2]].isnan().any()
    assert uda_ops.adversarial_dropout_mask(torch.randn(0, 8), max_flips=2).shape == (0, 8)


# ---------------------------------------------------------------------------------------------------
# torch.library: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------------
def _opcheck_samples(device="cpu", dtype=torch.float32):
    ops = torch.ops.uda_ops_triton
    a = logits((2, 5, 3, 4), dtype, layout="channels_last", seed=1).to(device)
    b = logits((2, 5, 3, 4), dtype, layout="channels_last", seed=2).to(device)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    g = torch.randn(2, 3, 4, dtype=acc).to(device)
    d = torch.randn(2, 3, 4, dtype=dtype).to(device)
    gs = torch.randn(2, 5, 3, 4, dtype=dtype).to(device)
    t, lam, eps = CLAN_ARGS["target"], CLAN_ARGS["lambda_local"], CLAN_ARGS["epsilon"]
    j = torch.randn(3, 20, dtype=dtype).to(device)
    return [
        (ops.sym_kl.default, (a, b, 1, False)),
        (ops.sym_kl_backward.default, (g, a, b, 1, True)),
        (ops.kl_div.default, (a, b, 1)),
        (ops.kl_div_backward.default, (g, a, b, 1, True)),
        (ops.entropy.default, (a, 1)),
        (ops.entropy_backward.default, (g, a, 1)),
        (ops.self_information.default, (a, 1)),
        (ops.self_information_backward.default, (gs, a, 1)),
        (ops.cosine_discrepancy.default, (a, b, 1)),
        (ops.cosine_discrepancy_backward.default, (g, a, b, 1)),
        (ops.clan_adversarial.default, (d, a, b, t, lam, eps, 1)),
        (ops.clan_adversarial_backward.default, (g, d, a, b, t, lam, eps, 1, False)),
        (ops.adversarial_dropout_mask.default, (j, (torch.rand(3, 20) < 0.5).to(j), 4, True)),
        (ops.channel_adversarial_dropout_mask.default, (gs, a, None, 2, True)),
        (ops.entropy.default, (a, 1, 1)),  # the fused "mean" / "sum"
        (ops.sym_kl.default, (a, b, 1, False, 2)),
    ]


def _opcheck(overload, args):
    differentiable = overload.name().split("::")[1] in {"sym_kl", "kl_div", "entropy", "self_information",
                                                        "cosine_discrepancy", "clan_adversarial"}
    if differentiable:
        args = tuple(a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(overload, args)


_SAMPLES = list(range(16))


@cpu_only
@pytest.mark.parametrize("i", _SAMPLES)
def test_opcheck(i):
    _opcheck(*_opcheck_samples()[i])


def test_every_triton_op_has_an_opcheck_sample():
    names = {o.name().split("::")[1] for o, _ in _opcheck_samples()}
    registered = {n for n in dir(torch.ops.uda_ops_triton) if not n.startswith("_")
                  and isinstance(getattr(torch.ops.uda_ops_triton, n), torch._ops.OpOverloadPacket)}
    assert registered == names
    assert len(_SAMPLES) == len(_opcheck_samples())


def _compile_step(z1, z2, d):
    return (uda_ops.sym_kl(z1, z2) + uda_ops.kl_div(z1, z2, detach_target=True) + uda_ops.entropy(z1)
            + uda_ops.self_information(z1).mean() + uda_ops.cosine_discrepancy(z1, z2).mean()
            + uda_ops.clan_adversarial_loss(d, z1, z2, 1.0)
            + (uda_ops.channel_adversarial_dropout_mask(z1, z2, delta=0.4)[:, :, None, None] * z1).mean())


@cpu_only
def test_compile_fullgraph(triton_backend):
    """torch.compile(fullgraph=True) traces the Triton custom ops as opaque ops (no graph break) and gives
    the eager values and gradients; the kernels themselves run in the interpreter."""
    z1, z2 = logits((2, 5, 4, 6), seed=1), logits((2, 5, 4, 6), seed=2)
    d = torch.randn(2, 1, 4, 6)
    xs = [z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)]
    eager = _compile_step(*xs, d)
    eager.backward()
    ys = [z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)]
    torch._dynamo.reset()
    # aot_eager: Dynamo + AOTAutograd over the custom ops (fake kernels, autograd registration) without
    # inductor's C++ code generation for the surrounding graph, which would triple this test's time on CPU;
    # inductor itself runs in test_cuda_compile and, for the same graph shape, in test_compile.py.
    compiled = torch.compile(_compile_step, fullgraph=True, dynamic=False, backend="aot_eager")(*ys, d)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    for x, y in zip(xs, ys):
        torch.testing.assert_close(y.grad, x.grad)


# ---------------------------------------------------------------------------------------------------
# Backend selection
# ---------------------------------------------------------------------------------------------------
def test_backend_info_reports_triton(backend):
    info = uda_ops.backend_info()["triton"]
    assert info["available"] and info["version"] == triton.__version__
    backend("triton")
    info = uda_ops.backend_info()
    assert info["backend"] == "triton" and info["triton"]["loaded"]
    assert all(v["cpu"] == "triton" for v in info["ops"].values())
    backend("auto")
    on_cpu = {v["cpu"] for v in uda_ops.backend_info()["ops"].values()}
    assert on_cpu == {"native" if uda_ops.backend_info()["extension"] else "reference"}


def test_auto_table_picks_per_op(monkeypatch):
    monkeypatch.setattr(_ops, "AUTO_CUDA", {"entropy": "triton", "sym_kl": "cuda"})
    assert _ops._auto_cuda("entropy") == "triton"
    assert _ops._auto_cuda("sym_kl") == ("native" if _ops.has_kernel("sym_kl", "cuda") else "triton")
    assert _ops._auto_cuda("kl_div") == ("native" if _ops.has_kernel("kl_div", "cuda") else "triton")


def _run(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          timeout=300)


def test_import_is_lazy_and_cpu_needs_interpreter():
    """`import uda_ops` does not import triton; the triton backend on CPU tensors without the interpreter
    is a clear error; UDA_OPS_BACKEND=triton selects it."""
    code = """
        import sys, torch, uda_ops
        assert "triton" not in sys.modules, "uda_ops imported triton eagerly"
        assert uda_ops.get_backend() == "triton"
        uda_ops.backend_info()
        assert "triton" not in sys.modules
        try:
            uda_ops.entropy(torch.randn(2, 3, 4))
        except RuntimeError as e:
            assert "TRITON_INTERPRET" in str(e), e
        else:
            raise AssertionError("triton on CPU without the interpreter must raise")
        print("ok")
    """
    r = _run(code, UDA_OPS_BACKEND="triton", TRITON_INTERPRET="0")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_kernels_compile_for_sm90_without_gpu(tmp_path):
    """Every kernel through Triton's real code generator and ptxas for sm_90 (no GPU needed), in bfloat16:
    what the interpreter cannot check. All dtypes: `python -m uda_ops.triton.aot_check`."""
    r = _run("import sys; from uda_ops.triton.aot_check import main; sys.exit(main(['--dtypes', 'bf16']))",
             TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(tmp_path))
    assert r.returncode == 0 and "FAIL" not in r.stdout, r.stdout[-4000:] + r.stderr[-4000:]


# ---------------------------------------------------------------------------------------------------
# GPU: every op, both backends, every dtype, against the reference; gradcheck; opcheck; compile
# ---------------------------------------------------------------------------------------------------
GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _check_cuda(op, xs, dim):
    xs = [x.cuda() for x in xs]
    dtype = xs[-1].dtype
    ys = [x.detach().clone().requires_grad_(True) for x in xs]
    out = op.fn(ys, dim)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).cuda()
    out.backward(g.to(out.dtype))
    x64 = [x.detach().double().requires_grad_(True) for x in xs]
    ref = op.ref(x64, dim)
    ref.backward(g.to(out.dtype).double())
    assert out.dtype == dtype and out.shape == ref.shape
    assert_close(out, ref, dtype, msg=f"{op.name}: value")
    for a, b in zip([y.grad for y in ys], [x.grad for x in x64]):
        assert a.dtype == dtype
        assert_close(a, b, dtype, scale=4.0, msg=f"{op.name}: grad")


@cuda
@requires_cuda
@pytest.mark.parametrize("backend_name", ["triton", "native"])
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_ops(backend, backend_name, op, dtype, layout):
    if backend_name == "native" and not _ops.has_kernel(op.name, "cuda"):
        pytest.skip("no compiled CUDA kernel")
    backend(backend_name)
    _check_cuda(op, op.make((2, 19, 33, 65), dtype, layout=layout), 1)
    for kind in ("neg_inf", "large", "nan", "all_neg_inf"):
        if kind == "large" and dtype == torch.float16:
            continue
        xs = [x.cuda() for x in op.make((2, 5, 4, 9), dtype, kind=kind)]
        out = op.fn(xs, 1)
        assert_close(out, op.ref([x.double() for x in xs], 1), dtype)


@cuda
@requires_cuda
@pytest.mark.parametrize("backend_name", ["triton", "native"])
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_cuda_gradcheck(backend, backend_name, op):
    if backend_name == "native" and not _ops.has_kernel(op.name, "cuda"):
        pytest.skip("no compiled CUDA kernel")
    backend(backend_name)
    xs = [x.cuda().requires_grad_(True) for x in op.make((2, 4, 3, 5), torch.float64, layout="channels_last")]
    assert torch.autograd.gradcheck(lambda *x: op.fn(list(x), 1), xs, eps=1e-6, atol=1e-7)


@cuda
@requires_cuda
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("backend_name", ["triton", "native"])
def test_cuda_masks(backend, backend_name, dtype):
    if backend_name == "native" and not _ops.has_kernel("adversarial_dropout_mask", "cuda"):
        pytest.skip("no compiled CUDA kernel")
    backend(backend_name)
    j = torch.randn(6, 1000, dtype=torch.float64).to(dtype).cuda()
    out = uda_ops.adversarial_dropout_mask(j, delta=0.1)
    assert_close(out, reference.adversarial_dropout_mask(j.double(), 0.1), dtype)
    g = torch.randn(4, 256, 33, 17, dtype=torch.float64)
    h = torch.rand(4, 256, 33, 17, dtype=torch.float64)
    for layout in (torch.contiguous_format, torch.channels_last):
        gg, hh = (x.to(dtype).cuda().contiguous(memory_format=layout) for x in (g, h))
        out = uda_ops.channel_adversarial_dropout_mask(gg, hh, delta=0.05)
        ref = reference.channel_adversarial_dropout_mask(gg.double(), hh.double(), 0.05)
        # ties between near-equal impacts may order differently in low precision: compare the flips mostly
        assert (out.double() - ref).abs().gt(1e-2).float().mean() < 0.02


@cuda
@requires_cuda
@pytest.mark.parametrize("i", _SAMPLES)
def test_cuda_opcheck(i):
    _opcheck(*_opcheck_samples("cuda")[i])


@cuda
@requires_cuda
@pytest.mark.parametrize("backend_name", ["triton", "native"])
def test_cuda_compile(backend, backend_name):
    if backend_name == "native" and not _ops.has_kernel("sym_kl", "cuda"):
        pytest.skip("no compiled CUDA kernel")
    backend(backend_name)
    z1, z2 = logits((2, 19, 32, 64), seed=1).cuda(), logits((2, 19, 32, 64), seed=2).cuda()
    d = torch.randn(2, 1, 32, 64).cuda()
    xs = [z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)]
    eager = _compile_step(*xs, d)
    eager.backward()
    ys = [z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)]
    torch._dynamo.reset()
    compiled = torch.compile(_compile_step, fullgraph=True)(*ys, d)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    for x, y in zip(xs, ys):
        torch.testing.assert_close(y.grad, x.grad)


@cuda
@requires_cuda
def test_cuda_deterministic(backend):
    backend("triton")
    for op in OPS:
        xs = [x.cuda() for x in op.make((2, 19, 64, 128), torch.float32)]
        a = [x.detach().clone().requires_grad_(True) for x in xs]
        b = [x.detach().clone().requires_grad_(True) for x in xs]
        oa, ob = op.fn(a, 1), op.fn(b, 1)
        oa.sum().backward()
        ob.sum().backward()
        assert torch.equal(oa, ob)
        assert all(torch.equal(x.grad, y.grad) for x, y in zip(a, b))
