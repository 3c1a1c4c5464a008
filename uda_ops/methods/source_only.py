"""Source-only: the supervised loss on labelled source batches; the target batch is unused."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from torch import Tensor

from .base import Parts, floats, apply, zero_grad


@dataclass
class Hyper:
    pass


def step(parts: Parts, hp: Hyper, xs: Tensor, ys: Tensor, xt: Tensor, it: int = 0) -> Dict[str, float]:
    _, _, loss = parts.supervised(parts.g(xs), ys)
    zero_grad(parts.opt)
    loss.backward()
    apply(parts, parts.opt)
    return floats({"ce": loss})
