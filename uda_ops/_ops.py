"""Custom-op glue: loads uda_ops._C (which defines torch.ops.uda_ops.*), registers their fake kernels and
autograd formulas, and decides per call whether the compiled kernels or the eager reference run.

Backends, chosen with ``uda_ops.set_backend(name)`` or the environment variable ``UDA_OPS_BACKEND``:
  "auto"      CPU tensors: the compiled C++ kernel (else the reference). CUDA tensors: per op and dtype the faster
              of the compiled CUDA kernel and the Triton kernel, from the measured table ``AUTO_CUDA`` below
              (default: the CUDA kernel when compiled, else Triton when importable, else the reference).
              Under a torch.func transform (grad, vmap, ...): the reference.
  "native"    compiled C++/CUDA kernels only: an error where none exists.
  "triton"    the Triton kernels (``uda_ops.triton``, ops ``torch.ops.uda_ops_triton.*``) on CUDA tensors; on
              CPU tensors only under TRITON_INTERPRET=1 (testing), else a clear error.
  "reference" eager PyTorch everywhere.
Triton is imported lazily, the first time a Triton kernel is chosen: ``import uda_ops`` never imports it. The
compiled ops' autograd kernels are C++ (csrc/autograd.cpp); plain eager calls of the Triton backend skip the
dispatcher's Python round trips through ``uda_ops.triton.EAGER`` (an autograd.Function per op over the same kernels
and backward formulas).
``kernels(op, x)`` gives the op namespace that runs `op` on `x` (None: the eager reference).
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import warnings
from types import SimpleNamespace
from typing import Any, Dict, Optional

import torch
from torch import Tensor

BACKENDS = ("auto", "native", "triton", "reference")
OPS = ("sym_kl", "kl_div", "entropy", "self_information", "cosine_discrepancy", "clan_adversarial",
       "adversarial_dropout_mask", "channel_adversarial_dropout_mask")

_C = None
_C_ERROR: Optional[str] = None
if os.environ.get("UDA_OPS_DISABLE_EXTENSION", "") not in ("", "0"):
    _C_ERROR = "disabled by UDA_OPS_DISABLE_EXTENSION"
elif os.environ.get("UDA_OPS_EXTENSION"):  # a build elsewhere (`make sanitize`: build/sanitize/_C*.so): it or fail
    _spec = importlib.util.spec_from_file_location(f"{__package__}._C", os.environ["UDA_OPS_EXTENSION"])
    _C = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_C)
else:
    try:
        from . import _C  # noqa: F401  (registers torch.ops.uda_ops.*)
    except ImportError as exc:  # not built, or built against another torch
        _C_ERROR = f"{type(exc).__name__}: {exc}"
if _C is None:
    warnings.warn(f"uda_ops: compiled extension not available ({_C_ERROR}); every op runs through the "
                  "eager PyTorch reference. Build it with `pip install -e . --no-build-isolation`.",
                  RuntimeWarning, stacklevel=2)


def _check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"uda_ops: backend must be one of {BACKENDS}, got {name!r}")
    return name


_backend = _check_backend(os.environ.get("UDA_OPS_BACKEND", "auto") or "auto")


def set_backend(name: str) -> None:
    """Select the backend for every op: "auto", "native", "triton" or "reference"."""
    global _backend
    _check_backend(name)
    if name == "triton":
        _load_triton()  # fail here, not at the first call, when triton is missing
    _backend = name


def get_backend() -> str:
    return _backend


def _kernel_table() -> Dict[tuple, bool]:
    """(op, device type) -> whether the extension registered a kernel; computed once, at import, so
    that the per-call lookup is a plain dict access that torch.compile traces without a graph break."""
    table = {}
    for op in OPS:
        for dev, key in (("cpu", "CPU"), ("cuda", "CUDA")):
            table[(op, dev)] = _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
                f"uda_ops::{op}", key)
    return table


_KERNELS = _kernel_table()


def has_kernel(op: str, device_type: str) -> bool:
    """True when the compiled extension has a kernel for `op` on `device_type` ("cpu", "cuda")."""
    return _KERNELS.get((op, device_type), False)


def use_native(op: str, x: Tensor) -> bool:
    """Whether `op` on `x` runs the compiled kernel (True) or the eager reference (False)."""
    if _backend == "reference":
        return False
    if has_kernel(op, x.device.type):
        return True
    if _backend == "native":
        raise RuntimeError(f"uda_ops: backend 'native' has no {op} kernel for device {x.device} "
                           f"(extension: {'loaded' if _C is not None else _C_ERROR})")
    return False


# ---------------------------------------------------------------------------------------------------
# Triton (lazy) and the per-op choice on CUDA tensors
# ---------------------------------------------------------------------------------------------------
# "auto" on CUDA tensors: (op, dtype, layout) or (op, dtype) -> "cuda" | "triton", whichever was faster
# forward+backward on a GPU (benchmarks/gpu_summary.py --auto-cuda-out, run by `make gpu-check`), loaded at
# import from the JSON at $UDA_OPS_AUTO_CUDA, else uda_ops/auto_cuda.json; empty when neither exists. The
# layout is the class axis's: "rows" where its stride is 1 (channels_last, (N, C)), else "planes" (NCHW). A
# (op, dtype) entry applies to both layouts, an op-wide entry (key `op`) to every dtype. What is missing here
# gets the default: the CUDA kernel when compiled, else Triton when importable, else the reference. Read with
# plain dict lookups at trace time (no graph break).
AUTO_CUDA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "auto_cuda.json")


def load_auto_cuda(path: Optional[str] = None) -> Dict[Any, str]:
    """The measured table: {"choices": {op: {dtype name: choice}}, ...} with choice "cuda" | "triton" (both
    layouts) or {"planes": ..., "rows": ...} -> {(op, torch.dtype): choice} and {(op, torch.dtype, layout):
    choice}. Unknown ops, dtypes, layouts or choices are ignored; a missing file gives {}, an unreadable one {}
    and a warning."""
    path = path or os.environ.get("UDA_OPS_AUTO_CUDA") or AUTO_CUDA_FILE
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        warnings.warn(f"uda_ops: ignoring the AUTO_CUDA table {path}: {exc}", RuntimeWarning, stacklevel=2)
        return {}
    table: Dict[Any, str] = {}
    for op, by_dtype in (data.get("choices") or {}).items():
        for name, choice in (by_dtype or {}).items():
            dtype = getattr(torch, str(name), None)
            if op not in OPS or not isinstance(dtype, torch.dtype):
                continue
            if isinstance(choice, dict):
                for layout, c in choice.items():
                    if layout in LAYOUTS and c in ("cuda", "triton"):
                        table[(op, dtype, layout)] = c
            elif choice in ("cuda", "triton"):
                table[(op, dtype)] = choice
    return table


LAYOUTS = ("planes", "rows")


def class_layout(x: Tensor, dim: int) -> str:
    """"rows" where the classes of a pixel are contiguous (stride 1 along `dim`: channels_last, (N, C)),
    else "planes" (NCHW): the two geometries of the kernels."""
    return "rows" if x.stride(dim) == 1 else "planes"


AUTO_CUDA: Dict[Any, str] = load_auto_cuda()
# Triton is imported by the first call that picks it (eagerly); code compiled with fullgraph=True before
# any eager call should call set_backend("triton") or _load_triton() first.

def _triton_found() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None  # looks, does not import
    except (ImportError, ValueError):
        return False


_TRITON_FOUND = _triton_found()
_TRITON: Any = None  # the uda_ops.triton module once loaded
_TRITON_ERROR: Optional[str] = None if _TRITON_FOUND else "triton is not installed"


def _load_triton():
    """Import uda_ops.triton (registers torch.ops.uda_ops_triton.*) on first use; RuntimeError when unavailable."""
    global _TRITON, _TRITON_ERROR
    if _TRITON is None and _TRITON_FOUND and _TRITON_ERROR is None:
        try:
            from . import triton as module
            _TRITON = module
        except Exception as exc:  # broken install, unsupported platform
            _TRITON_ERROR = f"{type(exc).__name__}: {exc}"
    if _TRITON is None:
        raise RuntimeError(f"uda_ops: the triton backend is not available ({_TRITON_ERROR}); "
                           "install it with `pip install triton`")
    return _TRITON


# Plain eager calls of the Triton backend skip the dispatcher's Python (torch.library's autograd wrapper and
# redispatch, about a third of a small forward+backward) through uda_ops.triton.EAGER (an autograd.Function over each
# op's body; see uda_ops/triton/_common.py). UDA_OPS_TRITON_EAGER=0 sends every call through the custom ops. The
# compiled kernels need no such path: their autograd kernels are C++ (csrc/autograd.cpp).
TRITON_EAGER = os.environ.get("UDA_OPS_TRITON_EAGER", "1") not in ("", "0")
try:
    from torch.utils._python_dispatch import is_in_torch_dispatch_mode as _in_dispatch_mode
except ImportError:  # older torch
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    def _in_dispatch_mode() -> bool:
        return _get_current_dispatch_mode() is not None


def _plain_eager(x: Tensor) -> bool:
    """A plain eager call on a plain tensor: not traced by torch.compile/export, no dispatch mode active (fake
    tensors, make_fx), no torch.func transform (vmap, grad), not a tensor subclass. Anything else needs the custom
    ops."""
    return (not torch.compiler.is_compiling() and type(x) in (Tensor, torch.nn.Parameter)
            and not _in_dispatch_mode() and not torch._C._are_functorch_transforms_active())


def _under_functorch() -> bool:
    """A torch.func transform is active (never while torch.compile traces: the check is then skipped)."""
    return not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()


def _triton_ops(op: str, x: Tensor):
    module = _TRITON if _TRITON is not None else _load_triton()
    if x.device.type == "cpu" and not module.INTERPRET:
        raise RuntimeError(f"uda_ops: backend 'triton' ({op}) runs on CUDA tensors; on CPU tensors it runs "
                           "only under TRITON_INTERPRET=1 (set before triton is first imported)")
    if x.device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"uda_ops: backend 'triton' has no {op} kernel for device {x.device}")
    return module.EAGER if TRITON_EAGER and _plain_eager(x) else torch.ops.uda_ops_triton


def _auto_cuda(op: str, dtype: Optional[torch.dtype] = None, layout: Optional[str] = None) -> str:
    choice = AUTO_CUDA.get((op, dtype, layout), AUTO_CUDA.get((op, dtype), AUTO_CUDA.get(op)))
    if choice == "triton" and _TRITON_FOUND and _TRITON_ERROR is None:
        return "triton"
    if has_kernel(op, "cuda"):
        return "native"
    if _TRITON_FOUND and _TRITON_ERROR is None:
        return "triton"
    return "reference"


def kernels(op: str, x: Tensor, dim: Optional[int] = None):
    """The op namespace that runs `op` on `x` (class axis `dim`, if it has one) under the current backend:
    ``NATIVE`` (the compiled ops' default overloads), ``torch.ops.uda_ops_triton`` or ``uda_ops.triton.EAGER``
    (Triton), or None (the eager reference). Under a torch.func transform (grad, vjp, jacrev, vmap) "auto" runs the
    reference: the compiled ops' C++ autograd kernels cannot run under functorch, and neither can torch.library's
    Python autograd of the Triton ops."""
    if _backend == "auto" and _under_functorch():
        return None
    if _backend == "triton":
        return _triton_ops(op, x)
    dev = "cpu" if x.is_cpu else x.device.type  # is_cpu: 0.04 us, .device.type: 0.25 us
    if _backend == "auto" and dev == "cuda":
        choice = _auto_cuda(op, x.dtype, None if dim is None else class_layout(x, dim))
        if choice == "triton":
            try:
                return _triton_ops(op, x)
            except RuntimeError:  # triton found but unusable: "auto" falls back, "triton" raises
                return NATIVE if has_kernel(op, "cuda") else None
        return NATIVE if choice == "native" else None
    if _backend != "reference" and _KERNELS.get((op, dev), False):  # use_native's common case, inline
        return NATIVE
    return NATIVE if use_native(op, x) else None


def _triton_info() -> Dict[str, object]:
    version = None
    if _TRITON_FOUND:
        try:
            from importlib.metadata import version as _version
            version = _version("triton")
        except Exception:  # pragma: no cover - metadata missing
            version = None
    return {"available": _TRITON_FOUND and _TRITON_ERROR is None, "version": version,
            "loaded": _TRITON is not None, "error": _TRITON_ERROR,
            "interpret": bool(_TRITON is not None and _TRITON.INTERPRET)}


def _op_backend(op: str, dev: str) -> str:
    if _backend == "reference":
        return "reference"
    if _backend == "triton":
        return "triton"
    if _backend == "auto" and dev == "cuda":
        return _auto_cuda(op)
    return "native" if has_kernel(op, dev) else "reference"


def backend_info() -> Dict[str, object]:
    """Which backends are compiled and available, and which one each op uses on each device type."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    info: Dict[str, object] = {
        "backend": _backend,
        "extension": _C is not None,
        "extension_error": _C_ERROR,
        "build": dict(_C.build_info()) if _C is not None else None,
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "triton": _triton_info(),
    }
    ops = {}
    for op in OPS:
        ops[op] = {dev: _op_backend(op, dev) for dev in devices}
    info["ops"] = ops
    return info


# ---------------------------------------------------------------------------------------------------
# Fake (meta) kernels: mirror csrc/layout.h exactly (shapes, dtypes and strides).
# ---------------------------------------------------------------------------------------------------
def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _map_like(x: Tensor, dim: int) -> Tensor:
    dim = dim % x.dim()
    shape = [s for i, s in enumerate(x.shape) if i != dim]
    return x.new_empty(shape, dtype=_acc_dtype(x))


# The fused reduction of a forward op (csrc/layout.h, Reduction): the op's `reduction` argument.
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def _forward_like(x: Tensor, dim: int, reduction: int) -> Tensor:
    """Fake output of a forward op: the (N, *) map, or a 0-d tensor when reduced (accumulation dtype)."""
    return _map_like(x, dim) if reduction == 0 else x.new_empty((), dtype=_acc_dtype(x))


def _like_layout(x: Tensor, dim: int, dtype: Optional[torch.dtype] = None) -> Tensor:
    """empty_in_layout: channels_last-like inputs keep their layout, anything else is contiguous."""
    dim = dim % x.dim()
    dtype = dtype or x.dtype
    if not x.is_contiguous() and x.movedim(dim, -1).is_contiguous():
        return x.movedim(dim, -1).new_empty(x.movedim(dim, -1).shape, dtype=dtype).movedim(-1, dim)
    return x.new_empty(x.shape, dtype=dtype)


# The compiled ops (kernels() hands it out): each op's default overload, which saves resolving the overload per
# call. Their autograd kernels are C++ (csrc/autograd.cpp), so every call, eager or traced, takes the same path.
NATIVE = SimpleNamespace()


def _register() -> None:
    lib = "uda_ops::"
    fake = torch.library.register_fake

    @fake(lib + "sym_kl")
    def _(a, b, dim, detach_targets, reduction=0):
        return _forward_like(a, dim, reduction)

    @fake(lib + "sym_kl_backward")
    def _(grad, a, b, dim, detach_targets):
        return _like_layout(a, dim), _like_layout(a, dim)

    @fake(lib + "kl_div")
    def _(input, target, dim, reduction=0):
        return _forward_like(input, dim, reduction)

    @fake(lib + "kl_div_backward")
    def _(grad, input, target, dim, need_target):
        return _like_layout(input, dim), (_like_layout(input, dim) if need_target else input.new_empty(0))

    @fake(lib + "entropy")
    def _(z, dim, reduction=0):
        return _forward_like(z, dim, reduction)

    @fake(lib + "entropy_backward")
    def _(grad, z, dim):
        return _like_layout(z, dim)

    @fake(lib + "self_information")
    def _(z, dim):
        return _like_layout(z, dim)

    @fake(lib + "self_information_backward")
    def _(grad, z, dim):
        return _like_layout(z, dim)

    @fake(lib + "cosine_discrepancy")
    def _(z1, z2, dim):
        return _map_like(z1, dim)

    @fake(lib + "cosine_discrepancy_backward")
    def _(grad, z1, z2, dim):
        return _like_layout(z1, dim), _like_layout(z1, dim)

    @fake(lib + "clan_adversarial")
    def _(d, z1, z2, target, lambda_local, epsilon, dim, reduction=0):
        return _forward_like(z1, dim, reduction)

    @fake(lib + "clan_adversarial_backward")
    def _(grad, d, z1, z2, target, lambda_local, epsilon, dim, need_logit_grads):
        gz = (lambda: _like_layout(z1, dim)) if need_logit_grads else (lambda: z1.new_empty(0))
        return d.new_empty(d.shape), gz(), gz()

    @fake(lib + "adversarial_dropout_mask")
    def _(jacobian, base_mask, max_flips, rescale):
        return jacobian.new_empty(jacobian.shape)

    @fake(lib + "channel_adversarial_dropout_mask")
    def _(grad, activation, base_mask, max_flips, rescale):
        return grad.new_empty(grad.shape[:2])

    # Autograd: csrc/autograd.cpp (C++ kernels for every device; first order only).
    for name in OPS:
        setattr(NATIVE, name, getattr(torch.ops.uda_ops, name).default)


if _C is not None:
    _register()
