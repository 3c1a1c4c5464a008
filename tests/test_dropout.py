"""uda_ops.dropout: the DTA adversarial dropout procedure against plain autograd + the reference search."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import uda_ops
from uda_ops import reference
from uda_ops.dropout import (AdversarialDropout, adversarial_dropout_loss, adversarial_dropout_mask_for,
                             delta_schedule, dropout_disabled, frozen_bn_stats)

from conftest import assert_close


def conv_upper(c=6, k=4, bn=True):
    layers = [nn.Conv2d(c, 8, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, k)]
    return nn.Sequential(*layers).double()


def fc_upper(u=12, k=3, bn=True):
    layers = [nn.Linear(u, 10)] + ([nn.BatchNorm1d(10)] if bn else []) + [nn.ReLU(), nn.Linear(10, k)]
    return nn.Sequential(*layers).double()


def plain_jacobian(upper, h, z, m0):
    """dD/dm at m = m0 by plain autograd, materialising the mask's Jacobian (the oracle)."""
    m = m0.clone().requires_grad_(True)
    p = torch.log_softmax(upper(m * h), 1)
    q = torch.softmax(z, 1)
    div = (q * (torch.log_softmax(z, 1) - p)).sum(1).mean()
    return torch.autograd.grad(div, m)[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_base", [False, True])
def test_channel_mode_matches_reference(seed, with_base):
    torch.manual_seed(seed)
    upper = conv_upper().eval()
    h = torch.randn(5, 6, 4, 4, dtype=torch.float64)
    z = torch.randn(5, 4, dtype=torch.float64)
    m0 = (torch.rand(5, 6, dtype=torch.float64) > 0.3).double() if with_base else torch.ones(5, 6).double()
    jac = plain_jacobian(upper, h, z, m0[:, :, None, None]).sum((2, 3))
    expected = reference.adversarial_dropout_mask(jac, delta=0.34, base_mask=m0)
    got = adversarial_dropout_mask_for(upper, h, z, delta=0.34, mode="channel",
                                       base_mask=m0 if with_base else None)
    assert got.shape == (5, 6, 1, 1) and not got.requires_grad
    assert_close(got.reshape(5, 6), expected, torch.float64)
    # something was actually dropped
    assert (got == 0).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_base", [False, True])
def test_element_mode_matches_reference(seed, with_base):
    torch.manual_seed(seed)
    upper = fc_upper().eval()
    h = torch.randn(7, 12, dtype=torch.float64)
    z = torch.randn(7, 3, dtype=torch.float64)
    m0 = (torch.rand(7, 12, dtype=torch.float64) > 0.3).double() if with_base else torch.ones(7, 12).double()
    jac = plain_jacobian(upper, h, z, m0)
    expected = reference.adversarial_dropout_mask(jac, max_flips=3, base_mask=m0)
    got = adversarial_dropout_mask_for(upper, h, z, max_flips=3, mode="element",
                                       base_mask=m0 if with_base else None)
    assert got.shape == h.shape and not got.requires_grad
    assert_close(got, expected, torch.float64)


def test_element_mode_on_feature_maps():
    torch.manual_seed(3)
    upper = conv_upper(bn=False)
    h = torch.randn(3, 6, 2, 3, dtype=torch.float64)
    z = torch.randn(3, 4, dtype=torch.float64)
    jac = plain_jacobian(upper, h, z, torch.ones_like(h)).reshape(3, -1)
    expected = reference.adversarial_dropout_mask(jac, delta=0.1).reshape(h.shape)
    got = adversarial_dropout_mask_for(upper, h, z, delta=0.1, mode="element")
    assert_close(got, expected, torch.float64)


def test_mask_increases_divergence():
    torch.manual_seed(4)
    upper = conv_upper(bn=False).float()
    h = torch.randn(16, 6, 4, 4)
    z = upper(nn.functional.dropout2d(h, 0.3)).detach()  # DTA's reference pass: random dropout
    mask = adversarial_dropout_mask_for(upper, h, z, delta=0.34, mode="channel")
    adv = uda_ops.kl_div(upper(h * mask), z, reduction="none")
    rnd = uda_ops.kl_div(upper(h * mask[torch.randperm(16)]), z, reduction="none")
    assert adv.mean() > rnd.mean()


def test_inside_no_grad_and_bn_buffers_untouched():
    torch.manual_seed(5)
    upper = conv_upper().train()
    bn = upper[1]
    bn.running_mean.uniform_()
    before = {k: v.clone() for k, v in upper.state_dict().items()}
    h = torch.randn(5, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    z = torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        got = adversarial_dropout_mask_for(upper, h, z, delta=0.34, mode="channel")
    for k, v in upper.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in upper.parameters()) and h.grad is None
    # the same as computing it with grad enabled (train-mode batch statistics in both)
    again = adversarial_dropout_mask_for(upper, h, z, delta=0.34, mode="channel")
    assert torch.equal(got, again)
    # freeze_bn=False lets the extra pass update the statistics
    adversarial_dropout_mask_for(upper, h, z, delta=0.34, mode="channel", freeze_bn=False)
    assert int(bn.num_batches_tracked) == int(before["1.num_batches_tracked"]) + 1


def test_frozen_bn_stats_through_a_closure():
    net = fc_upper().train()
    before = net[1].running_var.clone()
    fn = lambda x: net(x)  # noqa: E731
    h, z = torch.randn(4, 12, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    adversarial_dropout_mask_for(fn, h, z, delta=0.25, mode="element", freeze_bn=net)
    assert torch.equal(net[1].running_var, before)
    with frozen_bn_stats(net):
        net(h)
    assert torch.equal(net[1].running_var, before)


def with_dropout(upper, p=0.5):
    """``upper`` with a dropout layer after each ReLU, and the same weights."""
    layers = []
    for m in upper:
        layers.append(m)
        if isinstance(m, nn.ReLU):
            layers.append(nn.Dropout2d(p) if isinstance(upper[0], nn.Conv2d) else nn.Dropout(p))
    return nn.Sequential(*layers)


def test_dropout_disabled():
    torch.manual_seed(7)
    plain = fc_upper().train()
    noisy = with_dropout(plain)
    h = torch.randn(6, 12, dtype=torch.float64)
    assert not torch.equal(noisy(h), noisy(h))  # the check below would see dropout left on
    drops = [m for m in noisy if isinstance(m, nn.Dropout)]
    with dropout_disabled(noisy.forward):  # a bound method names its module
        assert all(not m.training for m in drops) and noisy[1].training  # BatchNorm stays in train mode
        assert torch.equal(noisy(h), plain(h))
    assert all(m.training for m in drops)
    with pytest.raises(RuntimeError), dropout_disabled([noisy]):
        raise RuntimeError
    assert all(m.training for m in drops)
    noisy.eval()
    with dropout_disabled(noisy):
        pass
    assert not any(m.training for m in drops)  # restored as it was, not set to train


@pytest.mark.parametrize("mode", ["channel", "element"])
def test_mask_search_without_the_upper_networks_own_dropout(mode):
    """Under ``dropout_disabled`` the Jacobian pass sees the network without its own dropout layers:
    the mask equals that of the same network built without them."""
    torch.manual_seed(8)
    plain = (conv_upper() if mode == "channel" else fc_upper()).train()
    noisy = with_dropout(plain)
    h = torch.randn(5, 6, 4, 4, dtype=torch.float64) if mode == "channel" else torch.randn(5, 12).double()
    z = torch.randn(5, plain[-1].out_features, dtype=torch.float64)
    expected = adversarial_dropout_mask_for(plain, h, z, delta=0.34, mode=mode)
    with dropout_disabled(noisy):
        got = adversarial_dropout_mask_for(noisy, h, z, delta=0.34, mode=mode)
    assert torch.equal(got, expected) and (got == 0).any()


def test_module_and_loss():
    torch.manual_seed(6)
    upper = conv_upper(bn=False).float()
    h = torch.randn(4, 6, 4, 4, requires_grad=True)
    z = upper(h).detach()
    layer = AdversarialDropout(mode="channel", delta_max=0.5, ramp_epochs=2)
    assert layer.set_epoch(0) == pytest.approx(0.25) and layer.set_epoch(5) == pytest.approx(0.5)
    out = layer(h, upper, z)
    expected = h.detach() * adversarial_dropout_mask_for(upper, h, z, delta=0.5)
    assert torch.equal(out.detach(), expected)
    out.sum().backward()
    assert h.grad is not None
    assert torch.equal(layer.eval()(h, upper, z), h)
    loss = adversarial_dropout_loss(upper, h, z, delta=0.5)
    assert torch.allclose(loss, uda_ops.kl_div(upper(expected), z))
    assert "channel" in repr(layer)


def test_module_budget_arguments():
    """Exactly one budget: ``delta``, ``max_flips``, or ``delta_max`` (ramped). ``max_flips=0`` is a budget
    of zero flips: the layer returns ``h``, and with a base mask it applies that mask unchanged."""
    with pytest.raises(ValueError, match="exactly one"):
        AdversarialDropout("element", delta=0.1, max_flips=2)
    with pytest.raises(ValueError, match="exactly one"):
        AdversarialDropout("element", max_flips=2, delta_max=0.1)
    with pytest.raises(ValueError, match="give"):
        AdversarialDropout("element")
    upper = fc_upper(bn=False)
    h, z = torch.randn(3, 12, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    zero = AdversarialDropout("element", max_flips=0)
    assert torch.equal(zero(h, upper, z), h)
    base = (torch.arange(12) % 3 > 0).double().expand(3, 12)
    assert torch.equal(zero(h, upper, z, base_mask=base), h * base)


def test_delta_schedule():
    assert delta_schedule(0, 80, 0.05) == pytest.approx(0.05 / 80)
    assert delta_schedule(39, 80, 0.1) == pytest.approx(0.05)
    assert delta_schedule(79, 80, 0.1) == pytest.approx(0.1)
    assert delta_schedule(500, 80, 0.1) == pytest.approx(0.1)
    assert delta_schedule(3, 0, 0.02) == 0.02


def test_zero_budget_and_errors():
    upper = fc_upper(bn=False)
    h, z = torch.randn(2, 12, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    assert torch.equal(adversarial_dropout_mask_for(upper, h, z, delta=0.05, mode="element"),
                       torch.ones_like(h))  # int(12 * 0.05) = 0 flips, no rescale
    with pytest.raises(ValueError, match="mode"):
        adversarial_dropout_mask_for(upper, h, z, delta=0.1, mode="pixel")
    with pytest.raises(ValueError, match="exactly one"):
        adversarial_dropout_mask_for(upper, h, z, mode="element")
    with pytest.raises(ValueError, match="batch"):
        adversarial_dropout_mask_for(upper, h, z[:1], delta=0.1, mode="element")
