"""UDA methods as one step function each, for ``(N, C)`` and ``(N, C, H, W)`` logits alike.

    from uda_ops import methods
    parts = methods.Parts(g=backbone, c=head, opt=torch.optim.SGD([...], lr=1e-2))
    hp = methods.get("minent").Hyper(lambda_ent=0.1)
    for it in range(iters):
        losses = methods.get("minent").step(parts, hp, xs, ys, xt, it)   # dict of floats

Each module (``source_only``, ``minent``, ``advent``, ``clan``, ``adr``, ``dta``, ``i2i``) holds the method's
losses and update order over :class:`Parts` (feature extractor, head(s), discriminators, optimisers) and a
``Hyper`` dataclass with the paper's defaults. They know nothing of datasets, logging or evaluation. A trainer
with its own flat config declares the fields that set a method's ``Hyper`` with :func:`hyper_fields` or
:func:`with_hyper_fields` (defaults taken from ``Hyper``) and builds the ``Hyper`` with :func:`hyper_from`.
"""
from __future__ import annotations

import importlib

from .base import Parts, hyper_fields, hyper_from, match_grid, with_hyper_fields

NAMES = ("source_only", "minent", "advent", "clan", "adr", "dta", "i2i")


def get(name: str):
    """The method module ``uda_ops.methods.<name>`` (``step``, ``Hyper``)."""
    if name not in NAMES:
        raise ValueError(f"unknown method {name!r}, one of {NAMES}")
    return importlib.import_module(f"{__name__}.{name}")


__all__ = ["NAMES", "Parts", "get", "hyper_fields", "hyper_from", "match_grid", "with_hyper_fields"]
