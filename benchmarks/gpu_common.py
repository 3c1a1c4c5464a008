"""GPU measurement helpers shared by test_bench_gpu.py, gpu_summary.py and train_step.py: backends as impls,
synchronised timing, peak device memory of one step, and the device's copy bandwidth (the roofline every
memory-bound kernel is judged against). Everything degrades to a CPU no-op so that the logic can be smoke
tested without a GPU (UDA_BENCH_DEVICE=cpu)."""
from __future__ import annotations

import contextlib
import os
import platform
import time
from typing import Callable, Dict, List

import torch

import uda_ops

# impl name -> uda_ops backend (None: not a uda_ops impl). "eager"/"compile" are the reference (cases.py).
UDA_IMPLS = {"cuda": "native", "triton": "triton"}
GPU_SHAPES = [(2, 19, 512, 1024), (8, 19, 256, 512)]
GPU_DTYPES = [torch.float32, torch.bfloat16]


def bench_device() -> torch.device:
    return torch.device(os.environ.get("UDA_BENCH_DEVICE", "cuda"))


def triton_available() -> bool:
    try:
        before = uda_ops.get_backend()
        uda_ops.set_backend("triton")
        uda_ops.set_backend(before)
        return True
    except (ValueError, RuntimeError, ImportError):
        return False


def available_impls(device: torch.device) -> List[str]:
    impls = ["cuda"] + (["triton"] if device.type == "cuda" and triton_available() else [])
    return impls + ["eager", "compile"]


@contextlib.contextmanager
def backend(name: str):
    before = uda_ops.get_backend()
    uda_ops.set_backend(name)
    try:
        yield
    finally:
        uda_ops.set_backend(before)


def with_backend(fn: Callable, name: str) -> Callable:
    """fn run under uda_ops backend `name` (the backend is global and read at call time)."""
    def run(*args):
        with backend(name):
            return fn(*args)
    return run


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synced(run: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """A step that returns only when the device is done (what a wall-clock timer must measure)."""
    def step():
        out = run()
        sync(device)
        return out
    return step


def peak_device_bytes(run: Callable[[], object], device: torch.device) -> int:
    """Extra device memory at the peak of one step: max_memory_allocated minus what was held before."""
    if device.type != "cuda":
        return 0
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = run()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del result
    return int(peak)


def time_ms(run: Callable[[], object], device: torch.device, reps: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of `run` (CUDA events on a GPU, perf_counter elsewhere)."""
    for _ in range(warmup):
        run()
    sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


_COPY_GBPS: Dict[str, float] = {}


def copy_bandwidth_gbps(device: torch.device, mib: int = 512) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), measured once per process."""
    key = str(device)
    if key not in _COPY_GBPS:
        n = mib * 2**20 // 4 if device.type == "cuda" else 2**22
        src = torch.empty(n, dtype=torch.float32, device=device).fill_(1.0)
        dst = torch.empty_like(src)
        ms = time_ms(lambda: dst.copy_(src), device, reps=20, warmup=3)
        _COPY_GBPS[key] = 2 * src.numel() * 4 / (ms * 1e-3) / 1e9
        del src, dst
    return _COPY_GBPS[key]


def machine_info(device: torch.device) -> Dict[str, object]:
    info: Dict[str, object] = {"torch": torch.__version__, "python": platform.python_version(),
                               "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device=torch.cuda.get_device_name(device), sm_count=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}")
    else:
        info["device"] = platform.processor() or platform.machine()
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    info["uda_ops_build"] = uda_ops.backend_info().get("build")
    return info
