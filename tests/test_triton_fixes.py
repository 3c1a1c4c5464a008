"""Issue 10 item 1, Triton backend: launches on the input's device, int64 offsets, the expanded upstream
gradient of self_information_backward read in place, and the mask search's L == 0 with a NaN row.
Runs on CPU tensors under TRITON_INTERPRET=1 (set here before triton is first imported)."""
import contextlib
import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

import uda_ops  # noqa: E402
from uda_ops import reference  # noqa: E402
from conftest import (BACKWARDS, OP_IDS, OPS, assert_close, check_backward_gradient_errors,  # noqa: E402
                      check_first_order_only, logits)

TT = pytest.importorskip("uda_ops.triton")
from uda_ops.triton import _common as K  # noqa: E402

cpu_only = pytest.mark.skipif(not TT.INTERPRET, reason="CPU tensors need TRITON_INTERPRET=1")
pytestmark = [cpu_only, pytest.mark.filterwarnings("ignore::RuntimeWarning")]


@pytest.fixture
def triton_backend(backend):
    backend("triton")
    yield


# ---------------------------------------------------------------------------------------------------
# Launch device
# ---------------------------------------------------------------------------------------------------
def test_device_guard_selects_the_tensors_cuda_device():
    guard = K.device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert isinstance(K.device_guard(torch.device("cpu")), contextlib.nullcontext)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_every_launch_is_inside_the_inputs_device_guard(triton_backend, op, monkeypatch):
    """Each kernel launch (forward and backward) runs inside device_guard(the input's device)."""
    entered, launches = [], []
    inside = [0]

    @contextlib.contextmanager
    def recording_guard(device):
        entered.append(device)
        inside[0] += 1
        try:
            yield
        finally:
            inside[0] -= 1

    from triton.runtime.interpreter import InterpretedFunction
    run = InterpretedFunction.run

    def checked_run(self, *args, **kwargs):
        launches.append(inside[0])
        return run(self, *args, **kwargs)

    monkeypatch.setattr(K, "device_guard", recording_guard)
    monkeypatch.setattr(InterpretedFunction, "run", checked_run)
    xs = [x.requires_grad_(True) for x in op.make((2, 5, 3, 4), torch.float32)]
    op.fn(xs, 1).sum().backward()
    assert len(launches) >= 2 and all(launches), "a kernel was launched outside the device guard"
    assert entered and all(d == xs[0].device for d in entered)


def test_mask_launches_inside_the_device_guard(triton_backend, monkeypatch):
    entered = []
    monkeypatch.setattr(K, "device_guard", lambda d: entered.append(d) or contextlib.nullcontext())
    g, h = torch.randn(2, 6, 3, 3), torch.randn(2, 6, 3, 3)
    uda_ops.channel_adversarial_dropout_mask(g, h, max_flips=2)
    uda_ops.adversarial_dropout_mask(torch.randn(3, 9), max_flips=2)
    assert len(entered) == 3 and all(d == g.device for d in entered)


# ---------------------------------------------------------------------------------------------------
# int64 offsets
# ---------------------------------------------------------------------------------------------------
@triton.jit
def _class_offsets_kernel(out_ptr, C, inner):
    base = tl.zeros([1], tl.int64) + 5
    for c in range(C):
        tl.store(out_ptr + c + tl.arange(0, 1), K.class_off(base, c, inner))


def test_class_offsets_are_int64_past_2_to_31():
    """c * inner for inner = 2^30 + 3 and c up to 7 exceeds 2^31: it must not wrap (int32 did)."""
    C, inner = 8, 2**30 + 3
    out = torch.zeros(C, dtype=torch.int64)
    _class_offsets_kernel[(1,)](out, C, inner)
    assert out.tolist() == [5 + c * inner for c in range(C)]


# ---------------------------------------------------------------------------------------------------
# self_information_backward reads an expanded gradient in place
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_self_information_backward_reads_expanded_gradient_in_place(triton_backend, layout, monkeypatch):
    z = logits((2, 7, 5, 3), torch.float32, layout=layout, seed=3)
    grad = torch.ones(()).expand(z.shape)  # the gradient of .sum()
    contiguous, to = torch.Tensor.contiguous, torch.Tensor.to

    def no_dense_copy(name, fn):
        def wrapped(self, *a, **k):
            if self.numel() > 1 and 0 in self.stride():
                raise AssertionError(f"{name} materialised an expanded {tuple(self.shape)} gradient")
            return fn(self, *a, **k)
        return wrapped

    monkeypatch.setattr(torch.Tensor, "contiguous", no_dense_copy("contiguous", contiguous))
    monkeypatch.setattr(torch.Tensor, "to", no_dense_copy("to", to))
    out = torch.ops.uda_ops_triton.self_information_backward(grad, z, 1)
    monkeypatch.undo()
    z64 = z.double().requires_grad_(True)
    reference.self_information(z64, dim=1).sum().backward()
    assert_close(out, z64.grad, torch.float32)


def test_self_information_backward_partly_expanded_and_strided_gradient(triton_backend):
    z = logits((2, 5, 4, 3), torch.float64, seed=4)
    for grad in (torch.randn(2, 1, 4, 1, dtype=torch.float64).expand(z.shape),
                 torch.randn(2, 5, 8, 3, dtype=torch.float64)[:, :, ::2],
                 torch.randn(2, 4, 3, 5, dtype=torch.float64).permute(0, 3, 1, 2)):
        out = torch.ops.uda_ops_triton.self_information_backward(grad, z, 1)
        z64 = z.clone().requires_grad_(True)
        reference.self_information(z64, dim=1).backward(grad)
        assert_close(out, z64.grad, torch.float64)


# ---------------------------------------------------------------------------------------------------
# Mask search: NaN row with a zero budget returns the base mask (SPEC section 4 step 1)
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_base", [False, True])
def test_mask_nan_row_with_zero_budget_returns_base_mask(triton_backend, with_base):
    j = torch.randn(3, 8)
    j[1, 2] = float("nan")
    base = (torch.rand(8) < 0.5).float() if with_base else None
    out = torch.ops.uda_ops_triton.adversarial_dropout_mask(j, base, 0, True)
    ref = reference.adversarial_dropout_mask(j, max_flips=0, base_mask=base)
    assert not out.isnan().any()
    assert torch.equal(out, ref.to(out.dtype))
    assert torch.equal(uda_ops.adversarial_dropout_mask(j, max_flips=0, base_mask=base), ref.to(out.dtype))
    g = torch.randn(2, 4, 3, 3)
    g[0, 1, 0, 0] = float("nan")
    h = torch.randn(2, 4, 3, 3)
    out = torch.ops.uda_ops_triton.channel_adversarial_dropout_mask(g, h, None, 0, True)
    assert torch.equal(out, torch.ones(2, 4))
    # with a budget the NaN row is still NaN
    assert torch.ops.uda_ops_triton.adversarial_dropout_mask(j, base, 1, True)[1].isnan().all()


# ---------------------------------------------------------------------------------------------------
# Mask search: the chunked path (int64 in-row index and loop counter) against the one-chunk path (int32)
# ---------------------------------------------------------------------------------------------------
def test_mask_search_chunked_int64_index_matches_one_chunk(triton_backend, monkeypatch):
    """float64 rows of 41 units without a base mask (tests/test_triton.py has float32 with one) searched in
    chunks of 16 (a partial last chunk), a budget below and one above U, a NaN row: the same flips as the
    in-register search and the reference (35 s under the interpreter on an idle core)."""
    from uda_ops.triton import adversarial_dropout_mask as M
    gen = torch.Generator().manual_seed(3)
    j = torch.randn(3, 41, generator=gen, dtype=torch.float64)
    j[2, 40] = float("nan")
    for flips in (7, 50):
        fast = torch.ops.uda_ops_triton.adversarial_dropout_mask(j, None, flips, True)
        with monkeypatch.context() as m:
            m.setattr(M, "ROW_BLOCK", 16)
            chunked = torch.ops.uda_ops_triton.adversarial_dropout_mask(j, None, flips, True)
        assert chunked[2].isnan().all() and not chunked[:2].isnan().any()
        torch.testing.assert_close(chunked, fast, equal_nan=True)  # the rescale's sum: another order
        torch.testing.assert_close(chunked, reference.adversarial_dropout_mask(j, None, flips, None, True),
                                   equal_nan=True)


# ---------------------------------------------------------------------------------------------------
# Fused "mean"/"sum" in the forward kernels (reduction = 1/2): per-program partials, summed in one program
# ---------------------------------------------------------------------------------------------------
_FUSED = {  # op -> (logit inputs, call(d, zs, dim, reduction)); clan_adversarial also takes d (one per pixel)
    "sym_kl": (2, lambda d, zs, dim, r: torch.ops.uda_ops_triton.sym_kl(*zs, dim, False, r)),
    "kl_div": (2, lambda d, zs, dim, r: torch.ops.uda_ops_triton.kl_div(*zs, dim, r)),
    "entropy": (1, lambda d, zs, dim, r: torch.ops.uda_ops_triton.entropy(*zs, dim, r)),
    "clan_adversarial": (2, lambda d, zs, dim, r: torch.ops.uda_ops_triton.clan_adversarial(
        d, *zs, 1.0, 0.5, 0.4, dim, r)),
}
# NCHW C = 19 (one step, 3 programs), C = 150 (chunks of 64), channels_last rows, (N, C) rows, an empty batch
_FUSED_CASES = [((3, 19, 2, 3), "contiguous"), ((1, 150, 2, 3), "contiguous"), ((2, 19, 3, 2), "channels_last"),
                ((9, 5), "contiguous"), ((0, 19, 2, 3), "contiguous")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("op", list(_FUSED))
def test_fused_reduction_matches_the_map(triton_backend, op, dtype, monkeypatch):
    """reduction 2 ("sum") / 1 ("mean") is the map's float64 sum / mean, a 0-d tensor in the accumulation dtype,
    bitwise the same on a second call; its gradients are those of map.sum() / map.mean(); 3 and -1 raise.
    float64: the partials summed 2 at a time (a loop of several steps with a masked tail)."""
    if dtype == torch.float64:
        monkeypatch.setattr(K, "REDUCE_BLOCK", 2)
    n, call = _FUSED[op]
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for shape, layout in _FUSED_CASES:
        zs = [logits(shape, dtype, layout=layout, seed=s).requires_grad_(True) for s in range(n)]
        d = torch.randn([s for i, s in enumerate(shape) if i != 1], dtype=dtype).requires_grad_(True)
        xs = zs + ([d] if op == "clan_adversarial" else [])
        full = call(d, zs, 1, 0)
        for r, name in ((2, "sum"), (1, "mean")):
            red = call(d, zs, 1, r)
            ref = getattr(full.detach().double(), name)()
            msg = f"{op} {name} {tuple(shape)} {layout} {dtype}"
            assert red.shape == () and red.dtype == full.dtype, msg
            torch.testing.assert_close(red.detach().double(), ref, equal_nan=True, msg=msg, **tol)
            again = call(d, zs, 1, r)
            assert torch.equal(red, again) or (red.isnan() and again.isnan()), msg
            g_red = torch.autograd.grad(red, xs, allow_unused=True)
            g_map = torch.autograd.grad(getattr(full, name)(), xs, retain_graph=True, allow_unused=True)
            for a, b in zip(g_red, g_map):
                torch.testing.assert_close(a, b, equal_nan=True, msg=msg, **tol)
    for bad in (3, -1):
        with pytest.raises((ValueError, RuntimeError), match="reduction must be 0"):
            call(d, zs, 1, bad)


def test_fused_reduction_kernels_compile_for_sm90(tmp_path):
    """The REDUCE variants of the forward loss kernels and the partials' finishing kernel through Triton's
    real code generator and ptxas (no GPU), in bfloat16; no spills (the map path is compiled by test_triton)."""
    import subprocess
    import sys
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path), "TRITON_DEFAULT_FP_FUSION": "1"}
    r = subprocess.run([sys.executable, "-m", "uda_ops.triton.aot_check", "--dtypes", "bf16", "--reduce", "--only",
                        "reduce", "--report"], capture_output=True, text=True, env=env, timeout=900,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 4 * 3 + 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert all(ln.startswith("ok") and "spill_stores=0" in ln for ln in lines), r.stdout


def test_float_arguments_keep_float64_precision():
    """Triton passes a Python float as fp32 (on an H200, float64 entropy, self_information and clan_adversarial
    were off by 4e-8 relative: 1/log C and lambda rounded to fp32). f64_args sends (rounded, rest); the kernels
    add them up in float64."""
    from uda_ops.triton import _common as K
    for v in (-1.0 / math.log(19), 40.0, 0.4, 1.0 / 3, 0.0, -1e-30):
        hi, lo = K.f64_args(v)
        lo32 = float(torch.tensor(lo, dtype=torch.float32))  # what the kernel receives
        assert float(torch.tensor(hi, dtype=torch.float32)) == hi
        assert abs((hi + lo32) - v) <= 1e-14 * abs(v)
        assert v == hi or abs(hi - v) > 1e6 * abs((hi + lo32) - v)  # the rest matters where v is not an fp32 number


@pytest.mark.parametrize("name", sorted(BACKWARDS))
def test_backward_ops_reject_integer_or_misshaped_gradients(name):
    """K.check_grad_dtype / pixel_grad: an int64 upstream gradient or one of the wrong shape raises."""
    check_backward_gradient_errors(torch.ops.uda_ops_triton, name)


# ---------------------------------------------------------------------------------------------------
# The eager path (uda_ops.triton.EAGER): plain calls skip the dispatcher, with the custom ops' results
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_eager_path_matches_the_custom_ops(triton_backend, op, reduction, monkeypatch):
    """A plain eager call runs the op's autograd.Function (K.EAGER), whose forward and backward call the op bodies
    directly: the same values and gradients, to the bit, as the custom ops (UDA_OPS_TRITON_EAGER=0); the fused mean
    included. Double backward raises, as with the custom ops (uda_ops.triton._common.first_order: the backward is not silently
    taken as a constant)."""
    from uda_ops import _ops
    from conftest import eager_path_results
    xs = op.make((2, 19, 3, 5), torch.float32, kind="neg_inf")
    results = eager_path_results(op, xs, reduction, "TRITON_EAGER", TT.EAGER, monkeypatch)
    for a, b in zip(results[True], results[False]):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    monkeypatch.setattr(_ops, "TRITON_EAGER", True)
    x = xs[-1].detach().double().requires_grad_()
    (g,) = torch.autograd.grad(uda_ops.entropy(x), x, create_graph=True)
    with pytest.raises(RuntimeError, match="no second-order gradient"):
        g.sum().backward()


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("eager", [True, False], ids=["eager_path", "custom_ops"])
def test_double_backward_raises(triton_backend, op, eager, monkeypatch):
    """Both Triton paths: first-order gradients under create_graph=True, and a clear error for the second order."""
    from uda_ops import _ops
    monkeypatch.setattr(_ops, "TRITON_EAGER", eager)
    check_first_order_only(op)


def test_eager_path_only_for_plain_eager_calls(triton_backend):
    """Fake tensors (torch.compile, export, opcheck) and tensor subclasses get the custom ops."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from uda_ops import _ops
    z = torch.randn(2, 3, 4)
    assert _ops.kernels("entropy", z) is TT.EAGER
    with FakeTensorMode() as mode:
        fz = mode.from_tensor(z)
        assert _ops.kernels("entropy", fz) is torch.ops.uda_ops_triton
        assert uda_ops.entropy(fz).shape == ()


@pytest.mark.parametrize("d_dtype,z_dtype", [(torch.float16, torch.float32), (torch.float64, torch.float32),
                                             (torch.float32, torch.float16), (torch.float16, torch.float16)])
def test_clan_reads_d_in_its_own_dtype(triton_backend, d_dtype, z_dtype, monkeypatch):
    """clan_adversarial hands the kernels d itself (no float32 copy; they convert it): the loss and every gradient
    equal those of the same d given in the accumulation dtype (to the bit; d's gradient has d's dtype)."""
    z1, z2 = (logits((2, 5, 3, 4), z_dtype, seed=s) for s in (0, 1))
    d = (torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(2)) * 4).to(d_dtype)
    launched = []
    launch = K.launch
    monkeypatch.setattr(K, "launch", lambda kernel, grid, *args, **meta: launched.append(args[0].data_ptr()) or
                        launch(kernel, grid, *args, **meta))
    dr = d.detach().clone().requires_grad_()
    uda_ops.clan_adversarial_loss(dr, z1, z2, target=1.0, reduction="none").sum().backward()
    assert launched == [dr.data_ptr()] * 2  # forward and backward read d in place
    acc = torch.float64 if z_dtype == torch.float64 else torch.float32
    results = []
    for dd in (d, d.to(acc)):  # the kernel converts d to acc: the same values either way
        xs = [x.detach().clone().requires_grad_() for x in (dd, z1, z2)]
        loss = uda_ops.clan_adversarial_loss(*xs, target=1.0, reduction="sum")  # in d's dtype
        loss.backward()
        results.append([loss.to(d_dtype)] + [x.grad.to(x.dtype if i else d_dtype) for i, x in enumerate(xs)])
    assert results[0][1].dtype == d_dtype
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("conv", [False, True], ids=["NC", "NCHW"])
@pytest.mark.parametrize("name", ["minent", "advent", "clan", "adr", "dta"])
def test_method_steps_run_on_the_eager_path(triton_backend, name, conv):
    """Every UDA method whose losses are uda_ops ops takes a training step on the Triton backend, which a plain
    call now runs through uda_ops.triton.EAGER (what a GPU user gets), and updates every module
    (test_methods.test_step_runs_and_updates)."""
    import test_methods
    test_methods.test_step_runs_and_updates(name, conv)
