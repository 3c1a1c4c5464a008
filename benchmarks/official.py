"""The eager formulas users run today from the papers' official code, for the benchmarks to compare against.

Rewritten from the official repositories (ADVENT: valeoai/ADVENT, CLAN: RoyalVane/CLAN, ADR: mil-tokyo/adr_da,
DTA: postBG/DTA.pytorch) in this project's style, computing what they compute, op for op, so their cost is
what a user pays today. Each docstring says how the result relates to the uda_ops op (SPEC.md); the relations
are checked by tests/test_official.py.

``OFFICIAL[name]`` takes the inputs of ``cases.CASES[name]`` (logits first, as the benchmarks build them) and
returns what the official code would feed to ``backward()``. ``"sym_kl"`` is ADR's term as intended
(``adr_sym_kl``: the same operations as ADR's ``discrepancy`` on softmax outputs, and the value of ours / C).
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["prob_2_entropy", "entropy_loss", "clan_weight_map", "weighted_bce_with_logits",
           "adr_discrepancy", "dta_kl_div", "OFFICIAL"]


# ---------------------------------------------------------------------------------------------
# ADVENT (advent/utils/func.py, advent/utils/loss.py): both take probabilities, softmax(z).
# ---------------------------------------------------------------------------------------------
def prob_2_entropy(prob: Tensor) -> Tensor:
    """AdvEnt's weighted self-information map ``-p log2(p + 1e-30) / log2(C)``, shape ``(N, C, H, W)``.

    Equals ``uda_ops.self_information(z)`` for ``prob = softmax(z)`` up to the ``1e-30`` (a change below
    1e-28 per element in fp32); in fp16 ``1e-30`` rounds to 0 and underflowed classes give NaN here."""
    c = prob.shape[1]
    return -prob * torch.log2(prob + 1e-30) / math.log2(c)


def entropy_loss(prob: Tensor) -> Tensor:
    """ADVENT's MinEnt loss: ``-sum(p log2(p + 1e-30)) / (N H W log2(C))``, a scalar.

    Equals ``uda_ops.entropy(z, reduction="mean")`` for ``prob = softmax(z)`` (same normalisation by
    ``log C`` and by the number of pixels), up to the ``1e-30``."""
    n, c, h, w = prob.shape
    return -(prob * torch.log2(prob + 1e-30)).sum() / (n * h * w * math.log2(c))


# ---------------------------------------------------------------------------------------------
# CLAN (CLAN_train.py, utils/loss.py)
# ---------------------------------------------------------------------------------------------
def clan_weight_map(p1: Tensor, p2: Tensor) -> Tensor:
    """CLAN's ``weightmap`` of the two heads' probabilities: ``1 - sum_c p1 p2 / (|p1|_2 |p2|_2)``.

    Shape ``(N, 1, H, W)`` (the official code views it as ``(1, 1, H, W)``: batch size 1). Equals
    ``uda_ops.cosine_discrepancy(z1, z2).unsqueeze(1)`` for ``p = softmax(z)``."""
    n, _, h, w = p1.shape
    cos = (p1 * p2).sum(1) / (torch.norm(p1, 2, 1) * torch.norm(p2, 2, 1))
    return 1.0 - cos.view(n, 1, h, w)


def weighted_bce_with_logits(input: Tensor, target: Tensor, weight: Tensor, alpha: float,
                             beta: float) -> Tensor:
    """CLAN's ``WeightedBCEWithLogitsLoss`` (size_average=True): ``mean(alpha * l + beta * l * weight)`` with
    ``l`` the BCE with logits written out with a max shift; CLAN calls it with ``alpha = Epsilon``,
    ``beta = Lambda_local`` and ``weight = clan_weight_map(...)``.

    Equals ``uda_ops.clan_adversarial_loss(d, z1, z2, t, lambda_local=beta, epsilon=alpha)`` ("mean": both
    divide by ``N H W``) when ``d`` is already on the logits' grid (CLAN upsamples it bilinearly first)."""
    max_val = (-input).clamp(min=0)
    loss = input - input * target + max_val + ((-max_val).exp() + (-input - max_val).exp()).log()
    loss = alpha * loss + beta * loss * weight
    return loss.mean()


def clan_adversarial(z1: Tensor, z2: Tensor, d: Tensor, target: float = 1.0, lambda_local: float = 40.0,
                     epsilon: float = 0.4) -> Tensor:
    """CLAN's generator-step adversarial term from logits: weight map of the two softmaxes (not detached),
    then the weighted BCE against a label map filled with ``target``."""
    weight = clan_weight_map(F.softmax(z1, dim=1), F.softmax(z2, dim=1))
    return weighted_bce_with_logits(d, torch.full_like(d, target), weight, epsilon, lambda_local)


# ---------------------------------------------------------------------------------------------
# ADR (solver.py, Solver.discrepancy) and DTA (consistency_losses.py, KLDivLossWithLogits)
# ---------------------------------------------------------------------------------------------
def adr_discrepancy(out1: Tensor, out2: Tensor) -> Tensor:
    """ADR's ``Solver.discrepancy`` as written: ``(kl_div(log_softmax(out1), sg(out2)) +
    kl_div(log_softmax(out2), sg(out1))) / 2``, ``kl_div``'s elementwise mean (over ``N C``, ``N C H W`` for maps).

    ADR calls it on probabilities ``p = softmax(a)``, ``q = softmax(b)``, so ``log_softmax`` sees a softmax (the
    known quirk): it computes ``(KL(q || softmax(p)) + KL(p || softmax(q))) / (2 C)``, i.e.
    ``(uda_ops.kl_div(p, log q) + uda_ops.kl_div(q, log p)) / (2 C)`` with the targets detached, which is not
    the symmetric KL of ``a`` and ``b``. ``adr_sym_kl`` is the intended term."""
    return (F.kl_div(F.log_softmax(out1, dim=1), out2.detach(), reduction="mean")
            + F.kl_div(F.log_softmax(out2, dim=1), out1.detach(), reduction="mean")) / 2


def adr_sym_kl(a: Tensor, b: Tensor) -> Tensor:
    """ADR's symmetric KL as intended, from logits: ``(kl_div(log_softmax(a), sg(softmax(b))) +
    kl_div(log_softmax(b), sg(softmax(a)))) / 2``, elementwise mean.

    Equals ``uda_ops.sym_kl(a, b, reduction="mean", detach_targets=True) / C`` in value and gradient."""
    p, q = F.softmax(a, dim=1), F.softmax(b, dim=1)
    return (F.kl_div(F.log_softmax(a, dim=1), q.detach(), reduction="mean")
            + F.kl_div(F.log_softmax(b, dim=1), p.detach(), reduction="mean")) / 2


def dta_kl_div(logits1: Tensor, logits2: Tensor) -> Tensor:
    """DTA's ``nn.KLDivLoss('mean')(log_softmax(logits1), softmax(logits2))``: ``KL(q || p)`` averaged over
    every element (``N C H W``), gradient flowing into both.

    Equals ``uda_ops.kl_div(logits1, logits2, reduction="mean") / C`` in value and in both gradients."""
    return F.kl_div(F.log_softmax(logits1, dim=1), F.softmax(logits2, dim=1), reduction="mean")


# ---------------------------------------------------------------------------------------------
# The formulas over the benchmark cases' inputs (benchmarks/cases.py: logits first, CLAN's d last)
# ---------------------------------------------------------------------------------------------
OFFICIAL: Dict[str, Callable[..., Tensor]] = {
    "sym_kl": adr_sym_kl,
    "kl_div": dta_kl_div,
    "entropy": lambda z: entropy_loss(F.softmax(z, dim=1)),
    "self_information": lambda z: prob_2_entropy(F.softmax(z, dim=1)),
    "cosine_discrepancy": lambda z1, z2: clan_weight_map(F.softmax(z1, dim=1), F.softmax(z2, dim=1)),
    "clan_adversarial": lambda z1, z2, d: clan_adversarial(z1, z2, d, 1.0),
}
