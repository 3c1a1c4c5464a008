"""Eager PyTorch reference of every op in SPEC sections 1-4: the oracle, and the fallback.

Written for clarity, not speed: each function follows the formula of ../shared/SPEC.md line by line.
Half-precision inputs are computed in float32 (float64 stays float64) and the result is returned in
the input dtype. ``log p`` is always ``z - logsumexp(z)``, computed as ``log_softmax``: ``(z - max) - log sum
exp(z - max)``, which keeps the ``log 2`` of two tied logits at any magnitude (``z - logsumexp(z)`` written out
rounds it away: by 6e-5 at 1e4 in float32, entirely past 1e16 in float64). Every ``p * log p`` term is taken as 0
where ``p == 0`` so that ``-inf`` logits (masked classes) never produce NaN.

These functions take already-validated arguments; the public, validating API is ``uda_ops.functional``.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
from torch import Tensor

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
    "channel_impact",
    "budget",
    "reduce",
]


def _acc(x: Tensor) -> Tensor:
    """Upcast to the accumulation dtype: float64 stays, everything else becomes float32."""
    return x if x.dtype == torch.float64 else x.float()


def _pixels(z: Tensor, dim: int) -> int:
    """Pixels per sample of (N, C, *) logits with classes at `dim` (explicit: a reshape's -1 fails when N = 0)."""
    return math.prod(s for i, s in enumerate(z.shape) if i not in (0, dim % z.dim()))


def reduce(map_: Tensor, reduction: str) -> Tensor:
    """Reduce a per-pixel map: ``mean`` divides by the number of pixels (NaN for none), as torch does."""
    if reduction == "none":
        return map_
    if reduction == "sum":
        return map_.sum()
    return map_.mean()


def _mul0(w: Tensor, x: Tensor) -> Tensor:
    """``w * x`` with ``0 * (+-inf) = 0`` (``p log p -> 0``); elsewhere the plain product and its gradient."""
    return w * torch.where((w == 0) & torch.isinf(x), torch.zeros_like(x), x)


def _diff0(a: Tensor, b: Tensor) -> Tensor:
    """``a - b`` that is 0 where both are the same infinity (two ``-inf`` logits give 0, not NaN); the
    gradient of a finite tie is the plain one (1, -1)."""
    return torch.where((a == b) & torch.isinf(a), torch.zeros_like(a), a - b)


# ---------------------------------------------------------------------------------------------
# Section 1: divergences between two predictions
# ---------------------------------------------------------------------------------------------
def sym_kl(a: Tensor, b: Tensor, dim: int = 1, reduction: str = "mean",
           detach_targets: bool = False) -> Tensor:
    """Symmetric KL ``1/2 (KL(p||q) + KL(q||p)) = 1/2 sum_c (p_c - q_c)(a_c - b_c)`` per pixel."""
    a32, b32 = _acc(a), _acc(b)
    p, q = torch.softmax(a32, dim), torch.softmax(b32, dim)
    dp = p - q
    if detach_targets:
        # Value of Eq. 1, gradient of the ADR code: d/da = (p - q)/2, d/db = (q - p)/2.
        dp = dp.detach()
    terms = _mul0(dp, _diff0(a32, b32))
    d = 0.5 * terms.sum(dim)
    return reduce(d, reduction).to(a.dtype)


def kl_div(input: Tensor, target: Tensor, dim: int = 1, reduction: str = "mean",
           detach_target: bool = False) -> Tensor:
    """``KL(softmax(target) || softmax(input)) = sum_c q_c (log q_c - log p_c)`` per pixel."""
    x, y = _acc(input), _acc(target)
    if detach_target:
        y = y.detach()
    logp = torch.log_softmax(x, dim)
    logq = torch.log_softmax(y, dim)
    q = logq.exp()
    terms = _mul0(q, _diff0(logq, logp))
    return reduce(terms.sum(dim), reduction).to(input.dtype)


# ---------------------------------------------------------------------------------------------
# Section 2: entropy and weighted self-information
# ---------------------------------------------------------------------------------------------
def self_information(z: Tensor, dim: int = 1) -> Tensor:
    """Weighted self-information ``I_c = -p_c log p_c / log C``, same shape as ``z``."""
    x = _acc(z)
    logp = torch.log_softmax(x, dim)
    info = -_mul0(logp.exp(), logp) / math.log(z.shape[dim])
    return info.to(z.dtype)


def entropy(z: Tensor, dim: int = 1, reduction: str = "mean") -> Tensor:
    """Normalised entropy ``E = sum_c I_c`` in [0, 1]; ``"none"`` gives the ``(N, *)`` map."""
    x = _acc(z)
    logp = torch.log_softmax(x, dim)
    e = -_mul0(logp.exp(), logp).sum(dim) / math.log(z.shape[dim])
    return reduce(e, reduction).to(z.dtype)


def entropy_ranking_loss(z: Tensor, ratio: float = 0.3, dim: int = 1) -> Tensor:
    """Mean entropy over the ``ratio`` highest-entropy pixels of each sample (ADVENT Sec. 4.3)."""
    e = _acc(entropy(z, dim=dim, reduction="none")).reshape(z.shape[0], _pixels(z, dim))
    k = max(1, int(e.shape[1] * ratio)) if e.shape[1] else 0
    return e.topk(k, dim=1).values.mean().to(z.dtype)


def class_ratio_prior_loss(z: Tensor, prior: Tensor, mu: float = 0.5, dim: int = 1) -> Tensor:
    """ADVENT Eq. 10: ``sum_c max(0, mu * prior_c - mean_pixels(p_c))`` per sample, averaged over N."""
    p = torch.softmax(_acc(z), dim).movedim(dim, -1).reshape(z.shape[0], _pixels(z, dim), z.shape[dim])
    mean_p = p.mean(1)  # (N, C)
    gap = torch.clamp(mu * _acc(prior).to(mean_p.device) - mean_p, min=0)
    return gap.sum(1).mean().to(z.dtype)


# ---------------------------------------------------------------------------------------------
# Section 3: CLAN
# ---------------------------------------------------------------------------------------------
def cosine_discrepancy(z1: Tensor, z2: Tensor, dim: int = 1) -> Tensor:
    """``M = 1 - cos(softmax(z1), softmax(z2))`` per pixel, shape ``(N, *)``."""
    p1, p2 = torch.softmax(_acc(z1), dim), torch.softmax(_acc(z2), dim)
    cos = (p1 * p2).sum(dim) / (p1.norm(dim=dim) * p2.norm(dim=dim))
    return (1 - cos).to(z1.dtype)


def clan_adversarial_loss(d: Tensor, z1: Tensor, z2: Tensor, target: float,
                          lambda_local: float = 40.0, epsilon: float = 0.4, dim: int = 1,
                          reduction: str = "mean", detach_weight: bool = False) -> Tensor:
    """CLAN Eq. 5: ``(epsilon + lambda_local * M) * BCEWithLogits(d, target)`` per pixel."""
    m = _acc(cosine_discrepancy(_acc(z1), _acc(z2), dim))
    if detach_weight:
        m = m.detach()
    dd = _acc(d).reshape(m.shape)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        dd, torch.full_like(dd, float(target)), reduction="none")
    return reduce((epsilon + lambda_local * m) * bce, reduction).to(d.dtype)


def weight_discrepancy_loss(params1: Iterable[Tensor], params2: Iterable[Tensor]) -> Tensor:
    """CLAN Eq. 4: cosine similarity of the two heads' flattened, concatenated parameters."""
    w1 = torch.cat([p.reshape(-1) for p in params1])
    w2 = torch.cat([p.reshape(-1) for p in params2])
    return torch.nn.functional.cosine_similarity(w1, w2, dim=0)


# ---------------------------------------------------------------------------------------------
# Section 4: adversarial dropout mask search
# ---------------------------------------------------------------------------------------------
def budget(units: int, delta: Optional[float], max_flips: Optional[int]) -> int:
    """The flip budget ``L``: ``max_flips``, or ``int(U * delta)`` in float64 (Python truncation)."""
    return int(max_flips) if max_flips is not None else int(float(units) * float(delta))


def adversarial_dropout_mask(jacobian: Tensor, delta: Optional[float] = None,
                             max_flips: Optional[int] = None, base_mask: Optional[Tensor] = None,
                             rescale: bool = True) -> Tensor:
    """Element-wise mask search on ``(N, U)`` (SPEC section 4, steps 1-5)."""
    jac = _acc(jacobian.detach())
    n, units = jac.shape
    m0 = torch.ones_like(jac) if base_mask is None else _acc(base_mask.detach()).expand_as(jac)
    flips = budget(units, delta, max_flips)
    if flips == 0:
        return m0.to(jacobian.dtype).clone()
    candidate = (2 * m0 - 1) * torch.sign(jac) < 0
    a = torch.where(candidate, jac.abs(), torch.zeros_like(jac))
    if flips + 1 > units:
        t = torch.zeros(n, 1, dtype=jac.dtype, device=jac.device)
    else:
        t = a.topk(flips + 1, dim=1).values[:, -1:]
    m = (m0 - (a > t).to(jac.dtype)).abs()
    if rescale:
        s = m.sum(1, keepdim=True)
        m = torch.where(s > 0, m * units / torch.where(s > 0, s, torch.ones_like(s)), m)
    # A NaN anywhere in a row's Jacobian makes that row's mask NaN: never hidden.
    m = torch.where(jac.isnan().any(1, keepdim=True), torch.full_like(m, float("nan")), m)
    return m.to(jacobian.dtype)


def channel_impact(grad: Tensor, activation: Tensor) -> Tensor:
    """Impact ``s_nc = sum_hw g_nchw h_nchw`` of each channel: the ``(N, C)`` Jacobian w.r.t. the mask."""
    g, h = _acc(grad.detach()), _acc(activation.detach())
    return (g * h).reshape(g.shape[0], g.shape[1], -1).sum(-1)


def channel_adversarial_dropout_mask(grad: Tensor, activation: Optional[Tensor] = None,
                                     delta: Optional[float] = None, max_flips: Optional[int] = None,
                                     base_mask: Optional[Tensor] = None,
                                     rescale: bool = True) -> Tensor:
    """Channel-wise search from ``(g, h)`` of shape ``(N, C, *)``, or a precomputed ``(N, C)`` impact."""
    impact = _acc(grad.detach()) if activation is None else channel_impact(grad, activation)
    return adversarial_dropout_mask(impact, delta, max_flips, base_mask, rescale).to(grad.dtype)
