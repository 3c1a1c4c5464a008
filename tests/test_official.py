"""benchmarks/official.py (the official repositories' eager formulas) against the uda_ops ops, values and
gradients, up to the normalisation each docstring states (SPEC.md)."""
import os
import sys

import pytest
import torch
import torch.nn.functional as F

import uda_ops
from conftest import logits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import official  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # kl_div's, as the official code

SHAPES = [(2, 19, 5, 7), (1, 2, 3, 4), (3, 150, 2, 3)]


def _grads(out, inputs):
    return torch.autograd.grad(out.sum(), inputs)


def _close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-12)


def _pair(shape, kind="random"):
    return [logits(shape, torch.float64, kind=kind, seed=s).requires_grad_() for s in (1, 2)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", ["random", "large", "one_hot"])
def test_advent_entropy_loss_is_entropy_mean(shape, kind):
    (z,) = _pair(shape, kind)[:1]
    ours = uda_ops.entropy(z, reduction="mean")
    theirs = official.entropy_loss(F.softmax(z, dim=1))
    _close(theirs, ours)
    _close(_grads(theirs, [z])[0], _grads(ours, [z])[0])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_advent_prob_2_entropy_is_self_information(shape):
    (z,) = _pair(shape)[:1]
    ours = uda_ops.self_information(z)
    theirs = official.prob_2_entropy(F.softmax(z, dim=1))
    _close(theirs, ours)
    g = torch.randn(z.shape, dtype=z.dtype, generator=torch.Generator().manual_seed(5))
    _close(torch.autograd.grad(theirs, z, g)[0], torch.autograd.grad(ours, z, g)[0])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_clan_weight_map_is_cosine_discrepancy(shape):
    z1, z2 = _pair(shape)
    ours = uda_ops.cosine_discrepancy(z1, z2)
    theirs = official.OFFICIAL["cosine_discrepancy"](z1, z2)
    assert theirs.shape == (shape[0], 1) + shape[2:]
    _close(theirs.squeeze(1), ours)
    for a, b in zip(_grads(theirs, [z1, z2]), _grads(ours, [z1, z2])):
        _close(a, b)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("target", [0.0, 1.0])
def test_clan_weighted_bce_is_clan_adversarial_loss(shape, target):
    z1, z2 = _pair(shape)
    d = (4 * torch.randn((shape[0], 1) + shape[2:], dtype=torch.float64,
                         generator=torch.Generator().manual_seed(3))).requires_grad_()
    ours = uda_ops.clan_adversarial_loss(d, z1, z2, target, lambda_local=10.0, epsilon=0.4)
    theirs = official.clan_adversarial(z1, z2, d, target, lambda_local=10.0, epsilon=0.4)
    _close(theirs, ours)
    for a, b in zip(_grads(theirs, [z1, z2, d]), _grads(ours, [z1, z2, d])):
        _close(a, b)


@pytest.mark.parametrize("shape", SHAPES + [(8, 10)], ids=str)
def test_adr_sym_kl_is_sym_kl_detached_over_c(shape):
    a, b = _pair(shape)
    c = shape[1]
    ours = uda_ops.sym_kl(a, b, reduction="mean", detach_targets=True) / c
    theirs = official.adr_sym_kl(a, b)
    _close(theirs, ours)
    for x, y in zip(_grads(theirs, [a, b]), _grads(ours, [a, b])):
        _close(x, y)


@pytest.mark.parametrize("shape", SHAPES + [(8, 10)], ids=str)
def test_adr_discrepancy_on_probabilities_is_the_quirk(shape):
    """ADR feeds softmax outputs to log_softmax: (KL(q || softmax(p)) + KL(p || softmax(q))) / 2C."""
    a, b = _pair(shape)
    c = shape[1]
    p, q = F.softmax(a, dim=1), F.softmax(b, dim=1)
    ours = (uda_ops.kl_div(p, q.log(), detach_target=True) + uda_ops.kl_div(q, p.log(), detach_target=True)) / (2 * c)
    theirs = official.adr_discrepancy(F.softmax(a, dim=1), F.softmax(b, dim=1))
    _close(theirs, ours)
    for x, y in zip(_grads(theirs, [a, b]), _grads(ours, [a, b])):
        _close(x, y)
    assert not torch.allclose(theirs, uda_ops.sym_kl(a, b) / c)  # not the symmetric KL of the logits


@pytest.mark.parametrize("shape", SHAPES + [(8, 10)], ids=str)
def test_dta_kl_div_is_kl_div_over_c(shape):
    x, y = _pair(shape)
    ours = uda_ops.kl_div(x, y, reduction="mean") / shape[1]
    theirs = official.dta_kl_div(x, y)
    _close(theirs, ours)
    for a, b in zip(_grads(theirs, [x, y]), _grads(ours, [x, y])):
        _close(a, b)


def test_official_covers_every_loss_case_with_its_inputs():
    from cases import CASES

    for name, fn in official.OFFICIAL.items():
        case = CASES[name]
        inputs = case.make(torch.device("cpu"), shape=(1, 3, 2, 2), dtype=torch.float64)
        assert torch.isfinite(fn(*inputs)).all(), name
    assert set(official.OFFICIAL) == {n for n, c in CASES.items() if c.differentiable}
