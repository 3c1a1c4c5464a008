"""DTA's adversarial dropout as reusable pieces (SPEC section 4; DTA Eqs. 3-5, App. A-B).

The procedure, for an activation ``h`` feeding an "upper network" ``upper`` (any callable from ``h`` to
logits ``(N, K, *)``) and the logits ``z`` of a reference pass (DTA: the pass with a random dropout mask):

1. **Jacobian pass**: a mask ``m`` (ones, or the 0/1 ``base_mask``) is applied to ``sg(h)``;
   ``D = uda_ops.kl_div(upper(m * sg(h)), sg(z))`` and ``J = dD/dm`` (``torch.autograd.grad``; runs under
   ``torch.enable_grad()`` so callers may sit inside ``torch.no_grad``). Channel mode on a ``(N, C, *)``
   activation takes ``g = dD/d(m * h)`` only and lets the fused op reduce ``s_nc = sum_hw g h``, so the
   ``(N, C)`` Jacobian is never materialised by autograd.
2. **Mask search**: the fused ``uda_ops.adversarial_dropout_mask`` / ``channel_adversarial_dropout_mask``
   flips at most ``int(U * delta)`` units that increase ``D`` most, to first order.
3. **Rescaled mask**: ``m_adv * U / sum(m_adv)`` per row, shaped to multiply ``h``
   (channel: ``(N, C, 1, ..., 1)``; element: ``h.shape``), without gradient.
4. **Loss pass** (the caller's): ``lambda * uda_ops.kl_div(upper(m_adv * h), z)``;
   :func:`adversarial_dropout_loss` does it in one call.
5. **Ramp-up**: ``delta(t) = min(1, (t + 1) / R) * delta_max`` per epoch (:func:`delta_schedule`).

BatchNorm: if ``upper`` holds BatchNorm layers in train mode, the Jacobian pass is an extra forward pass
that would update their running statistics (and ``num_batches_tracked``). By default (``freeze_bn=True``)
the BatchNorm modules of ``upper`` (when ``upper`` is an ``nn.Module`` or a bound method of one) run the
pass with momentum 0, so their running statistics stay bitwise as they were, and ``num_batches_tracked``
is restored: only the caller's own passes update them. The pass itself normalises with the batch
statistics (train mode), as the loss pass will. Pass ``freeze_bn=<module>`` when ``upper`` is a plain
function closing over a module, or ``freeze_bn=False`` to let the pass update the statistics.
:func:`frozen_bn_stats` is the same guard as a context manager, for the caller's other auxiliary passes.

Dropout: the masks should be the only difference between the reference, Jacobian and loss passes. If
``upper`` holds dropout layers of its own, run those passes under :func:`dropout_disabled` (each pass
would otherwise draw fresh random masks there, which drown the adversarial flips).

Example::

    import torch, uda_ops
    from torch import nn
    from uda_ops.dropout import AdversarialDropout, adversarial_dropout_mask_for, delta_schedule

    feat = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU())
    head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 6 * 6, 10))
    x = torch.randn(8, 3, 8, 8)
    h = feat(x)
    z = head(nn.functional.dropout(h, 0.1))                # reference pass (random dropout)
    mask = adversarial_dropout_mask_for(head, h, z, delta=0.125, mode="channel")  # (8, 16, 1, 1): 2 of 16 dropped
    loss = 2.0 * uda_ops.kl_div(head(mask * h), z.detach())

    cadd = AdversarialDropout(mode="channel", delta_max=0.125, ramp_epochs=10)
    cadd.set_epoch(9)                                     # delta = delta_schedule(9, 10, 0.125) = 0.125
    loss = uda_ops.kl_div(head(cadd(h, head, z)), z.detach())
"""
from __future__ import annotations

import contextlib
from typing import Callable, List, Optional, Union

import torch
from torch import Tensor, nn

from . import functional as F

__all__ = [
    "delta_schedule",
    "adversarial_dropout_mask_for",
    "adversarial_dropout_loss",
    "frozen_bn_stats",
    "dropout_disabled",
    "AdversarialDropout",
]

MODES = ("channel", "element")


def delta_schedule(epoch: int, ramp_epochs: int, delta_max: float) -> float:
    """DTA App. B ramp-up: ``min(1, (epoch + 1) / ramp_epochs) * delta_max`` (``ramp_epochs <= 0``:
    ``delta_max`` from the start)."""
    if ramp_epochs <= 0:
        return float(delta_max)
    return min(1.0, (epoch + 1) / ramp_epochs) * float(delta_max)


def _modules_of(owner, kind) -> List[nn.Module]:
    """The submodules of type ``kind`` of ``owner``: a module, a bound method of one (e.g.
    ``net.head_forward``), or a list/tuple of those; anything else has none."""
    if isinstance(owner, (list, tuple)):
        return [m for o in owner for m in _modules_of(o, kind)]
    if not isinstance(owner, nn.Module):
        owner = getattr(owner, "__self__", None)  # a bound method's module
    if not isinstance(owner, nn.Module):
        return []
    return [m for m in owner.modules() if isinstance(m, kind)]


def _unique(owners, kind) -> List[nn.Module]:
    return list({id(m): m for o in owners for m in _modules_of(o, kind)}.values())


@contextlib.contextmanager
def frozen_bn_stats(*owners):
    """Within the block, BatchNorm layers of ``owners`` (modules, bound methods, lists of them) run as they
    are (train mode: batch statistics) but leave their running statistics as they were: their momentum is
    0 inside the block (so the kernel's own update keeps ``running = running`` exactly, without touching
    tensors autograd may have saved) and ``num_batches_tracked`` is restored on exit."""
    saved = []
    for m in _unique(owners, nn.modules.batchnorm._BatchNorm):
        if not m.track_running_stats:
            continue
        nbt = None if m.num_batches_tracked is None else m.num_batches_tracked.item()
        saved.append((m, m.momentum, nbt))
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, nbt in saved:
            m.momentum = momentum
            if nbt is not None:
                m.num_batches_tracked.fill_(nbt)


@contextlib.contextmanager
def dropout_disabled(*owners):
    """Within the block, the dropout layers (``nn.Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``, ...) of
    ``owners`` (modules, bound methods, lists of them) pass their input through unchanged: their
    ``training`` flag is False inside the block and restored on exit; nothing else changes (BatchNorm
    stays in train mode). Dropout called functionally inside a ``forward`` is not affected.

    DTA compares the upper network under two masks at one layer, a random one and the adversarial one
    (Eqs. 9-10): the masks should be the only difference between the reference, Jacobian and loss passes.
    If ``upper`` has dropout layers of its own, each pass draws fresh masks from them too, the Jacobian
    is that of a randomly thinned network, and the consistency term mostly teaches invariance to that
    noise. Run the DTA passes under ``dropout_disabled(upper)``, with the random reference mask applied
    explicitly (e.g. ``F.dropout2d(h, p)``)."""
    saved = [(m, m.training) for m in _unique(owners, nn.modules.dropout._DropoutNd)]
    for m, _ in saved:
        m.training = False
    try:
        yield
    finally:
        for m, training in saved:
            m.training = training


def adversarial_dropout_mask_for(upper: Callable[[Tensor], Tensor], h: Tensor, target_logits: Tensor, *,
                                 delta: Optional[float] = None, max_flips: Optional[int] = None,
                                 mode: str = "channel", base_mask: Optional[Tensor] = None,
                                 rescale: bool = True, freeze_bn: Union[bool, nn.Module] = True) -> Tensor:
    """The adversarial dropout mask for activation ``h`` of the upper network ``upper`` (SPEC section 4).

    ``D = kl_div(upper(m * sg(h)), sg(target_logits))`` at ``m = base_mask`` (default ones); the fused mask
    search flips at most ``max_flips`` (or ``int(U * delta)``) units per sample that increase ``D``.
    ``mode="channel"``: one unit per channel of ``h (N, C, *)``, mask ``(N, C)`` (``base_mask`` too),
    returned as ``(N, C, 1, ..., 1)``. ``mode="element"``: one unit per element, ``U = h[0].numel()``, mask
    (and ``base_mask``) of ``h.shape`` or ``(N, U)``, returned as ``h.shape``. The mask is rescaled to
    ``U / sum(m)`` per row unless ``rescale=False``, has ``h``'s dtype and no gradient. Works inside
    ``torch.no_grad``. ``freeze_bn``: see the module docstring.
    """
    op = "adversarial_dropout_mask_for"
    if mode not in MODES:
        raise ValueError(f"{op}: `mode` must be one of {MODES}, got {mode!r}")
    if not isinstance(h, Tensor) or not isinstance(target_logits, Tensor):
        raise TypeError(f"{op}: `h` and `target_logits` must be tensors")
    if h.dim() < 2:
        raise ValueError(f"{op}: `h` must have shape (N, C, *), got {tuple(h.shape)}")
    if target_logits.shape[0] != h.shape[0]:
        raise ValueError(f"{op}: `h` and `target_logits` must have the same batch size, got "
                         f"{h.shape[0]} and {target_logits.shape[0]}")
    if (delta is None) == (max_flips is None):
        raise ValueError(f"{op}: give exactly one of `delta` and `max_flips`")
    n, c = h.shape[0], h.shape[1]
    hd = h.detach()
    target = target_logits.detach()
    bn_owner = upper if freeze_bn is True else (freeze_bn or None)

    if mode == "channel":
        units_shape = (n, c)
        m0 = None
        if base_mask is not None:
            m0 = base_mask.detach().reshape(n, c).to(hd.dtype)
    else:
        units_shape = (n, hd[0].numel())
        m0 = None
        if base_mask is not None:
            m0 = base_mask.detach().reshape(units_shape).to(hd.dtype)

    with torch.enable_grad(), frozen_bn_stats(bn_owner):
        if mode == "channel" and hd.dim() > 2:
            # g = dD/d(m h) at m = m0; the fused op reduces s_nc = sum_hw g h (= dD/dm_nc).
            view = (n, c) + (1,) * (hd.dim() - 2)
            x = (hd if m0 is None else hd * m0.reshape(view)).clone().requires_grad_(True)
            div = F.kl_div(upper(x), target)
            (g,) = torch.autograd.grad(div, x)
            mask = F.channel_adversarial_dropout_mask(g, hd, delta=delta, max_flips=max_flips,
                                                      base_mask=m0, rescale=rescale)
            return mask.reshape(view).to(h.dtype)
        m = (torch.ones(units_shape, dtype=hd.dtype, device=hd.device) if m0 is None
             else m0.clone()).requires_grad_(True)
        div = F.kl_div(upper(m.reshape(hd.shape) * hd), target)
        (jac,) = torch.autograd.grad(div, m)
        mask = F.adversarial_dropout_mask(jac, delta=delta, max_flips=max_flips, base_mask=m0,
                                          rescale=rescale)
    return mask.reshape(h.shape if mode == "element" else units_shape).to(h.dtype)


def adversarial_dropout_loss(upper: Callable[[Tensor], Tensor], h: Tensor, target_logits: Tensor, *,
                             delta: Optional[float] = None, max_flips: Optional[int] = None,
                             mode: str = "channel", base_mask: Optional[Tensor] = None,
                             detach_target: bool = False, freeze_bn: Union[bool, nn.Module] = True) -> Tensor:
    """DTA's consistency term ``kl_div(upper(m_adv * h), target_logits)`` (Eqs. 9-10; SPEC section 4's loss
    pass), mean over samples. Gradient flows into ``upper``, ``h`` and, unless ``detach_target``,
    ``target_logits``."""
    mask = adversarial_dropout_mask_for(upper, h, target_logits, delta=delta, max_flips=max_flips, mode=mode,
                                        base_mask=base_mask, freeze_bn=freeze_bn)
    return F.kl_div(upper(h * mask), target_logits, detach_target=detach_target)


class AdversarialDropout(nn.Module):
    """Adversarial dropout layer (DTA's CAdD for ``mode="channel"``, EAdD for ``mode="element"``).

    ``forward(h, upper, target_logits)`` returns ``h * mask`` with the mask of
    :func:`adversarial_dropout_mask_for` (gradient flows into ``h``, not through the mask). In eval mode,
    or when the budget is zero, it returns ``h``. ``delta`` is used as is; or give ``delta_max`` and
    ``ramp_epochs`` and call :meth:`set_epoch` once per epoch for DTA's ramp-up.
    """

    def __init__(self, mode: str = "channel", delta: Optional[float] = None, max_flips: Optional[int] = None,
                 delta_max: Optional[float] = None, ramp_epochs: int = 0, rescale: bool = True,
                 freeze_bn: bool = True):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"AdversarialDropout: `mode` must be one of {MODES}, got {mode!r}")
        given = [name for name, v in (("delta", delta), ("max_flips", max_flips), ("delta_max", delta_max))
                 if v is not None]
        if not given:
            raise ValueError("AdversarialDropout: give `delta`, `max_flips` or `delta_max`")
        if len(given) > 1:
            raise ValueError(f"AdversarialDropout: give exactly one of `delta`, `max_flips` and `delta_max`, "
                             f"got {', '.join(given)}")
        if delta_max is not None:
            delta = delta_schedule(0, ramp_epochs, delta_max)
        self.mode, self.delta, self.max_flips = mode, delta, max_flips
        self.delta_max, self.ramp_epochs, self.rescale, self.freeze_bn = delta_max, ramp_epochs, rescale, freeze_bn

    def set_epoch(self, epoch: int) -> float:
        """Sets ``delta = delta_schedule(epoch, ramp_epochs, delta_max)`` and returns it."""
        if self.delta_max is None:
            raise ValueError("AdversarialDropout.set_epoch needs `delta_max`")
        self.delta = delta_schedule(epoch, self.ramp_epochs, self.delta_max)
        return self.delta

    def mask(self, h: Tensor, upper: Callable[[Tensor], Tensor], target_logits: Tensor,
             base_mask: Optional[Tensor] = None) -> Tensor:
        return adversarial_dropout_mask_for(upper, h, target_logits, delta=self.delta, max_flips=self.max_flips,
                                            mode=self.mode, base_mask=base_mask, rescale=self.rescale,
                                            freeze_bn=self.freeze_bn)

    def forward(self, h: Tensor, upper: Callable[[Tensor], Tensor], target_logits: Tensor,
                base_mask: Optional[Tensor] = None) -> Tensor:
        if not self.training:
            return h
        if base_mask is None and (self.max_flips == 0 or (self.max_flips is None and not self.delta)):
            return h
        return h * self.mask(h, upper, target_logits, base_mask)

    def extra_repr(self) -> str:
        return (f"mode={self.mode!r}, delta={self.delta}, max_flips={self.max_flips}, "
                f"delta_max={self.delta_max}, ramp_epochs={self.ramp_epochs}")
