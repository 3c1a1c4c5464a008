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

from .base import SOURCE_LABEL, TARGET_LABEL, Parts, bce, floats, requires_grad, step as _opt_step, zero_grad


@dataclass
class Hyper:
    lambda_adv: float = 1e-3


def step(parts: Parts, hp: Hyper, xs: Tensor, ys: Tensor, xt: Tensor, it: int = 0) -> Dict[str, float]:
    d, opt_d = parts.discs[0], list(parts.opt_d)
    zero_grad(parts.opt, *opt_d)
    requires_grad(parts.discs, False)
    zs = parts.logits(xs)
    ce = parts.sup_loss(zs, ys)
    ce.backward()
    zt = parts.logits(xt)
    adv = bce(d(uda_ops.self_information(zt)), SOURCE_LABEL)
    (hp.lambda_adv * adv).backward()
    _opt_step(parts.opt)
    requires_grad(parts.discs, True)
    inp = torch.cat([uda_ops.self_information(zs.detach()), uda_ops.self_information(zt.detach())])
    out = d(inp)
    n = len(zs)
    lab = torch.cat([torch.full_like(out[:n], SOURCE_LABEL), torch.full_like(out[n:], TARGET_LABEL)])
    loss_d = torch.nn.functional.binary_cross_entropy_with_logits(out, lab)
    loss_d.backward()
    _opt_step(*opt_d)
    return floats({"ce": ce, "adv": adv, "d": loss_d})
