"""AdvEnt (ADVENT, Vu et al. 2019, Eqs. 8-9). Per iteration: (1) segmenter/classifier update with the source
loss and ``lambda_adv`` x BCE(D(I_t), source) on the target's weighted self-information map ``I``
(discriminators frozen); (2) discriminator update on detached maps, source -> 0, target -> 1. ``discs[0]``
judges ``parts.c``'s logits. Works on ``(N, C)`` (a D taking ``(N, C)``) and ``(N, C, H, W)`` (a
fully-convolutional D).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
from torch import Tensor

import uda_ops

from .base import SOURCE_LABEL, TARGET_LABEL, Parts, bce, floats, requires_grad, apply, zero_grad


@dataclass
class Hyper:
    lambda_adv: float = 1e-3
    lambda_adv_aux: float = 2e-4   # multi-level: ``discs[1]`` judges ``parts.aux``'s logits


def step(parts: Parts, hp: Hyper, xs: Tensor, ys: Tensor, xt: Tensor, it: int = 0) -> Dict[str, float]:
    opt_d = list(parts.opt_d)
    zero_grad(parts.opt, *opt_d)
    requires_grad(parts.discs, False)
    zs, zs_aux, ce = parts.supervised(parts.g(xs), ys)
    ce.backward()
    ft = parts.g(xt)
    levels_t = [(parts.c(ft), hp.lambda_adv)]
    levels_s = [zs]
    if parts.aux is not None and len(parts.discs) > 1:
        levels_t.append((parts.aux(ft), hp.lambda_adv_aux))
        levels_s.append(zs_aux)
    adv, adv_total = None, 0.0
    for d, (zt, lam) in zip(parts.discs, levels_t):
        a = bce(d(uda_ops.self_information(zt)), SOURCE_LABEL)
        adv = a if adv is None else adv
        adv_total = adv_total + lam * a
    adv_total.backward()
    apply(parts, parts.opt)
    requires_grad(parts.discs, True)
    ld = 0.0
    for d, zs_l, (zt, _) in zip(parts.discs, levels_s, levels_t):
        inp = torch.cat([uda_ops.self_information(zs_l.detach()), uda_ops.self_information(zt.detach())])
        out = d(inp)
        n = len(zs_l)
        lab = torch.cat([torch.full_like(out[:n], SOURCE_LABEL), torch.full_like(out[n:], TARGET_LABEL)])
        loss_d = torch.nn.functional.binary_cross_entropy_with_logits(out, lab)
        loss_d.backward()
        ld = ld + loss_d
    apply(parts, *opt_d)
    return floats({"ce": ce, "adv": adv, "d": ld})
