"""The small interface every method step works over (see ``uda_ops.methods``).

A method sees a network as a feature extractor ``g`` and classifier head(s) ``c`` (and ``c2``: ADR's extra
classifier C' or CLAN's second head), optional discriminators, and the optimisers that update them. Logits
may be ``(N, C)`` or ``(N, C, H, W)``: every loss takes the class dimension ``dim=1``; the only
shape-dependent detail (a discriminator's output map resized to the logits' grid) is :func:`match_grid`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = 255
SOURCE_LABEL, TARGET_LABEL = 0.0, 1.0  # domain labels of AdvEnt's / CLAN's discriminators


def cross_entropy(z: Tensor, y: Tensor) -> Tensor:
    """Supervised loss default: cross-entropy, label 255 ignored (segmentation void)."""
    return F.cross_entropy(z, y, ignore_index=IGNORE_INDEX)


@dataclass
class Parts:
    """What a method step needs. ``g``: inputs -> features; ``c``: features -> logits ``(N, C[, H, W])``.

    ``opt`` updates everything the method trains except discriminators (source-only, MinEnt, AdvEnt, CLAN,
    DTA, I2I); ADR uses ``opt_g`` (G) and ``opt_c`` (C and C') instead. ``opt_d`` updates ``discs``
    (one optimiser per discriminator, or one for all). ``sup_loss(logits, labels)`` is the supervised source
    loss. ``modules`` holds extra named modules (I2I's decoders ``dec_s``, ``dec_t`` and critics ``d_z``,
    ``d_s``, ``d_t``).
    """
    g: Callable[[Tensor], Tensor]
    c: Callable[[Tensor], Tensor]
    c2: Optional[Callable[[Tensor], Tensor]] = None
    discs: List[nn.Module] = field(default_factory=list)
    opt: Optional[torch.optim.Optimizer] = None
    opt_g: Optional[torch.optim.Optimizer] = None
    opt_c: Optional[torch.optim.Optimizer] = None
    opt_d: Sequence[torch.optim.Optimizer] = ()
    sup_loss: Callable[[Tensor, Tensor], Tensor] = cross_entropy
    modules: Dict[str, nn.Module] = field(default_factory=dict)
    generator: Optional[torch.Generator] = None  # random numbers of the methods' own sampling (I2I's GP)
    aux: Optional[Callable[[Tensor], Tensor]] = None  # a second-level head on g's output (ADVENT multi-level)
    lambda_sup_aux: float = 0.1                      # weight of the aux head's supervised loss
    sync: Optional[Callable[[torch.optim.Optimizer], None]] = None  # before each optimiser step (e.g. DDP
    #                                                 gradient all-reduce of that optimiser's parameters)

    def logits(self, x: Tensor) -> Tensor:
        return self.c(self.g(x))

    def supervised(self, f, y: Tensor):
        """(main logits, aux logits or None, source loss incl. ``lambda_sup_aux`` x the aux head's) on
        features ``f = g(x)``."""
        z = self.c(f)
        loss = self.sup_loss(z, y)
        za = self.aux(f) if self.aux is not None else None
        if za is not None:
            loss = loss + self.lambda_sup_aux * self.sup_loss(za, y)
        return z, za, loss


def match_grid(d_out: Tensor, z: Tensor) -> Tensor:
    """A discriminator's output on the logits' grid: bilinear resize for ``(N, 1, h, w)`` maps, as is for
    ``(N, 1)`` (classification)."""
    if z.dim() == 4 and d_out.dim() == 4 and d_out.shape[-2:] != z.shape[-2:]:
        return F.interpolate(d_out, size=z.shape[-2:], mode="bilinear", align_corners=False)
    return d_out


def zero_grad(*opts) -> None:
    for o in opts:
        if o is not None:
            o.zero_grad(set_to_none=True)


def apply(parts: Parts, *opts) -> None:
    """``parts.sync(o)`` then ``o.step()`` for each optimiser given."""
    for o in opts:
        if o is not None:
            if parts.sync is not None:
                parts.sync(o)
            o.step()


def requires_grad(modules, flag: bool) -> None:
    for m in modules:
        m.requires_grad_(flag)


def bce(d_out: Tensor, label: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(d_out, torch.full_like(d_out, label))


def floats(d: Dict[str, object]) -> Dict[str, float]:
    return {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in d.items()}


_HYPER_KEY = "uda_ops.methods.hyper"  # a config field's metadata: {method: the Hyper field it sets}


def _hyper_class(method: str):
    from . import get
    return get(method).Hyper


def hyper_fields(spec: Dict[str, Sequence]) -> list:
    """Fields for a trainer's own flat config dataclass (``dataclasses.make_dataclass`` entries
    ``(name, type, field)``), each setting a field of a method's ``Hyper``, declared once and with that
    ``Hyper``'s default (the paper's). ``spec``: ``{method: entries}``, an entry being the ``Hyper`` field's
    name (the config field has the same name), ``(config_name, hyper_name)``, or
    ``(config_name, hyper_name, default)`` for a task's deliberate default. A config name listed under
    several methods is one field setting each of them (its default from the first). :func:`hyper_from`
    reads the declarations back. ::

        Config = make_dataclass("Config", [("steps", int, 1000)]
                                + hyper_fields({"i2i": [("i2i_lambda_z", "lambda_z"), "gp"]}))

    (:func:`with_hyper_fields` makes such a dataclass from a base.)
    """
    decl: Dict[str, list] = {}  # config name -> [type, default, {method: Hyper field}]
    for method, entries in spec.items():
        hyper = {f.name: f for f in dataclasses.fields(_hyper_class(method))}
        for entry in entries:
            name, hname, *default = (entry, entry) if isinstance(entry, str) else entry
            if hname not in hyper or hyper[hname].default is dataclasses.MISSING:
                raise ValueError(f"hyper_fields: uda_ops.methods.{method}.Hyper has no field {hname!r} "
                                 "with a default")
            if name in decl:
                if default:
                    raise ValueError(f"hyper_fields: {name!r} listed again with a default (its first listing "
                                     "gives its default)")
                decl[name][2][method] = hname
            else:
                decl[name] = [hyper[hname].type, default[0] if default else hyper[hname].default, {method: hname}]
    return [(name, typ, dataclasses.field(default=default, metadata={_HYPER_KEY: sets}))
            for name, (typ, default, sets) in decl.items()]


def with_hyper_fields(base: type, spec: Dict[str, Sequence]) -> type:
    """The dataclass ``base`` extended by :func:`hyper_fields` ``(spec)``, to derive a trainer's config from::

        @dataclass
        class Config(with_hyper_fields(RunFields, {"i2i": ["lambda_z", "gp"]})):
            log_every: int = 10
    """
    return dataclasses.make_dataclass(f"{base.__name__}WithHyper", hyper_fields(spec), bases=(base,),
                                      namespace={"__module__": base.__module__})


def hyper_from(cfg, method: str, **fixed):
    """``uda_ops.methods.<method>.Hyper`` from a config dataclass: the value of every field of ``cfg`` that
    :func:`hyper_fields` declared for ``method``, and ``fixed`` (what the trainer computes or sets itself,
    e.g. ``iters``, ``steps_per_epoch``, ``prior``); every other ``Hyper`` field keeps its default."""
    values = {}
    for f in dataclasses.fields(cfg):
        name = f.metadata.get(_HYPER_KEY, {}).get(method)
        if name is not None:
            if name in values:
                raise ValueError(f"hyper_from: two config fields set {method}.Hyper.{name}")
            values[name] = getattr(cfg, f.name)
    clash = set(values) & set(fixed)
    if clash:
        raise ValueError(f"hyper_from: {sorted(clash)} set by config fields and fixed both")
    return _hyper_class(method)(**values, **fixed)
