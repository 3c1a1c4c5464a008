"""I2I Adapt (Murez et al. 2018, Eq. 7). Shared encoder G (``parts.g``), classifier C (``parts.c``), decoders to
the source and target domains (``parts.modules["dec_s"]``, ``["dec_t"]``), WGAN-GP critics on the latent
space (``d_z``) and on each image domain (``d_s``, ``d_t``).

Per iteration: ``n_critic`` critic updates (``parts.opt_d``; encoder and decoders fixed), then one update of
``parts.opt`` (G, C, decoders) on ``lambda_c Q_c + lambda_z Q_z + lambda_tr Q_tr + lambda_id Q_id +
lambda_cyc Q_cyc + lambda_trc Q_trc``: Q_c the source loss; Q_z target features towards the source
(through G for target samples only); Q_tr the translated images towards their domain; Q_id, Q_cyc L1
identity and cycle reconstructions; Q_trc the source loss on source images translated to the target,
detached from the decoder. A zero weight removes its term and its critic: ``lambda_z`` alone is the
ADDA-style feature adversary, ``lambda_id`` alone DRCN-style reconstruction (Table 1). Logits may be
``(N, C)`` or ``(N, C, H, W)`` (``parts.sup_loss`` ignores label 255); critics return one score per sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uda_ops.dropout import frozen_bn_stats

from .base import Parts, floats, apply, zero_grad


@dataclass
class Hyper:
    lambda_c: float = 1.0
    lambda_z: float = 0.05
    lambda_tr: float = 0.02
    lambda_id: float = 0.1
    lambda_cyc: float = 0.1
    lambda_trc: float = 0.1
    gp: float = 10.0
    n_critic: int = 1
    source_pretrain: int = 0      # iterations of source-only warm-up


def gradient_penalty(d: nn.Module, real: Tensor, fake: Tensor, gen=None) -> Tensor:
    """WGAN-GP (Gulrajani et al.): ``E[(||grad D(x_hat)|| - 1)^2]`` on random interpolates."""
    a = torch.rand(real.shape[0], *[1] * (real.dim() - 1), generator=gen, device=real.device)
    x = (a * real + (1 - a) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()


def wgan_critic(d: nn.Module, real: Tensor, fake: Tensor, gp: float, gen=None) -> Tensor:
    return d(fake).mean() - d(real).mean() + gp * gradient_penalty(d, real, fake, gen)


def _modules(*objs):
    return [o for o in objs if isinstance(o, nn.Module)]


def step(parts: Parts, hp: Hyper, xs: Tensor, ys: Tensor, xt: Tensor, it: int = 0) -> Dict[str, float]:
    from . import source_only
    if it < hp.source_pretrain:
        return source_only.step(parts, source_only.Hyper(), xs, ys, xt, it)
    m = parts.modules
    g, c = parts.g, parts.c
    dec_s, dec_t = m.get("dec_s"), m.get("dec_t")
    n = len(xs)
    out = {}
    if hp.lambda_z or hp.lambda_tr:
        for _ in range(hp.n_critic):
            with torch.no_grad(), frozen_bn_stats(*_modules(g, c, dec_s, dec_t)):
                z = g(torch.cat([xs, xt]))
                zs, zt = z[:n], z[n:]
                if hp.lambda_tr:
                    fake_t, fake_s = dec_t(zs), dec_s(zt)
            loss_d = xs.new_zeros(())
            if hp.lambda_z:
                loss_d = loss_d + wgan_critic(m["d_z"], zs, zt, hp.gp, parts.generator)
            if hp.lambda_tr:
                loss_d = (loss_d + wgan_critic(m["d_t"], xt, fake_t, hp.gp, parts.generator)
                          + wgan_critic(m["d_s"], xs, fake_s, hp.gp, parts.generator))
            zero_grad(*parts.opt_d)
            loss_d.backward()
            apply(parts, *parts.opt_d)
        out["critic"] = loss_d
    z = g(torch.cat([xs, xt]))
    zs, zt = z[:n], z[n:]
    q_c = parts.sup_loss(c(z)[:n], ys)
    loss = hp.lambda_c * q_c
    out["ce"] = q_c
    if hp.lambda_z:
        q_z = -m["d_z"](zt).mean()
        loss = loss + hp.lambda_z * q_z
        out["q_z"] = q_z
    if hp.lambda_tr or hp.lambda_cyc or hp.lambda_trc:
        fake_t, fake_s = dec_t(zs), dec_s(zt)
    if hp.lambda_tr:
        q_tr = -m["d_t"](fake_t).mean() - m["d_s"](fake_s).mean()
        loss = loss + hp.lambda_tr * q_tr
        out["q_tr"] = q_tr
    if hp.lambda_id:
        q_id = F.l1_loss(dec_s(zs), xs) + F.l1_loss(dec_t(zt), xt)
        loss = loss + hp.lambda_id * q_id
        out["q_id"] = q_id
    if hp.lambda_cyc:
        q_cyc = F.l1_loss(dec_s(g(fake_t)), xs) + F.l1_loss(dec_t(g(fake_s)), xt)
        loss = loss + hp.lambda_cyc * q_cyc
        out["q_cyc"] = q_cyc
    if hp.lambda_trc:
        q_trc = parts.sup_loss(parts.logits(fake_t.detach()), ys)
        loss = loss + hp.lambda_trc * q_trc
        out["q_trc"] = q_trc
    zero_grad(parts.opt)
    loss.backward()
    apply(parts, parts.opt)
    return floats(out)
