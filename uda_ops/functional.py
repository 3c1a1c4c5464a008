"""The public functional API of uda_ops (SPEC section 7): validate once, then run the fused op or the
eager reference (``uda_ops._ops.kernels`` picks the compiled, Triton or reference implementation). Kernels return
per-pixel maps in float32 (float64 for float64 input), or with "mean"/"sum" the reduced value, fused into the same
kernel (per-block partial sums in a fixed order: deterministic); the result has the input dtype.
"""
from __future__ import annotations

from typing import Iterable, Optional, Union

import torch
from torch import Tensor, nn

from . import _ops, _validate as V, reference

__all__ = [
    "sym_kl",
    "kl_div",
    "self_information",
    "entropy",
    "entropy_ranking_loss",
    "class_ratio_prior_loss",
    "cosine_discrepancy",
    "clan_adversarial_loss",
    "weight_discrepancy_loss",
    "adversarial_dropout_mask",
    "channel_adversarial_dropout_mask",
]


_R = _ops.REDUCTIONS


def _as(out: Tensor, dtype: torch.dtype) -> Tensor:
    """`out` in `dtype`: the kernels' float32 result cast for half inputs; as it is otherwise (a no-op ``.to`` still
    costs about 1-2 us per call)."""
    return out if out.dtype == dtype else out.to(dtype)


def sym_kl(a: Tensor, b: Tensor, dim: int = 1, reduction: str = "mean",
           detach_targets: bool = False) -> Tensor:
    """Pixelwise symmetric KL ``1/2 (KL(p||q) + KL(q||p))`` between the softmaxes of logits `a` and `b`.

    ADR Eq. 1. ``detach_targets=True`` gives the gradient of the ADR reference code, in which each
    direction's target is held constant: ``d/da = (p - q) / 2``.

    >>> a, b = torch.randn(2, 19, 8, 8), torch.randn(2, 19, 8, 8)
    >>> uda_ops.sym_kl(a, b).shape
    torch.Size([])
    """
    dim = V.pair("sym_kl", ("a", "b"), a, b, dim)
    V.reduction("sym_kl", reduction)
    ops = _ops.kernels("sym_kl", a, dim)
    if ops is None:
        return reference.sym_kl(a, b, dim, reduction, bool(detach_targets))
    return _as(ops.sym_kl(a, b, dim, bool(detach_targets), _R[reduction]), a.dtype)


def kl_div(input: Tensor, target: Tensor, dim: int = 1, reduction: str = "mean",
           detach_target: bool = False) -> Tensor:
    """``KL(softmax(target) || softmax(input))`` per pixel, both given as logits.

    DTA's ``nn.KLDivLoss('mean')(log_softmax(input), softmax(target))`` equals ``"mean"`` here divided by C.
    """
    dim = V.pair("kl_div", ("input", "target"), input, target, dim)
    V.reduction("kl_div", reduction)
    if detach_target:
        target = target.detach()
    ops = _ops.kernels("kl_div", input, dim)
    if ops is None:
        return reference.kl_div(input, target, dim, reduction)
    return _as(ops.kl_div(input, target, dim, _R[reduction]), input.dtype)


def self_information(z: Tensor, dim: int = 1) -> Tensor:
    """Weighted self-information ``I_c = -p_c log p_c / log C`` (ADVENT Sec. 3.2), same shape as `z`."""
    V.tensor("self_information", "z", z)
    dim = V.class_dim("self_information", "z", z, dim)
    ops = _ops.kernels("self_information", z, dim)
    if ops is None:
        return reference.self_information(z, dim)
    return ops.self_information(z, dim)


def entropy(z: Tensor, dim: int = 1, reduction: str = "mean") -> Tensor:
    """Normalised entropy ``E = -sum_c p_c log p_c / log C`` in [0, 1] (ADVENT Eqs. 2-3).

    ``"none"`` gives the ``(N, *)`` entropy map; ``"mean"`` is ADVENT's ``entropy_loss`` (MinEnt).
    """
    V.tensor("entropy", "z", z)
    dim = V.class_dim("entropy", "z", z, dim)
    V.reduction("entropy", reduction)
    ops = _ops.kernels("entropy", z, dim)
    if ops is None:
        return reference.entropy(z, dim, reduction)
    return _as(ops.entropy(z, dim, _R[reduction]), z.dtype)


def entropy_ranking_loss(z: Tensor, ratio: float = 0.3, dim: int = 1) -> Tensor:
    """Entropy minimised only on the `ratio` highest-entropy pixels of each sample (ADVENT Sec. 4.3)."""
    V.tensor("entropy_ranking_loss", "z", z)
    dim = V.batch_class_dim("entropy_ranking_loss", "z", z, dim)
    ratio = V.real("entropy_ranking_loss", "ratio", ratio, 0.0, 1.0)
    if z.shape[0] == 0:
        return z.new_tensor(float("nan"))
    e = entropy(z, dim, reduction="none")
    e = (e if e.dtype == torch.float64 else e.float()).reshape(z.shape[0], -1)
    k = max(1, int(e.shape[1] * ratio)) if e.shape[1] else 0
    return e.topk(k, dim=1).values.mean().to(z.dtype)


def class_ratio_prior_loss(z: Tensor, prior: Tensor, mu: float = 0.5, dim: int = 1) -> Tensor:
    """ADVENT Eq. 10: ``sum_c max(0, mu * prior_c - mean_pixels(p_c))`` per sample, averaged over samples.

    `prior` is the l1-normalised histogram of source label pixels per class, shape ``(C,)``.
    """
    V.tensor("class_ratio_prior_loss", "z", z)
    dim = V.batch_class_dim("class_ratio_prior_loss", "z", z, dim)
    V.tensor("class_ratio_prior_loss", "prior", prior)
    if prior.shape != (z.shape[dim],):
        raise ValueError(f"class_ratio_prior_loss: `prior` must have shape ({z.shape[dim]},), "
                         f"got {tuple(prior.shape)}")
    mu = V.real("class_ratio_prior_loss", "mu", mu, 0.0, 1.0)
    return reference.class_ratio_prior_loss(z, prior, mu, dim)


def cosine_discrepancy(z1: Tensor, z2: Tensor, dim: int = 1) -> Tensor:
    """``M = 1 - cos(softmax(z1), softmax(z2))`` per pixel, shape ``(N, *)`` (CLAN's discrepancy map)."""
    dim = V.pair("cosine_discrepancy", ("z1", "z2"), z1, z2, dim)
    ops = _ops.kernels("cosine_discrepancy", z1, dim)
    if ops is None:
        return reference.cosine_discrepancy(z1, z2, dim)
    return _as(ops.cosine_discrepancy(z1, z2, dim), z1.dtype)


def clan_adversarial_loss(d: Tensor, z1: Tensor, z2: Tensor, target: float, lambda_local: float = 40.0,
                          epsilon: float = 0.4, dim: int = 1, reduction: str = "mean",
                          detach_weight: bool = False) -> Tensor:
    """CLAN Eq. 5: ``(epsilon + lambda_local * M) * BCEWithLogits(d, target)`` per pixel.

    `d`: discriminator logits ``(N, 1, *)`` or ``(N, *)`` on the grid of the two heads' logits `z1`, `z2`
    ``(N, C, *)``; `target`: the domain label (e.g. 0 for source, 1 for target). ``detach_weight=True``
    for the discriminator step; the generator step lets the gradient flow through ``M``.
    """
    op = "clan_adversarial_loss"
    dim = V.pair(op, ("z1", "z2"), z1, z2, dim)
    V.tensor(op, "d", d)
    V.reduction(op, reduction)
    target = V.real(op, "target", target, 0.0, 1.0)
    lambda_local = V.real(op, "lambda_local", lambda_local)
    epsilon = V.real(op, "epsilon", epsilon)
    map_shape = z1.shape[:dim] + z1.shape[dim + 1:]
    with_channel = z1.shape[:dim] + (1,) + z1.shape[dim + 1:]
    if d.shape not in (map_shape, with_channel):
        raise ValueError(f"{op}: `d` must have shape {tuple(map_shape)} or {tuple(with_channel)} (the "
                         f"logits' grid), got {tuple(d.shape)}; upsample it to the logits' grid first")
    if d.device != z1.device:
        raise ValueError(f"{op}: `d` is on {d.device}, `z1` on {z1.device}")
    if detach_weight:
        z1, z2 = z1.detach(), z2.detach()
    ops = _ops.kernels("clan_adversarial", z1, dim)
    if ops is None:
        return reference.clan_adversarial_loss(d, z1, z2, target, lambda_local, epsilon, dim, reduction)
    loss = ops.clan_adversarial(d.reshape(map_shape), z1, z2, target, lambda_local, epsilon, dim, _R[reduction])
    return _as(loss, d.dtype)


def weight_discrepancy_loss(params1: Union[nn.Module, Iterable[Tensor]],
                            params2: Union[nn.Module, Iterable[Tensor]]) -> Tensor:
    """CLAN Eq. 4: cosine similarity of two heads' flattened, concatenated parameters (the CLAN code adds
    a constant +1). Takes two modules or two iterables of tensors."""
    p1 = list(params1.parameters() if isinstance(params1, nn.Module) else params1)
    p2 = list(params2.parameters() if isinstance(params2, nn.Module) else params2)
    if sum(p.numel() for p in p1) != sum(p.numel() for p in p2) or not p1:
        raise ValueError("weight_discrepancy_loss: the two heads must have the same, non-zero number of "
                         f"parameters, got {sum(p.numel() for p in p1)} and {sum(p.numel() for p in p2)}")
    return reference.weight_discrepancy_loss(p1, p2)


def adversarial_dropout_mask(jacobian: Tensor, delta: Optional[float] = None, max_flips: Optional[int] = None,
                             base_mask: Optional[Tensor] = None, rescale: bool = True) -> Tensor:
    """Element-wise adversarial dropout mask (DTA's EAdD) from the ``(N, U)`` Jacobian of a divergence
    w.r.t. the mask. Flips at most ``L = max_flips`` (or ``int(U * delta)``) units per row; see SPEC sec. 4.
    The result carries no gradient.

    >>> uda_ops.adversarial_dropout_mask(torch.tensor([[-.5, .2, -.1, -.3, 0.]]), delta=0.4)
    tensor([[0.0000, 1.6667, 1.6667, 0.0000, 1.6667]])
    """
    op = "adversarial_dropout_mask"
    V.tensor(op, "jacobian", jacobian)
    if jacobian.dim() != 2:
        raise ValueError(f"{op}: `jacobian` must have shape (N, U), got {tuple(jacobian.shape)}")
    flips = V.flip_budget(op, jacobian.shape[1], delta, max_flips)
    m0 = V.base_mask(op, base_mask, jacobian)
    ops = _ops.kernels(op, jacobian)
    if ops is None:
        return reference.adversarial_dropout_mask(jacobian, None, flips, m0, bool(rescale))
    m0 = None if m0 is None else m0.detach()
    return ops.adversarial_dropout_mask(jacobian.detach(), m0, flips, bool(rescale))


def channel_adversarial_dropout_mask(grad: Tensor, activation: Optional[Tensor] = None,
                                     delta: Optional[float] = None, max_flips: Optional[int] = None,
                                     base_mask: Optional[Tensor] = None, rescale: bool = True) -> Tensor:
    """Channel-wise adversarial dropout mask (DTA's CAdD), shape ``(N, C)``.

    From ``g = dD/d(m * h)`` and the activation ``h``, both ``(N, C, *)``: the channel impact
    ``s_nc = sum_hw g h`` is reduced and searched in one fused op. With ``activation=None``, `grad` is a
    precomputed ``(N, C)`` impact.
    """
    op = "channel_adversarial_dropout_mask"
    V.tensor(op, "grad", grad)
    if activation is None:
        return adversarial_dropout_mask(grad, delta, max_flips, base_mask, rescale)
    V.tensor(op, "activation", activation)
    V.same(op, ("grad", "activation"), (grad, activation))
    if grad.dim() < 2:
        raise ValueError(f"{op}: `grad` must have shape (N, C, *), got {tuple(grad.shape)}")
    flips = V.flip_budget(op, grad.shape[1], delta, max_flips)
    m0 = V.base_mask(op, base_mask, grad.new_empty(grad.shape[:2]))
    ops = _ops.kernels(op, grad, 1)
    if ops is None:
        return reference.channel_adversarial_dropout_mask(grad, activation, None, flips, m0, bool(rescale))
    m0 = None if m0 is None else m0.detach()
    return ops.channel_adversarial_dropout_mask(grad.detach(), activation.detach(), m0, flips,
                                                              bool(rescale))
