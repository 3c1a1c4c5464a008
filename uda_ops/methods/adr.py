"""ADR (Saito et al. 2018, Sec. 3.2-3.3). C (``parts.c``) contains dropout; C' (``parts.c2``, optional) is a
classifier trained on detached features that a model may predict with. Per iteration:

1. G, C (``opt_g``, ``opt_c``) minimise the source loss; C' minimises it on detached features (``opt_c``
   must hold C' too).
2. C alone (G fixed) keeps the source loss and maximises the dropout sensitivity on the target:
   ``sup - sens(C(G(xt)), C(G(xt)))`` over two dropout passes.
3. ``n_gen`` times, G alone minimises the sensitivity + ``lambda_balance`` x the class-balance term of
   Eq. 5 (the negative entropy of the batch's mean prediction).

Sensitivity (``divergence``): ``"official"`` is the ADR code's bounded variant, ``sym_kl`` of the two
softmaxes divided by C; ``"l1"`` the ADR segmentation code's default, the mean absolute difference of the two
softmaxes (bounded too); ``"exact"`` is ``sym_kl`` of the logits (unbounded: C can raise it without limit by
growing its logits, and G's ``n_gen`` steps against it then dominate G's updates). Source and target go through G as one batch
(``joint=True``) so that BatchNorm sees in training what it sees at evaluation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict

import torch
from torch import Tensor

import uda_ops

from .base import Parts, floats, apply, zero_grad


@dataclass
class Hyper:
    n_gen: int = 4
    lambda_balance: float = 1.0
    divergence: str = "official"   # or "l1", "exact"
    joint: bool = True
    detach_targets: bool = False   # "exact": each KL's target distribution held constant


def sensitivity(z1: Tensor, z2: Tensor, divergence: str = "official", detach_targets: bool = False) -> Tensor:
    if divergence == "l1":
        return (torch.softmax(z1, 1) - torch.softmax(z2, 1)).abs().mean()
    if divergence == "official":
        return uda_ops.sym_kl(torch.softmax(z1, 1), torch.softmax(z2, 1)) / z1.shape[1]
    return uda_ops.sym_kl(z1, z2, detach_targets=detach_targets)


def balance(z: Tensor) -> Tensor:
    """Eq. 5's class-balance term: ``-H(mean_x p(y|x))`` (normalised), over every sample and pixel."""
    logp = torch.log_softmax(z, 1).movedim(1, -1).reshape(-1, z.shape[1])
    log_marginal = torch.logsumexp(logp, 0, keepdim=True) - math.log(len(logp))
    return -uda_ops.entropy(log_marginal)


def _features(parts: Parts, hp: Hyper, xs: Tensor, xt: Tensor):
    if hp.joint:
        f = parts.g(torch.cat([xs, xt]))
        return f[:len(xs)], f[len(xs):]
    return parts.g(xs), parts.g(xt)


def step(parts: Parts, hp: Hyper, xs: Tensor, ys: Tensor, xt: Tensor, it: int = 0) -> Dict[str, float]:
    # 1: G, C (and C' on detached features) on the source
    f_s, _ = _features(parts, hp, xs, xt)
    ce = parts.sup_loss(parts.c(f_s), ys)
    out = {"ce": ce}
    loss = ce
    if parts.c2 is not None:
        ce2 = parts.sup_loss(parts.c2(f_s.detach()), ys)
        loss = loss + ce2
        out["ce_c2"] = ce2
    zero_grad(parts.opt_g, parts.opt_c)
    loss.backward()
    apply(parts, parts.opt_g, parts.opt_c)
    # 2: C as critic, G fixed
    with torch.no_grad():
        f_s, f_t = _features(parts, hp, xs, xt)
    if hp.joint:
        z1, z2 = parts.c(torch.cat([f_s, f_t])), parts.c(torch.cat([f_s, f_t]))
        zs, z1, z2 = z1[:len(xs)], z1[len(xs):], z2[len(xs):]
    else:
        zs, z1, z2 = parts.c(f_s), parts.c(f_t), parts.c(f_t)
    sens_c = sensitivity(z1, z2, hp.divergence, hp.detach_targets)
    zero_grad(parts.opt_c)
    (parts.sup_loss(zs, ys) - sens_c).backward()
    apply(parts, parts.opt_c)
    # 3: G, n_gen times
    n = len(xs)
    for _ in range(hp.n_gen):
        if hp.joint:  # C over the joint batch (its dropout masks drawn for the whole batch), target rows
            f = parts.g(torch.cat([xs, xt]))
            z1, z2 = parts.c(f)[n:], parts.c(f)[n:]
        else:
            f_t = parts.g(xt)
            z1, z2 = parts.c(f_t), parts.c(f_t)
        sens_g = sensitivity(z1, z2, hp.divergence, hp.detach_targets)
        loss_g = sens_g
        if hp.lambda_balance:
            bal = balance(z1)
            loss_g = loss_g + hp.lambda_balance * bal
            out["balance"] = bal
        zero_grad(parts.opt_g)
        loss_g.backward()
        apply(parts, parts.opt_g)
    zero_grad(parts.opt_c)  # step 3's backward reached C's gradients; they are not applied
    out.update(sensitivity_critic=sens_c)
    if hp.n_gen:
        out["sensitivity_gen"] = sens_g
    return floats(out)
