"""GPU measurement helpers shared by test_bench_gpu.py, gpu_summary.py and train_step.py: backends as impls,
synchronised timing, peak device memory of one step, and the device's copy bandwidth (the roofline every
memory-bound kernel is judged against); and the method of issue 10 (time_rotated: CUDA events per repetition,
no host sync between them, median, inputs rotated to exceed L2; time_graph: CUDA-graph replays). Everything degrades to a CPU no-op so that the logic can be smoke
tested without a GPU (UDA_BENCH_DEVICE=cpu)."""
from __future__ import annotations

import contextlib
import os
import platform
import time
from typing import Callable, Dict, List, Optional

import torch

import uda_ops

# impl name -> uda_ops backend (None: not a uda_ops impl). "eager"/"compile" are the reference (cases.py).
UDA_IMPLS = {"cuda": "native", "triton": "triton"}
GPU_SHAPES = [(2, 19, 512, 1024), (8, 19, 256, 512)]
# (N, C) classification logits with ImageNet's C: the rows layout past the CUDA staged slab (a warp per row)
CLS_SHAPES = [(16384, 1000)]
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


# ---------------------------------------------------------------------------------------------------
# The method of issue 10 (the device tool's METHOD.md): events, medians, rotated inputs, graph replays
# ---------------------------------------------------------------------------------------------------
ROTATE_BYTES = 60 * 2**20  # rotate among input sets totalling at least this (H100/H200 L2: 50 MB)


def rotation_count(set_bytes: int, min_bytes: int = ROTATE_BYTES, cap: int = 16) -> int:
    """How many input sets to rotate among: at least 2, enough to exceed `min_bytes` together (<= cap)."""
    return max(2, min(cap, -(-min_bytes // max(set_bytes, 1))))


def _median(xs: List[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def time_rotated(steps: List[Callable[[], object]], device: torch.device, reps: int = 50,
                 warmup: int = 5) -> Dict[str, float]:
    """Median and spread (ms) of one step, step i % len(steps) at repetition i (each on its own input set).
    On a GPU every repetition sits between its own pair of CUDA events, all recorded back to back with one
    synchronisation at the end (no host sync between repetitions); elsewhere perf_counter."""
    for i in range(warmup):
        steps[i % len(steps)]()
    sync(device)
    times: List[float] = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for i, (a, b) in enumerate(events):
            a.record()
            steps[i % len(steps)]()
            b.record()
        torch.cuda.synchronize(device)
        times = [a.elapsed_time(b) for a, b in events]
    else:
        for i in range(reps):
            t0 = time.perf_counter()
            steps[i % len(steps)]()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"ms": _median(times), "p10_ms": times[len(times) // 10], "p90_ms": times[(9 * len(times)) // 10]}


def time_graph(steps: List[Callable[[], object]], device: torch.device, reps: int = 50,
               warmup: int = 3) -> Optional[float]:
    """Median ms of one step replayed from a CUDA graph (one graph per input set, replayed in rotation), so
    that Python dispatch and launch gaps are left out. None off a GPU or where the step cannot be captured."""
    if device.type != "cuda":
        return None
    graphs, keep = [], []
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                for s in steps:
                    s()
        torch.cuda.current_stream(device).wait_stream(side)
        for s in steps:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                keep.append(s())  # outputs stay alive with the graph's memory pool
            graphs.append(g)
    except Exception:  # noqa: BLE001  (not capturable: host syncs, CPU fallbacks)
        sync(device)
        return None
    return time_rotated([g.replay for g in graphs], device, reps=reps, warmup=warmup)["ms"]

