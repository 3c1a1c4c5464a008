"""DTA (Lee et al. 2019, Eq. 6 / Eq. 12): ``sup + lambda_dta (fDTA + cDTA) + lambda_ent L_E + lambda_vat L_V``
in one update of ``parts.opt``.

* fDTA: channel-wise adversarial dropout on G's output, upper network C, against a reference pass of the
  same target features (random dropout with p ``random_dropout``; the clean pass when 0).
* cDTA (when ``parts.c`` has ``low``/``top`` and ``cdta``): element-wise adversarial dropout on C's hidden
  units, upper network ``c.top``.
* The masks are the only dropout in these passes (C's own dropout layers are off there); the reference is
  the KL's constant target (``detach_reference``). KL terms are divided by C when ``kl_norm="official"``
  (DTA's ``KLDivLoss('mean')``). The adversarial passes leave BatchNorm running statistics untouched.
* L_E: the target entropy, in nats (``entropy_nats``, classification code) or normalised to [0, 1].
* VAT (``lambda_vat > 0``): one power iteration, radius ``vat_eps``, its clean pass on the target alone.
* delta ramps over ``ramp_epochs`` epochs of ``steps_per_epoch`` iterations
  (``uda_ops.dropout.delta_schedule``).
Source and target go through G as one batch (``joint``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

import uda_ops
from uda_ops.dropout import adversarial_dropout_mask_for, delta_schedule, dropout_disabled, frozen_bn_stats

from .base import Parts, floats, apply, zero_grad


@dataclass
class Hyper:
    lambda_dta: float = 2.0
    lambda_ent: float = 0.01
    lambda_vat: float = 0.1
    delta_e: float = 0.1
    delta_c: float = 0.05
    ramp_epochs: int = 80
    steps_per_epoch: int = 1
    vat_eps: float = 3.5
    random_dropout: float = 0.1
    detach_reference: bool = True
    kl_norm: str = "official"     # "official": KL / C; "sum": per-sample KL
    entropy_nats: bool = True     # L_E in nats (log C x normalised entropy)
    cdta: bool = True
    joint: bool = True


def _random_dropout(h: Tensor, p: float) -> Tensor:
    if p == 0:
        return h
    return F.dropout2d(h, p) if h.dim() == 4 else F.dropout(h, p)


def _unit(d: Tensor) -> Tensor:
    return d / d.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, *[1] * (d.dim() - 1))


def vat_loss(logits, x: Tensor, eps: float) -> Tensor:
    """VAT (Miyato et al.): one power iteration for the adversarial direction, radius ``eps``."""
    with torch.no_grad():
        z = logits(x)
    d = (1e-6 * _unit(torch.randn_like(x))).requires_grad_(True)
    (g,) = torch.autograd.grad(uda_ops.kl_div(logits(x + d), z), d)
    return uda_ops.kl_div(logits(x + eps * _unit(g)), z)


def _modules(*objs):
    return [o for o in objs if isinstance(o, torch.nn.Module)]


def step(parts: Parts, hp: Hyper, xs: Tensor, ys: Tensor, xt: Tensor, it: int = 0) -> Dict[str, float]:
    c = parts.c
    epoch = it // max(hp.steps_per_epoch, 1)
    dc, de = (delta_schedule(epoch, hp.ramp_epochs, d) for d in (hp.delta_c, hp.delta_e))
    n = len(xs)
    if hp.joint:
        f = parts.g(torch.cat([xs, xt]))
        z = c(f)
        zs, f_t, z_t = z[:n], f[n:], z[n:]
    else:
        zs = parts.logits(xs)
        f_t = parts.g(xt)
        z_t = c(f_t)
    sup = parts.sup_loss(zs, ys)
    k = z_t.shape[1]
    kl_scale = 1.0 / k if hp.kl_norm == "official" else 1.0
    out = {"ce": sup}
    loss = sup
    with frozen_bn_stats(*_modules(parts.g, c)):
        if hp.lambda_dta:
            with dropout_disabled(*_modules(c)):
                z_f = c(_random_dropout(f_t, hp.random_dropout))
                m_f = adversarial_dropout_mask_for(c, f_t, z_f, delta=dc, mode="channel")
                l_f = kl_scale * uda_ops.kl_div(c(m_f * f_t), z_f, detach_target=hp.detach_reference)
                l_dta = l_f
                out["fdta"] = l_f
                if hp.cdta and callable(getattr(c, "low", None)) and callable(getattr(c, "top", None)):
                    u = c.low(f_t)
                    z_c = c.top(_random_dropout(u, hp.random_dropout))
                    m_c = adversarial_dropout_mask_for(c.top, u, z_c, delta=de, mode="element")
                    l_c = kl_scale * uda_ops.kl_div(c.top(m_c * u), z_c, detach_target=hp.detach_reference)
                    l_dta = l_dta + l_c
                    out["cdta"] = l_c
            loss = loss + hp.lambda_dta * l_dta
        if hp.lambda_vat:
            l_v = kl_scale * vat_loss(parts.logits, xt, hp.vat_eps)
            loss = loss + hp.lambda_vat * l_v
            out["vat"] = l_v
    if hp.lambda_ent:
        l_e = uda_ops.entropy(z_t) * (math.log(k) if hp.entropy_nats else 1.0)
        loss = loss + hp.lambda_ent * l_e
        out["entropy"] = l_e
    zero_grad(parts.opt)
    loss.backward()
    apply(parts, parts.opt)
    out["delta"] = dc
    return floats(out)
