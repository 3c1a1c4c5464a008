"""CLAN (Luo et al. 2019, Eqs. 4-6). Two classifier heads ``c`` and ``c2`` on the shared features; the
prediction is their sum. Per iteration: (1) source loss on the ensemble + ``lambda_weight`` x the heads'
weight discrepancy (Eq. 4); (2) target: the self-adaptive adversarial loss (Eq. 5, ``epsilon + lambda_local
* M`` with M the heads' cosine discrepancy) pushing D's output on the target's softmax towards "source",
times ``lambda_adv`` (damped by ``1 - it/iters`` when ``damping``); during the first ``preheat`` fraction of
``iters`` the loss is the plain, unweighted BCE; (3) D: source -> 0 plain, target -> 1 weighted by the
detached discrepancy, averaged. D's output map is resized to the logits' grid (segmentation) or used as is
``(N, 1)`` (classification).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

import uda_ops

from .base import SOURCE_LABEL, TARGET_LABEL, Parts, floats, match_grid, requires_grad, apply, zero_grad


@dataclass
class Hyper:
    lambda_adv: float = 1e-3
    lambda_weight: float = 0.01
    lambda_local: float = 40.0
    epsilon: float = 0.4
    preheat: float = 0.0           # fraction of ``iters`` with the plain adversarial loss
    damping: bool = True           # lambda_adv * (1 - it / iters)
    iters: int = 1


def _params(m):
    return m.parameters() if hasattr(m, "parameters") else m


def step(parts: Parts, hp: Hyper, xs: Tensor, ys: Tensor, xt: Tensor, it: int = 0) -> Dict[str, float]:
    if parts.c2 is None:
        raise ValueError("clan: needs the second head as parts.c2")
    d, opt_d = parts.discs[0], list(parts.opt_d)
    zero_grad(parts.opt, *opt_d)
    requires_grad(parts.discs, False)
    heated = it >= hp.preheat * hp.iters
    damping = (1 - it / max(hp.iters, 1)) if hp.damping else 1.0
    lam_l, eps = (hp.lambda_local, hp.epsilon) if heated else (0.0, 1.0)
    fs = parts.g(xs)
    hs = (parts.c(fs), parts.c2(fs))
    ce = parts.sup_loss(hs[0] + hs[1], ys)
    wd = uda_ops.weight_discrepancy_loss(_params(parts.c), _params(parts.c2))
    (ce + hp.lambda_weight * wd).backward()
    ft = parts.g(xt)
    z1, z2 = parts.c(ft), parts.c2(ft)
    d_t = match_grid(d(F.softmax(z1 + z2, 1)), z1)
    adv = uda_ops.clan_adversarial_loss(d_t, z1, z2, target=SOURCE_LABEL, lambda_local=lam_l, epsilon=eps)
    (hp.lambda_adv * damping * adv).backward()
    apply(parts, parts.opt)
    requires_grad(parts.discs, True)
    inp = torch.cat([F.softmax((hs[0] + hs[1]).detach(), 1), F.softmax((z1 + z2).detach(), 1)])
    dout = match_grid(d(inp), z1)
    n = len(xs)
    ld_s = uda_ops.clan_adversarial_loss(dout[:n], *(h.detach() for h in hs), target=SOURCE_LABEL,
                                         lambda_local=0.0, epsilon=1.0)
    ld_t = uda_ops.clan_adversarial_loss(dout[n:], z1.detach(), z2.detach(), target=TARGET_LABEL,
                                         lambda_local=lam_l, epsilon=eps, detach_weight=True)
    ld = 0.5 * (ld_s + ld_t)
    ld.backward()
    apply(parts, *opt_d)
    return floats({"ce": ce, "adv": adv, "weight": wd, "d": ld})
