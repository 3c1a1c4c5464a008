"""MinEnt (ADVENT, Vu et al. 2019, Eq. 4): source supervision + ``lambda_ent`` x the target's normalised
entropy, in one update of ``parts.opt``. Options (ADVENT Sec. 4.3): ``entropy_ranking > 0`` minimises only
the top ``entropy_ranking`` ratio of highest-entropy pixels (per sample; the paper uses 0.3);
``class_prior_mu > 0`` adds ``lambda_cp`` x the class-ratio prior loss (Eq. 10, ``mu = 0.5`` in the paper)
against ``hp.prior`` (the source label histogram, ``(C,)``). Same code for ``(N, C)`` and ``(N, C, H, W)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from torch import Tensor

import uda_ops

from .base import Parts, floats, apply, zero_grad


@dataclass
class Hyper:
    lambda_ent: float = 1e-3       # ADVENT's MinEnt weight
    entropy_ranking: float = 0.0   # > 0: ratio of pixels kept by the ranking (paper 0.3)
    class_prior_mu: float = 0.0    # > 0: class-ratio prior (paper 0.5)
    lambda_cp: float = 1e-3
    prior: Optional[Tensor] = None
    lambda_ent_aux: float = 2e-4   # on ``parts.aux``'s logits, when there is an aux head


def entropy_term(z: Tensor, hp: Hyper) -> Tensor:
    if hp.entropy_ranking > 0:
        return uda_ops.entropy_ranking_loss(z, ratio=hp.entropy_ranking)
    return uda_ops.entropy(z)


def step(parts: Parts, hp: Hyper, xs: Tensor, ys: Tensor, xt: Tensor, it: int = 0) -> Dict[str, float]:
    zero_grad(parts.opt)
    _, _, seg = parts.supervised(parts.g(xs), ys)
    seg.backward()
    ft = parts.g(xt)
    zt = parts.c(ft)
    ent = entropy_term(zt, hp)
    loss_t = hp.lambda_ent * ent
    if parts.aux is not None:
        loss_t = loss_t + hp.lambda_ent_aux * entropy_term(parts.aux(ft), hp)
    out = {"ce": seg, "ent": ent}
    if hp.class_prior_mu > 0:
        if hp.prior is None:
            raise ValueError("minent: class_prior_mu > 0 needs hp.prior (the source class histogram)")
        cp = uda_ops.class_ratio_prior_loss(zt, hp.prior.to(zt.device), mu=hp.class_prior_mu)
        loss_t = loss_t + hp.lambda_cp * cp
        out["cp"] = cp
    loss_t.backward()
    apply(parts, parts.opt)
    return floats(out)
