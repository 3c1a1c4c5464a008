"""uda_ops: fused kernels for the losses of unsupervised domain adaptation (ADR, DTA, I2I Adapt, CLAN, ADVENT).

    import uda_ops
    loss = uda_ops.entropy(logits)                      # ADVENT MinEnt
    loss = uda_ops.sym_kl(logits_a, logits_b)           # ADR
    uda_ops.backend_info()                              # what runs where

The math of every op is stated in SPEC.md; ``uda_ops.reference`` is its eager PyTorch oracle.
"""
from . import _ops, reference
from ._ops import backend_info, get_backend, set_backend
from .functional import (
    adversarial_dropout_mask,
    channel_adversarial_dropout_mask,
    clan_adversarial_loss,
    class_ratio_prior_loss,
    cosine_discrepancy,
    entropy,
    entropy_ranking_loss,
    kl_div,
    self_information,
    sym_kl,
    weight_discrepancy_loss,
)
from .nn import (
    CLANAdversarialLoss,
    ClassRatioPriorLoss,
    CosineDiscrepancy,
    EntropyLoss,
    EntropyRankingLoss,
    KLDivergenceLoss,
    SelfInformation,
    SymmetricKLLoss,
    WeightDiscrepancyLoss,
)

from . import dropout
from .dropout import AdversarialDropout, adversarial_dropout_loss, adversarial_dropout_mask_for, delta_schedule

__version__ = "0.1.0"

__all__ = [
    "adversarial_dropout_mask",
    "backend_info",
    "channel_adversarial_dropout_mask",
    "clan_adversarial_loss",
    "class_ratio_prior_loss",
    "cosine_discrepancy",
    "entropy",
    "entropy_ranking_loss",
    "get_backend",
    "kl_div",
    "reference",
    "self_information",
    "set_backend",
    "sym_kl",
    "weight_discrepancy_loss",
    "CLANAdversarialLoss",
    "ClassRatioPriorLoss",
    "CosineDiscrepancy",
    "EntropyLoss",
    "EntropyRankingLoss",
    "KLDivergenceLoss",
    "SelfInformation",
    "SymmetricKLLoss",
    "WeightDiscrepancyLoss",
    "dropout",
    "AdversarialDropout",
    "adversarial_dropout_loss",
    "adversarial_dropout_mask_for",
    "delta_schedule",
]
