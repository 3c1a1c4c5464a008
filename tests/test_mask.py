"""Adversarial dropout mask search (SPEC section 4): the SPEC's test vectors, the edge cases of each step,
and the compiled kernels against the reference (element-wise, channel-wise fused, precomputed impact)."""
import math

import pytest
import torch

import uda_ops
from uda_ops import reference
from conftest import DTYPES, TOL, requires_ext

SPEC_VECTORS = [
    ([-0.5, 0.2, -0.1, -0.3, 0.0], 0.4, [0, 5 / 3, 5 / 3, 0, 5 / 3]),
    ([-0.3, -0.3, -0.3, 0.1], 0.25, [1, 1, 1, 1]),  # tie at t: nothing flips
    ([0.3, 0.2, -0.1, 0.1], 0.5, [4 / 3, 4 / 3, 0, 4 / 3]),
]

BACKENDS = ["auto", "reference"]


def _close(out, expected):
    rtol, atol = TOL[out.dtype]
    torch.testing.assert_close(out.double(), torch.as_tensor(expected, dtype=torch.float64).expand(out.shape),
                               rtol=rtol, atol=atol, equal_nan=True)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("jac,delta,expected", SPEC_VECTORS)
def test_spec_vectors(backend, backend_name, dtype, jac, delta, expected):
    backend(backend_name)
    j = torch.tensor([jac], dtype=dtype)
    _close(uda_ops.adversarial_dropout_mask(j, delta=delta), [expected])
    # the same vector as a precomputed channel impact, and as a fused (g, h) pair with h = 1
    _close(uda_ops.channel_adversarial_dropout_mask(j, delta=delta), [expected])
    g = j[:, :, None, None].expand(1, len(jac), 2, 3) / 6
    _close(uda_ops.channel_adversarial_dropout_mask(g.contiguous(), torch.ones_like(g), delta=delta), [expected])


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_edge_cases(backend, backend_name):
    backend(backend_name)
    mask = uda_ops.adversarial_dropout_mask
    j = torch.tensor([[-0.5, 0.2, -0.1, -0.3, 0.0]])
    # L == 0: the base mask unchanged, not rescaled, a new tensor
    m0 = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]])
    out = mask(j, max_flips=0, base_mask=m0)
    assert torch.equal(out, m0) and out.data_ptr() != m0.data_ptr()
    # a dropped unit with J > 0 is a candidate: flipping it back on raises the divergence
    _close(mask(torch.tensor([[-0.1, 0.6, -0.2]]), max_flips=1, base_mask=torch.tensor([1.0, 0.0, 1.0]),
                rescale=False), [[1, 1, 1]])
    _close(mask(j, max_flips=1, base_mask=m0, rescale=False), [[0, 0, 1, 1, 0]])
    # L + 1 > U: every candidate flips; rescale=False leaves 0/1
    _close(mask(j, max_flips=10, rescale=False), [[0, 1, 0, 0, 1]])
    _close(mask(j, delta=1.0, rescale=False), [[0, 1, 0, 0, 1]])
    # J == 0 never flips; an all-zero Jacobian leaves the mask alone
    _close(mask(torch.zeros(1, 5), max_flips=3), [[1, 1, 1, 1, 1]])
    # every unit dropped: the row stays all zeros (no division by zero)
    _close(mask(-torch.ones(1, 3), max_flips=3), [[0, 0, 0]])
    # int(U * delta) truncates: U = 10, delta = 0.29 -> 2 flips
    j10 = -torch.arange(1.0, 11.0)[None]
    assert (mask(j10, delta=0.29, rescale=False) == 0).sum() == 2
    # a (U,) base mask broadcasts over rows
    j2 = torch.tensor([[-1.0, 2.0, -0.5], [1.0, -2.0, 3.0]])
    out = mask(j2, max_flips=1, base_mask=torch.tensor([1.0, 0.0, 1.0]), rescale=False)
    _close(out, [[1, 1, 1], [1, 0, 1]])
    # NaN in a row's Jacobian: that row is NaN, the others are untouched
    jn = torch.tensor([[math.nan, -1.0, 1.0], [-1.0, 2.0, 3.0]])
    out = mask(jn, max_flips=1, rescale=False)
    assert out[0].isnan().all()
    _close(out[1:], [[0, 1, 1]])
    # empty batch and the result carries no gradient
    assert mask(torch.zeros(0, 4), delta=0.5).shape == (0, 4)
    jg = torch.randn(2, 6, requires_grad=True)
    assert not mask(jg, delta=0.5).requires_grad


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_row_with_zero_budget_returns_base_mask(backend, backend_name, dtype):
    """SPEC section 4 step 1 comes first: L == 0 returns m0 unchanged, even for a row holding a NaN;
    with L > 0 the NaN row is NaN. Element-wise, precomputed impact and fused (g, h) alike."""
    backend(backend_name)
    j = torch.tensor([[math.nan, -1.0, 1.0, 0.5], [-1.0, 2.0, 3.0, -0.1]], dtype=dtype)
    m0 = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]], dtype=dtype)
    g = j[:, :, None, None].expand(2, 4, 2, 3).contiguous()
    h = torch.ones_like(g)
    for kw in ({"max_flips": 0}, {"delta": 0.2}, {"max_flips": 0, "base_mask": m0}, {"delta": 0.2, "base_mask": m0}):
        expected = reference.adversarial_dropout_mask(j, **kw)
        assert not expected.isnan().any(), kw  # the reference: the base mask, as SPEC step 1 says
        for out in (uda_ops.adversarial_dropout_mask(j, **kw), uda_ops.channel_adversarial_dropout_mask(j, **kw),
                    uda_ops.channel_adversarial_dropout_mask(g, h, **kw),
                    uda_ops.channel_adversarial_dropout_mask(g.to(memory_format=torch.channels_last), h, **kw)):
            assert torch.equal(out, expected), (kw, out)
    assert uda_ops.adversarial_dropout_mask(j, max_flips=1)[0].isnan().all()
    assert uda_ops.channel_adversarial_dropout_mask(g, h, max_flips=1)[0].isnan().all()


@requires_ext
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,u,flips", [(1, 1, 1), (3, 7, 2), (4, 1000, 100), (2, 1000, 999), (5, 64, 0),
                                      (2, 33, 33)])
@pytest.mark.parametrize("rescale", [True, False])
def test_element_native_matches_reference(dtype, n, u, flips, rescale):
    g = torch.Generator().manual_seed(n * u + flips)
    j = torch.randn(n, u, generator=g).to(dtype)
    j[:, ::5] = 0  # zeros never flip
    if u >= 4:
        j[:, 1:4] = j[:, 1:2]  # ties
    m0 = (torch.rand(n, u, generator=g) < 0.8).to(dtype)
    for base in (None, m0):
        out = uda_ops.adversarial_dropout_mask(j, max_flips=flips, base_mask=base, rescale=rescale)
        ref = reference.adversarial_dropout_mask(j.double(), max_flips=flips,
                                                 base_mask=None if base is None else base.double(),
                                                 rescale=rescale)
        assert out.dtype == dtype and out.shape == (n, u)
        _close(out, ref)


@requires_ext
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 64, 7, 9), (3, 512, 4, 4), (2, 19, 33), (1, 8, 2, 3, 4), (2, 5)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_channel_native_matches_reference(dtype, shape, layout):
    g = torch.Generator().manual_seed(sum(shape))
    grad = torch.randn(shape, generator=g).to(dtype)
    act = torch.relu(torch.randn(shape, generator=g)).to(dtype)
    if layout == "channels_last":
        grad, act = (t.movedim(1, -1).contiguous().movedim(-1, 1) for t in (grad, act))
    activation = act if len(shape) > 2 else None
    m0 = (torch.rand(shape[:2], generator=g) < 0.9).to(dtype)
    for base in (None, m0):
        out = uda_ops.channel_adversarial_dropout_mask(grad, activation, delta=0.1, base_mask=base)
        impact = reference.channel_impact(grad.double(), act.double()) if activation is not None else grad.double()
        ref = reference.adversarial_dropout_mask(impact, delta=0.1, base_mask=None if base is None else base.double())
        assert out.dtype == dtype and out.shape == shape[:2]
        if dtype in (torch.float16, torch.bfloat16):
            # the impact is summed in fp32 from half inputs: compare the flip count, and the kept values
            assert ((out == 0) != (ref == 0)).sum() <= 1
        else:
            _close(out, ref)


@requires_ext
def test_mask_does_not_mutate_inputs():
    j = torch.randn(3, 50)
    m0 = (torch.rand(3, 50) < 0.5).float()
    j0, m00 = j.clone(), m0.clone()
    uda_ops.adversarial_dropout_mask(j, delta=0.3, base_mask=m0)
    g, h = torch.randn(2, 8, 4, 4), torch.rand(2, 8, 4, 4)
    g0, h0 = g.clone(), h.clone()
    uda_ops.channel_adversarial_dropout_mask(g, h, delta=0.3)
    assert torch.equal(j, j0) and torch.equal(m0, m00) and torch.equal(g, g0) and torch.equal(h, h0)
