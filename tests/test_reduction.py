"""The fused "mean"/"sum" of the forward ops (csrc/layout.h, Reduction) on the CPU kernels: the reduced op equals
the float64 sum/mean of its own map, is bitwise the same for every thread count (partial sums per tile, added in
tile order), and its gradient is that of the map's sum/mean; the raw ops reject a bad `reduction`.
The Triton kernels' fused reduction is tested in test_triton_fixes.py, the CUDA one in tests/cuda/host_check.cu."""
import pytest
import torch

import uda_ops
from conftest import CLAN_ARGS, OPS, TOL, logits, requires_ext

pytestmark = requires_ext


def _clan(d, z1, z2, dim, reduction):
    return uda_ops.clan_adversarial_loss(d, z1, z2, **CLAN_ARGS, dim=dim, reduction=reduction)


# name -> the public function (inputs..., dim, reduction); inputs from conftest's Op.make
REDUCED = {
    "sym_kl": lambda a, b, dim, r: uda_ops.sym_kl(a, b, dim=dim, reduction=r),
    "kl_div": lambda a, b, dim, r: uda_ops.kl_div(a, b, dim=dim, reduction=r),
    "entropy": lambda z, dim, r: uda_ops.entropy(z, dim=dim, reduction=r),
    "clan_adversarial": _clan,
}
_OPS = {op.name: op for op in OPS}


def _inputs(name, shape, dtype, layout="contiguous", dim=1):
    return _OPS[name].make(shape, dtype, layout=layout, dim=dim)


CASES = [((2, 19, 9, 13), 1, "contiguous"), ((2, 19, 9, 13), 1, "channels_last"), ((37, 10), 1, "contiguous"),
         ((3, 150, 5), 1, "contiguous"), ((2, 5, 7, 4), -1, "strided"), ((0, 4, 3), 1, "contiguous")]


@pytest.mark.parametrize("name", list(REDUCED))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,dim,layout", CASES, ids=[f"{s}-{lay}" for s, _, lay in CASES])
def test_reduced_equals_sum_of_map(name, dtype, shape, dim, layout):
    fn = REDUCED[name]
    xs = _inputs(name, shape, dtype, layout, dim)
    # bf16 inputs are accumulated in float32: the unrounded map is that of the same values in float32
    acc = torch.float32 if dtype == torch.bfloat16 else dtype
    the_map = fn(*[x.to(acc) for x in xs], dim, "none").double()
    rtol, atol = TOL[acc]
    if dtype == torch.bfloat16:
        rtol = 2.0 ** -8  # the reduced value is rounded once to bf16
    for reduction, expected in (("sum", the_map.sum()), ("mean", the_map.mean())):
        out = fn(*xs, dim, reduction)
        assert out.shape == () and out.dtype == dtype
        torch.testing.assert_close(out.double(), expected, rtol=max(rtol, 1e-6), atol=atol * max(1, the_map.numel()),
                                   equal_nan=True)
    if the_map.numel() == 0:
        assert fn(*xs, dim, "sum").item() == 0 and torch.isnan(fn(*xs, dim, "mean"))


@pytest.mark.parametrize("name", list(REDUCED))
def test_reduced_is_deterministic_across_thread_counts(name):
    fn = REDUCED[name]
    xs = _inputs(name, (4, 19, 32, 48), torch.float32)
    before = torch.get_num_threads()
    try:
        outs = {}
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs[threads] = [fn(*xs, 1, r) for r in ("sum", "mean")]
    finally:
        torch.set_num_threads(before)
    for threads in (2, 3):
        for a, b in zip(outs[1], outs[threads]):
            assert torch.equal(a, b), f"{name}: {threads} threads give {b.item()!r}, 1 thread {a.item()!r}"


@pytest.mark.parametrize("name", list(REDUCED))
def test_reduced_is_more_accurate_than_a_float32_sum(name):
    """Float32 partials over tiles of at most 64 pixels, added in float64: close to the float64 sum even where a
    naive float32 running sum drifts (300k pixels)."""
    fn = REDUCED[name]
    xs = _inputs(name, (3, 4, 320, 320), torch.float32)
    exact = fn(*[x.double() for x in xs], 1, "sum")
    out = fn(*xs, 1, "sum").double()
    assert abs(out - exact) <= 2e-6 * abs(exact)


@pytest.mark.parametrize("name", list(REDUCED))
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_reduced_gradient_is_that_of_the_map(name, reduction, layout):
    fn = REDUCED[name]
    xs = _inputs(name, (2, 6, 5, 3), torch.float64, layout)
    a = [x.clone().requires_grad_(True) for x in xs]
    b = [x.clone().requires_grad_(True) for x in xs]
    ga = torch.autograd.grad(fn(*a, 1, reduction) * 1.7, a)
    the_map = fn(*b, 1, "none")
    gb = torch.autograd.grad(getattr(the_map, reduction)() * 1.7, b)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
    xs = [x.clone().requires_grad_(True) for x in xs]
    # (a sum of ~30 CLAN losses of size ~40: finite differences carry ~1e-8 of rounding noise)
    assert torch.autograd.gradcheck(lambda *v: fn(*v, 1, reduction), xs, eps=1e-6, atol=1e-6, rtol=1e-4)


def _raw(name, xs, *reduction):
    """The compiled op with its positional arguments, `reduction` last (omitted: the schema default)."""
    ops = torch.ops.uda_ops
    if name == "sym_kl":
        return ops.sym_kl(*xs, 1, False, *reduction)
    if name == "clan_adversarial":
        return ops.clan_adversarial(*xs, CLAN_ARGS["target"], CLAN_ARGS["lambda_local"], CLAN_ARGS["epsilon"], 1,
                                    *reduction)
    return getattr(ops, name)(*xs, 1, *reduction)


@pytest.mark.parametrize("name", list(REDUCED))
def test_raw_op_reduction_argument(name):
    xs = _inputs(name, (2, 4, 3), torch.float32)
    the_map = _raw(name, xs, 0)
    assert the_map.shape == (2, 3) and torch.equal(_raw(name, xs), the_map)  # the default is the map
    assert _raw(name, xs, 2).shape == () and _raw(name, xs, 1).dtype == torch.float32
    for bad in (3, -1):
        with pytest.raises(RuntimeError, match="reduction must be 0"):
            _raw(name, xs, bad)


def test_reduced_under_compile_fullgraph():
    z = logits((2, 19, 8, 8), seed=3)
    f = torch.compile(lambda x: uda_ops.entropy(x) + uda_ops.sym_kl(x, x.flip(1), reduction="sum"), fullgraph=True)
    torch.testing.assert_close(f(z), uda_ops.entropy(z) + uda_ops.sym_kl(z, z.flip(1), reduction="sum"))
