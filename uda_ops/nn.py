"""``nn.Module`` losses in torch's conventions: they hold arguments, the math lives in ``uda_ops.functional``."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import functional as F

__all__ = [
    "SymmetricKLLoss",
    "KLDivergenceLoss",
    "SelfInformation",
    "EntropyLoss",
    "EntropyRankingLoss",
    "ClassRatioPriorLoss",
    "CosineDiscrepancy",
    "CLANAdversarialLoss",
    "WeightDiscrepancyLoss",
]


class SymmetricKLLoss(nn.Module):
    """ADR's pixelwise symmetric KL between two predictions (logits). See :func:`uda_ops.sym_kl`."""

    def __init__(self, dim: int = 1, reduction: str = "mean", detach_targets: bool = False):
        super().__init__()
        self.dim, self.reduction, self.detach_targets = dim, reduction, detach_targets

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return F.sym_kl(a, b, self.dim, self.reduction, self.detach_targets)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, reduction={self.reduction!r}, detach_targets={self.detach_targets}"


class KLDivergenceLoss(nn.Module):
    """``KL(softmax(target) || softmax(input))`` on logits (DTA Eqs. 9-10). See :func:`uda_ops.kl_div`."""

    def __init__(self, dim: int = 1, reduction: str = "mean", detach_target: bool = False):
        super().__init__()
        self.dim, self.reduction, self.detach_target = dim, reduction, detach_target

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.kl_div(input, target, self.dim, self.reduction, self.detach_target)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, reduction={self.reduction!r}, detach_target={self.detach_target}"


class SelfInformation(nn.Module):
    """ADVENT's weighted self-information map, the discriminator input of AdvEnt."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, z: Tensor) -> Tensor:
        return F.self_information(z, self.dim)


class EntropyLoss(nn.Module):
    """ADVENT's MinEnt loss (normalised entropy); ``reduction="none"`` gives the entropy map."""

    def __init__(self, dim: int = 1, reduction: str = "mean"):
        super().__init__()
        self.dim, self.reduction = dim, reduction

    def forward(self, z: Tensor) -> Tensor:
        return F.entropy(z, self.dim, self.reduction)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, reduction={self.reduction!r}"


class EntropyRankingLoss(nn.Module):
    """Entropy of the ``ratio`` highest-entropy pixels of each sample (ADVENT Sec. 4.3)."""

    def __init__(self, ratio: float = 0.3, dim: int = 1):
        super().__init__()
        self.ratio, self.dim = ratio, dim

    def forward(self, z: Tensor) -> Tensor:
        return F.entropy_ranking_loss(z, self.ratio, self.dim)


class ClassRatioPriorLoss(nn.Module):
    """ADVENT Eq. 10 with a fixed class prior (the l1-normalised source label histogram)."""

    def __init__(self, prior: Tensor, mu: float = 0.5, dim: int = 1):
        super().__init__()
        self.register_buffer("prior", torch.as_tensor(prior, dtype=torch.float32).clone())
        self.mu, self.dim = mu, dim

    @classmethod
    def from_label_histogram(cls, counts: Tensor, mu: float = 0.5, dim: int = 1) -> "ClassRatioPriorLoss":
        counts = torch.as_tensor(counts, dtype=torch.float64)
        return cls((counts / counts.sum()).float(), mu, dim)

    def forward(self, z: Tensor) -> Tensor:
        return F.class_ratio_prior_loss(z, self.prior.to(z.dtype), self.mu, self.dim)


class CosineDiscrepancy(nn.Module):
    """CLAN's discrepancy map ``1 - cos(p1, p2)`` of two classifier heads."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return F.cosine_discrepancy(z1, z2, self.dim)


class CLANAdversarialLoss(nn.Module):
    """CLAN's self-adaptive adversarial loss (Eq. 5). ``forward(d, z1, z2, target)``."""

    def __init__(self, lambda_local: float = 40.0, epsilon: float = 0.4, dim: int = 1,
                 reduction: str = "mean", detach_weight: bool = False):
        super().__init__()
        self.lambda_local, self.epsilon, self.dim = lambda_local, epsilon, dim
        self.reduction, self.detach_weight = reduction, detach_weight

    def forward(self, d: Tensor, z1: Tensor, z2: Tensor, target: float,
                detach_weight: Optional[bool] = None) -> Tensor:
        detach = self.detach_weight if detach_weight is None else detach_weight
        return F.clan_adversarial_loss(d, z1, z2, target, self.lambda_local, self.epsilon, self.dim,
                                       self.reduction, detach)

    def extra_repr(self) -> str:
        return (f"lambda_local={self.lambda_local}, epsilon={self.epsilon}, dim={self.dim}, "
                f"reduction={self.reduction!r}, detach_weight={self.detach_weight}")


class WeightDiscrepancyLoss(nn.Module):
    """CLAN Eq. 4: cosine similarity of two heads' parameters. ``forward(head1, head2)``."""

    def forward(self, head1, head2) -> Tensor:
        return F.weight_discrepancy_loss(head1, head2)
