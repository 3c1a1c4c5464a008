"""Triton kernels of uda_ops, registered as torch custom ops under ``torch.ops.uda_ops_triton`` with the same
schemas and semantics as ``torch.ops.uda_ops`` (see csrc/uda_ops.cpp): forward ops return the per-pixel map
(N, *) in float32 (float64 for float64 input), or, for sym_kl, kl_div, entropy and clan_adversarial with a
trailing reduction = 1 ("mean") / 2 ("sum"), its sum fused into the forward kernel as a 0-d tensor; backward
ops take the map gradient and recompute from the inputs. Imported lazily by ``uda_ops._ops`` (only when the
triton backend is used); on CPU tensors the kernels run only under TRITON_INTERPRET=1 (set before triton is
first imported).
"""
import triton as _triton

from . import (  # noqa: F401  (each module registers its ops)
    adversarial_dropout_mask,
    clan_adversarial,
    cosine_discrepancy,
    entropy,
    kl_div,
    self_information,
    sym_kl,
)
# EAGER: the ops as plain eager callables, attribute per op like torch.ops.uda_ops_triton (uda_ops._ops.kernels uses
# it for plain eager calls): same signatures and results, no dispatcher round trips.
from ._common import EAGER, INTERPRET

TRITON_VERSION = _triton.__version__

__all__ = ["EAGER", "INTERPRET", "TRITON_VERSION"]
