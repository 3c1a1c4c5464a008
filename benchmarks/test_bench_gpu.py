"""GPU benchmarks: every op at Cityscapes-like shapes, in fp32 and bf16, forward and forward+backward, each
uda_ops backend (CUDA kernels; Triton when available) beside the eager reference and torch.compile of it, in
one run; plus a whole UDA training step (train_step.py) with and without uda_ops. Skipped without CUDA.

    pytest benchmarks/test_bench_gpu.py --benchmark-json=out.json     # or: python benchmarks/gpu_summary.py
Each benchmark records extra_info: bytes that must move, achieved GB/s and its fraction of the device's
measured copy bandwidth, and the step's peak extra device memory.
"""
import pytest
import torch

from cases import CASES, MODES, bytes_moved, step
from gpu_common import (GPU_DTYPES, GPU_SHAPES, UDA_IMPLS, available_impls, bench_device, copy_bandwidth_gbps,
                        peak_device_bytes, synced, with_backend)

DEVICE = bench_device()
pytestmark = pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs CUDA")

IMPLS = available_impls(DEVICE) if DEVICE.type != "cuda" or torch.cuda.is_available() else ["cuda", "eager", "compile"]
PIXEL_CASES = [c for c in CASES if CASES[c].differentiable]
MASK_CASES = [c for c in CASES if not CASES[c].differentiable]


def _params():
    out = []
    for shape in GPU_SHAPES:
        for dtype in GPU_DTYPES:
            for case in PIXEL_CASES:
                for mode in MODES:
                    for impl in IMPLS:
                        out.append((case, impl, mode, shape, dtype))
    for dtype in GPU_DTYPES:
        for case in MASK_CASES:
            for impl in IMPLS:
                out.append((case, impl, "fwd", None, dtype))
    return out


PARAMS = _params()


def _id(p):
    case, impl, mode, shape, dtype = p
    shape_s = "x".join(map(str, shape)) if shape else "dta"
    return f"{case}-{mode}-{impl}-{shape_s}-{str(dtype).replace('torch.', '')}"


def _fn(case, impl):
    c = CASES[case]
    if impl in UDA_IMPLS:
        return with_backend(c.fused, UDA_IMPLS[impl])
    return c.fn(impl)


@pytest.mark.parametrize("case,impl,mode,shape,dtype", PARAMS, ids=[_id(p) for p in PARAMS])
def test_gpu_op(benchmark, case, impl, mode, shape, dtype):
    import os

    if os.environ.get("UDA_BENCH_SHAPE") and shape is not None:  # smoke runs: a small shape
        shape = tuple(int(s) for s in os.environ["UDA_BENCH_SHAPE"].split(","))
    c = CASES[case]
    benchmark.group = _id((case, "", mode, shape, dtype))
    inputs = c.make(DEVICE, shape=shape, dtype=dtype)
    if impl == "compile":
        torch._dynamo.reset()
    run = synced(step(_fn(case, impl), inputs, mode), DEVICE)
    for _ in range(3):  # warm-up (and compilation, autotuning)
        run()
    moved = bytes_moved(c, inputs, mode)
    copy = copy_bandwidth_gbps(DEVICE)
    own = sum(x.numel() * x.element_size() * (2 if (x.requires_grad and mode == "fwdbwd") else 1)
              for x in inputs)
    benchmark.extra_info.update(case=case, impl=impl, mode=mode, bytes=moved, own_bytes=own,
                                peak_bytes=peak_device_bytes(run, DEVICE), copy_gbps=copy,
                                shape=list(inputs[0].shape), dtype=str(dtype).replace("torch.", ""),
                                device=torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu")
    benchmark.pedantic(run, rounds=30, iterations=1, warmup_rounds=2)
    if benchmark.stats is not None:  # None under --benchmark-disable (smoke runs)
        gbps = moved / benchmark.stats.stats.median / 1e9
        benchmark.extra_info.update(gbps=gbps, frac_copy=gbps / copy)


TRAIN_VARIANTS = ["reference"] + [i for i in IMPLS if i in UDA_IMPLS]


@pytest.mark.parametrize("variant", TRAIN_VARIANTS)
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def test_gpu_train_step(benchmark, variant, dtype):
    """One AdvEnt + CLAN training step (generator and discriminator updates) of a small DeepLab-style net."""
    import os

    from train_step import TrainSetup

    small = bool(os.environ.get("UDA_BENCH_SHAPE"))
    setup = TrainSetup(DEVICE, dtype, image=(64, 96) if small else (512, 1024), batch=1 if small else 2)
    run = synced(setup.step_fn("reference" if variant == "reference" else UDA_IMPLS[variant]), DEVICE)
    for _ in range(3):
        run()
    benchmark.group = f"train_step-{str(dtype).replace('torch.', '')}"
    benchmark.extra_info.update(case="train_step", impl=variant, mode="fwdbwd", shape=list(setup.image_shape),
                                dtype=str(dtype).replace("torch.", ""), peak_bytes=peak_device_bytes(run, DEVICE),
                                bytes=0, own_bytes=0)
    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
