"""Property tests (hypothesis): the kernels agree with the reference on drawn shapes, scales and class
counts, and the math's invariants hold (non-negativity, symmetry, shift invariance, bounds)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import uda_ops
from uda_ops import reference
from conftest import OPS, assert_close, check_op

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


@st.composite
def logit_batches(draw, n_tensors=2):
    c = draw(st.integers(2, 40))
    spatial = draw(st.lists(st.integers(1, 9), min_size=0, max_size=3))
    n = draw(st.integers(1, 3))
    scale = draw(st.sampled_from([1e-3, 1.0, 10.0, 100.0]))
    seed = draw(st.integers(0, 2 ** 16))
    g = torch.Generator().manual_seed(seed)
    shape = (n, c, *spatial)
    xs = [torch.randn(shape, generator=g, dtype=torch.float64) * scale for _ in range(n_tensors)]
    if draw(st.booleans()) and c > 2:  # a masked class
        k = draw(st.integers(0, c - 1))
        for x in xs:
            x[:, k] = -math.inf
    return xs


@SETTINGS
@given(xs=logit_batches(), op_index=st.integers(0, len(OPS) - 1), dtype=st.sampled_from([torch.float64, torch.float32]))
def test_native_matches_reference(xs, op_index, dtype):
    op = OPS[op_index]
    inputs = [x.to(dtype) for x in xs[:op.n_logits]]
    if op.with_d:
        inputs = [torch.randn(inputs[0].shape[:1] + inputs[0].shape[2:], dtype=dtype) * 5] + inputs
    check_op(op, inputs, dim=1)


@SETTINGS
@given(xs=logit_batches())
def test_divergence_invariants(xs):
    a, b = xs
    s = uda_ops.sym_kl(a, b, reduction="none")
    assert (s >= -1e-12).all()
    assert_close(s, uda_ops.sym_kl(b, a, reduction="none"))
    assert_close(uda_ops.sym_kl(a, a, reduction="none"), torch.zeros_like(s))
    # sym_kl is the mean of the two directed KLs
    k = 0.5 * (uda_ops.kl_div(a, b, reduction="none") + uda_ops.kl_div(b, a, reduction="none"))
    assert_close(s, k, scale=1e3)
    assert (uda_ops.kl_div(a, b, reduction="none") >= -1e-12).all()
    # softmax is shift invariant per pixel
    shift = torch.randn(a.shape[:1] + (1,) + a.shape[2:], dtype=a.dtype) * 50
    assert_close(uda_ops.sym_kl(a + shift, b, reduction="none"), s, scale=1e3)
    m = uda_ops.cosine_discrepancy(a, b)
    assert ((m >= -1e-12) & (m <= 1 + 1e-12)).all()


@SETTINGS
@given(xs=logit_batches(n_tensors=1))
def test_entropy_invariants(xs):
    (z,) = xs
    e = uda_ops.entropy(z, reduction="none")
    assert ((e >= -1e-12) & (e <= 1 + 1e-12)).all()
    assert_close(uda_ops.self_information(z).sum(1), e)
    uniform = torch.zeros_like(z)
    assert_close(uda_ops.entropy(uniform, reduction="none"), torch.ones_like(e))


@SETTINGS
@given(n=st.integers(1, 4), u=st.integers(1, 300), frac=st.floats(0, 1), seed=st.integers(0, 2 ** 16),
       rescale=st.booleans(), with_base=st.booleans())
def test_mask_search_properties(n, u, frac, seed, rescale, with_base):
    g = torch.Generator().manual_seed(seed)
    j = torch.randn(n, u, generator=g, dtype=torch.float64).round(decimals=1)  # many ties and zeros
    m0 = (torch.rand(n, u, generator=g) < 0.7).double() if with_base else torch.ones(n, u, dtype=torch.float64)
    out = uda_ops.adversarial_dropout_mask(j, delta=frac, base_mask=m0 if with_base else None, rescale=rescale)
    ref = reference.adversarial_dropout_mask(j, delta=frac, base_mask=m0 if with_base else None, rescale=rescale)
    torch.testing.assert_close(out, ref)
    flips = int(u * frac)
    changed = (out != 0) != (m0 != 0)
    assert (changed.sum(1) <= flips).all()
    # every flip raises the divergence to first order: kept -> dropped needs J < 0, dropped -> kept J > 0
    assert (j[changed & (m0 == 1)] < 0).all() and (j[changed & (m0 == 0)] > 0).all()
    if rescale and flips:
        kept = out != 0
        assert torch.allclose(out.sum(1)[kept.any(1)], torch.full_like(out.sum(1)[kept.any(1)], float(u)))


@pytest.mark.parametrize("dtype,s", [(torch.float32, 1e4), (torch.float32, 1e7), (torch.float64, 1e17),
                                     (torch.bfloat16, 3e38)], ids=["fp32-1e4", "fp32-1e7", "fp64-1e17", "bf16-3e38"])
def test_reference_exact_at_any_logit_magnitude(dtype, s):
    """The reference takes log p from the largest logit (log_softmax), so a tie between two huge logits keeps its
    log 2 at any magnitude: z - logsumexp(z) rounded it away (fp32 entropy 6e-5 off at 1e4; float64, the tests'
    oracle, 0 at 1e17 and so across bf16's range)."""
    z = torch.tensor([[s, s, 0.0]], dtype=dtype)
    y = torch.tensor([[s, 0.0, 0.0]], dtype=dtype)
    log2, log3 = math.log(2), math.log(3)
    tol = {torch.float32: 1e-6, torch.float64: 1e-12, torch.bfloat16: 1e-2}[dtype]
    close = lambda a, b: torch.testing.assert_close(a.double(), torch.tensor(b, dtype=torch.float64), rtol=tol, atol=0)
    close(reference.entropy(z, reduction="none"), [log2 / log3])
    close(reference.self_information(z), [[log2 / 2 / log3, log2 / 2 / log3, 0.0]])
    close(reference.kl_div(z, y, reduction="none"), [log2])  # q = (1, 0, 0), p = (1/2, 1/2, 0)
