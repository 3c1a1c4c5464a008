"""The custom ops as torch sees them: gradcheck in float64 through the public API, and
torch.library.opcheck (schema, fake kernel, autograd registration, AOT dispatch) on every registered op."""
import pytest
import torch

import uda_ops
from uda_ops import _ops
from conftest import (BACKWARDS, CLAN_ARGS, OP_IDS, OPS, check_backward_gradient_errors, check_first_order_only,
                      logits, requires_ext)

pytestmark = requires_ext


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("shape,dim,layout", [((2, 4, 3, 5), 1, "contiguous"), ((2, 4, 3, 5), 1, "channels_last"),
                                              ((3, 2), 1, "contiguous"), ((2, 3, 5, 4), -1, "strided")])
def test_gradcheck(op, shape, dim, layout):
    xs = [x.requires_grad_(True) for x in op.make(shape, torch.float64, layout=layout, dim=dim)]
    assert torch.autograd.gradcheck(lambda *x: op.fn(list(x), dim), xs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_gradcheck_masked_classes(op):
    """Finite differences are valid off the -inf entries; their gradient is exactly zero."""
    xs = op.make((1, 4, 2, 3), torch.float64, kind="neg_inf")
    mask = [~torch.isinf(x) for x in xs]
    free = [x[m].clone().requires_grad_(True) for x, m in zip(xs, mask)]

    def f(*vals):
        full = []
        for x, m, v in zip(xs, mask, vals):
            y = x.clone()
            y = y.masked_scatter(m, v)
            full.append(y)
        return op.fn(full, 1)

    assert torch.autograd.gradcheck(f, free, eps=1e-6, atol=1e-7)


def _samples():
    """(op overload, args) for every op in the extension, forward and backward, in two layouts."""
    ops = torch.ops.uda_ops
    out = []
    for layout in ("contiguous", "channels_last"):
        for dtype in (torch.float32, torch.float64):
            a = logits((2, 5, 3, 4), dtype, layout=layout, seed=1)
            b = logits((2, 5, 3, 4), dtype, layout=layout, seed=2)
            g = torch.randn(2, 3, 4, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
            d = torch.randn(2, 3, 4, dtype=dtype)
            gs = torch.randn(2, 5, 3, 4, dtype=dtype)
            t, lam, eps = CLAN_ARGS["target"], CLAN_ARGS["lambda_local"], CLAN_ARGS["epsilon"]
            out += [
                (ops.sym_kl.default, (a, b, 1, False)),
                (ops.sym_kl.default, (a, b, 1, True)),
                (ops.sym_kl_backward.default, (g, a, b, 1, False)),
                (ops.kl_div.default, (a, b, 1)),
                (ops.kl_div_backward.default, (g, a, b, 1, True)),
                (ops.kl_div_backward.default, (g, a, b, 1, False)),
                (ops.entropy.default, (a, 1)),
                (ops.entropy_backward.default, (g, a, 1)),
                (ops.self_information.default, (a, 1)),
                (ops.self_information_backward.default, (gs, a, 1)),
                (ops.cosine_discrepancy.default, (a, b, 1)),
                (ops.cosine_discrepancy_backward.default, (g, a, b, 1)),
                (ops.clan_adversarial.default, (d, a, b, t, lam, eps, 1)),
                (ops.clan_adversarial_backward.default, (g, d, a, b, t, lam, eps, 1, True)),
                (ops.clan_adversarial_backward.default, (g, d, a, b, t, lam, eps, 1, False)),
                # the fused "mean" (1) / "sum" (2): a 0-d output, its gradient expanded over the map
                (ops.sym_kl.default, (a, b, 1, False, 1)),
                (ops.kl_div.default, (a, b, 1, 2)),
                (ops.entropy.default, (a, 1, 1)),
                (ops.clan_adversarial.default, (d, a, b, t, lam, eps, 1, 2)),
            ]
        j = torch.randn(3, 20)
        out += [
            (ops.adversarial_dropout_mask.default, (j, None, 4, True)),
            (ops.adversarial_dropout_mask.default, (j, (torch.rand(3, 20) < 0.5).float(), 4, False)),
            (ops.channel_adversarial_dropout_mask.default, (gs.float(), torch.rand(2, 5, 3, 4), None, 2, True)),
        ]
    return out


SAMPLES = _samples()


@pytest.mark.parametrize("overload,args", SAMPLES, ids=[f"{o.name()}-{i}" for i, (o, _) in enumerate(SAMPLES)])
def test_opcheck(overload, args):
    differentiable = overload.name().split("::")[1] in {"sym_kl", "kl_div", "entropy", "self_information",
                                                        "cosine_discrepancy", "clan_adversarial"}
    if differentiable:
        args = tuple(a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(overload, args)


def test_every_registered_op_has_a_sample():
    names = {o.name().split("::")[1] for o, _ in SAMPLES}
    registered = {n for n in dir(torch.ops.uda_ops) if not n.startswith("_")
                  and isinstance(getattr(torch.ops.uda_ops, n), torch._ops.OpOverloadPacket)}
    assert registered <= names, f"ops without an opcheck sample: {registered - names}"


@pytest.mark.parametrize("name", sorted(BACKWARDS))
def test_backward_ops_reject_integer_or_misshaped_gradients(name):
    """The CPU backward ops (csrc/layout.h check_grad_dtype, pixel_grad): an int64 upstream gradient or one of the
    wrong shape raises; the CUDA ops run the same check in tests/test_cuda.py, the Triton ones in test_triton_fixes."""
    check_backward_gradient_errors(torch.ops.uda_ops, name)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_double_backward_raises(op):
    """The native kernels: first-order gradients under create_graph=True, and a clear error for the second order
    (csrc/autograd.cpp: the backward ops' autograd kernels record a node that raises)."""
    check_first_order_only(op)


# ---------------------------------------------------------------------------------------------------
# Autograd of the compiled ops: C++ kernels (csrc/autograd.cpp), one path for eager and traced calls
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(set(BACKWARDS) | {b.replace("_backward", "") for b in BACKWARDS}))
def test_autograd_kernels_are_cpp(name):
    """Every loss op and its backward op has an autograd kernel from the extension (a C++ torch::autograd::Function; a
    Python autograd.Function cost 12-25 us more per small forward+backward)."""
    lines = torch._C._dispatch_dump(f"uda_ops::{name}").splitlines()
    autograd = [line for line in lines if line.startswith("Autograd")]
    assert len(autograd) == 1 and "csrc/autograd.cpp" in autograd[0], lines


def test_compiled_ops_for_eager_and_fake_tensors(backend):
    """Plain calls and fake tensors (torch.compile, export, opcheck) get the same ops (_ops.NATIVE: the default
    overloads); the reference backend gets none."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    z = torch.randn(2, 3, 4)
    assert _ops.kernels("entropy", z) is _ops.NATIVE
    assert _ops.NATIVE.entropy is torch.ops.uda_ops.entropy.default
    with FakeTensorMode() as mode:
        fz = mode.from_tensor(z)
        assert _ops.kernels("entropy", fz) is _ops.NATIVE
        assert uda_ops.entropy(fz).shape == ()
    backend("reference")
    assert _ops.kernels("entropy", z) is None


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_vmap_runs_the_ops_sample_by_sample(backend):
    """Under "auto" torch.func.vmap runs the eager reference (batched); under "native" the custom ops, sample by sample
    (vmap's fallback: they have no batching rule)."""
    z = torch.randn(4, 5, 3)
    per_sample = torch.stack([uda_ops.entropy(x, dim=0, reduction="none") for x in z])
    out = torch.func.vmap(lambda x: uda_ops.entropy(x, dim=0, reduction="none"))(z)
    torch.testing.assert_close(out, per_sample)
    backend("native")
    out = torch.func.vmap(lambda x: uda_ops.entropy(x, dim=0, reduction="none"))(z)
    assert torch.equal(out, per_sample)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_func_transforms_run_the_reference(op, backend):
    """torch.func.grad, jacrev and per-sample gradients (vmap of grad): the C++ autograd kernels cannot run under
    functorch, so "auto" takes the eager reference there, with the gradients of plain autograd; "native" raises
    (torch's error), never a silently wrong gradient."""
    xs = op.make((2, 4, 3, 5), torch.float64)

    def loss(*args):
        return op.fn(list(args), 1).sum()

    argnums = tuple(range(len(xs)))
    grads = torch.func.grad(loss, argnums=argnums)(*xs)
    leaves = [x.detach().clone().requires_grad_(True) for x in xs]
    want = torch.autograd.grad(loss(*leaves), [leaves[i] for i in argnums])
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w)
    k = argnums[0]
    jac = torch.func.jacrev(lambda x: op.fn([*xs[:k], x, *xs[k + 1:]], 1))(xs[k])
    assert jac.shape == op.fn(xs, 1).shape + xs[k].shape
    per_sample = torch.func.vmap(torch.func.grad(lambda *a: loss(*(t.unsqueeze(0) for t in a)), argnums=argnums))(*xs)
    for i, g in zip(argnums, per_sample):
        for n in range(xs[0].shape[0]):
            one = [x[n:n + 1].detach().clone().requires_grad_(True) for x in xs]
            w = torch.autograd.grad(loss(*one), one[i])[0]
            torch.testing.assert_close(g[n], w[0])
    backend("native")
    with pytest.raises(RuntimeError, match="functorch"):
        torch.func.grad(loss, argnums=argnums)(*xs)


def test_no_grad_and_inference_mode_record_nothing():
    """Under no_grad and inference_mode the autograd kernels record nothing and give the ops' values."""
    a, b = (torch.randn(4, 7, 3, requires_grad=True) for _ in range(2))
    want = torch.ops.uda_ops.sym_kl(a.detach(), b.detach(), 1, False, 0)
    with torch.no_grad():
        out = uda_ops.sym_kl(a, b, reduction="none")
    assert not out.requires_grad and torch.equal(out, want)
    with torch.inference_mode():
        out = uda_ops.sym_kl(a, b, reduction="none")
    assert torch.equal(out, want)


@pytest.mark.parametrize("name,needs", [("kl_div", (True, False)), ("kl_div", (False, True)),
                                        ("clan_adversarial", (True, False, False)),
                                        ("clan_adversarial", (False, True, True))])
def test_gradients_only_where_needed(name, needs):
    """needs_input_grad reaches the backward op: kl_div's target gradient and CLAN's logit gradients are computed
    only when asked for (detached target, discriminator step), and the gradients that are computed match the
    reference."""
    op = next(o for o in OPS if o.name == name)
    xs = [x.requires_grad_(n) for x, n in zip(op.make((2, 5, 3, 4), torch.float64), needs)]
    out = op.fn(xs, 1)
    grads = torch.autograd.grad(out.sum(), [x for x in xs if x.requires_grad])
    refs = [x.detach().requires_grad_(x.requires_grad) for x in xs]
    want = torch.autograd.grad(op.ref(refs, 1).sum(), [x for x in refs if x.requires_grad])
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_reference_has_second_order_gradients(op, backend):
    """What the error above stands in for: the reference backend's second derivatives (nonzero)."""
    backend("reference")
    xs = [x.requires_grad_(True) for x in op.make((2, 4, 3, 5), torch.float64)]
    grads = torch.autograd.grad(op.fn(xs, 1).sum(), xs, create_graph=True)
    second = torch.autograd.grad(sum((g * g).sum() for g in grads), xs, allow_unused=True)
    assert any(s is not None and s.abs().max() > 0 for s in second)
