"""Diagnostics for the questions the first GPU run left open (benchmarks/results/nvidia-h200-2026-11-29/README.md),
each small enough for a short lease. Run by benchmarks/gpu_lease.sh (stage "diag"); on a CPU (--device cpu) every
part runs against the CPU kernels, which checks this script.

  badgrad   the CUDA backward ops called with a gradient on the CPU, of dtype int64, or of the wrong shape (the
            segfault of test_backward_checks_gradient_device_dtype_shape): each op in its own process, one line
            printed (and flushed) before and after every call, so a crash names the call that made it.
  clan      clan_adversarial at (5000, 19), dim -1, fp32 (test_op_shapes_and_dims): the worst elements of the
            value and of each gradient against the float64 reference, beside the test's tolerance, for the CUDA
            kernels, the Triton kernels and the CPU kernels on the same inputs.
  hostprof  where the host time of a plain forward+backward goes (Triton calls cost ~0.7-0.9 ms more than the
            CUDA kernels' on the H200): wall time per call of the CUDA kernels, of Triton's eager path and of
            Triton through the custom ops (the first run's path), with and without a device sync, and a cProfile of
            the Triton eager path sorted by own time.

  kernels   the workload that gpu_lease.sh's "ncu" stage profiles: one forward+backward of every loss at
            (2, 19, 512, 1024) for each (backend, dtype, layout) of KERNEL_CONFIGS, each inside its own
            cudaProfilerStart/Stop (ncu --profile-from-start off sees only those), after an unprofiled warm-up (Triton
            compiles, the caching allocator fills). Prints the configurations in launch order: ncu's kernel IDs
            follow it. Not in the default parts.

    python benchmarks/gpu_diag.py badgrad clan hostprof [--device cuda] [--out DIR]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


def _say(*parts) -> None:
    print(*parts, flush=True)


def badgrad_one(name: str, device: str) -> None:
    """One backward op, every bad gradient; runs in a child process (a crash ends only that op's check)."""
    import faulthandler

    from conftest import backward_case

    import uda_ops  # noqa: F401  (registers torch.ops.uda_ops)
    faulthandler.enable()
    dev = torch.device(device)
    args, shape = backward_case(name, dev)
    fn = getattr(torch.ops.uda_ops, name)
    other = torch.device("cpu") if dev.type == "cuda" else torch.device("meta")
    cases = [("right gradient", torch.ones(shape, device=dev)),
             (f"gradient on {other.type}", torch.ones(shape, device=other)),
             ("int64 gradient", torch.ones(shape, device=dev, dtype=torch.int64)),
             ("wrong shape", torch.ones(2, *shape, device=dev))]
    for label, g in cases:
        _say(f"{name}: {label}: calling")
        try:
            fn(g, *args)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            _say(f"{name}: {label}: returned")
        except Exception as exc:  # noqa: BLE001  (what we want to see)
            _say(f"{name}: {label}: raised {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


def badgrad(device: str) -> str:
    from conftest import BACKWARDS

    lines = []
    for name in BACKWARDS:
        r = subprocess.run([sys.executable, __file__, "--badgrad-one", name, "--device", device], capture_output=True,
                           text=True, timeout=120, cwd=ROOT)
        lines.append(f"## {name}: exit code {r.returncode}\n{r.stdout}{r.stderr[-4000:]}")
    return "\n".join(lines)


def clan(device: str) -> str:
    import uda_ops
    from conftest import CLAN_ARGS, OPS, TOL
    from uda_ops import reference

    dev = torch.device(device)
    shape, dim = (5000, 19), -1
    op = next(o for o in OPS if o.name == "clan_adversarial")
    xs = op.make(shape, torch.float32, "random", "contiguous", dim, 0)
    x64 = [x.double().requires_grad_() for x in xs]
    ref = reference.clan_adversarial_loss(*x64, **CLAN_ARGS, dim=dim, reduction="none")
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref.backward(g.float().double())
    rtol, atol = TOL[torch.float32]
    out = [f"clan_adversarial {shape} dim {dim} fp32; tolerance |err| <= {atol} (x4 for gradients) + {rtol} |ref|"]
    backends = [("native", torch.device("cpu"))] + ([("native", dev), ("triton", dev)] if dev.type == "cuda" else [])
    for backend, d in backends:
        uda_ops.set_backend(backend)
        ys = [x.detach().clone().to(d).requires_grad_() for x in xs]
        val = uda_ops.clan_adversarial_loss(*ys, **CLAN_ARGS, dim=dim, reduction="none")
        val.backward(g.float().to(d))
        for label, a, r, scale in [("value", val, ref, 1.0)] + [(f"grad {n}", y.grad, x.grad, 4.0)
                                                                for n, y, x in zip(("d", "z1", "z2"), ys, x64)]:
            err = (a.detach().double().cpu() - r.detach()).abs()
            bound = atol * scale + rtol * r.detach().abs()
            worst = int((err / bound).flatten().argmax())
            out.append(f"  {backend}/{d.type} {label}: max |err| {err.max().item():.3g}, worst err/tolerance "
                       f"{(err / bound).flatten()[worst].item():.3g} at flat index {worst} (ref "
                       f"{r.detach().flatten()[worst].item():.6g}, got {a.detach().flatten()[worst].item():.6g}), "
                       f"elements over: {int((err > bound).sum())}")
    uda_ops.set_backend("auto")
    return "\n".join(out)


def hostprof(device: str, reps: int = 200) -> str:
    import uda_ops
    from uda_ops import _ops

    dev = torch.device(device)
    shape = (2, 19, 512, 1024) if dev.type == "cuda" else (2, 19, 8, 8)
    a = torch.randn(shape, device=dev, requires_grad=True)
    b = torch.randn(shape, device=dev, requires_grad=True)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    step = lambda: uda_ops.sym_kl(a, b).backward()  # noqa: E731
    out = [f"sym_kl fwd+bwd (mean) at {shape} fp32 on {dev}, {reps} calls"]
    # (label, backend, Triton's eager path on): "native" (C++ autograd kernels: one path) and "triton" are what a
    # plain call runs; "triton/custom-ops" the same kernels through the dispatcher (UDA_OPS_TRITON_EAGER=0)
    variants = [("native", "native", True)]
    if dev.type == "cuda":
        variants += [("triton", "triton", True), ("triton/custom-ops", "triton", False)]
    for label, backend, eager in variants:
        uda_ops.set_backend(backend)
        _ops.TRITON_EAGER = eager
        for _ in range(10):
            step()
        sync()
        t = time.perf_counter()
        for _ in range(reps):
            step()
        host = (time.perf_counter() - t) / reps
        sync()
        total = (time.perf_counter() - t) / reps
        t = time.perf_counter()
        for _ in range(reps):
            step()
            sync()
        synced = (time.perf_counter() - t) / reps
        out.append(f"  {label}: {host * 1e6:.0f} us/call host (no sync), {total * 1e6:.0f} us/call incl. the final "
                   f"sync, {synced * 1e6:.0f} us/call with a sync after each")
    _ops.TRITON_EAGER = True
    for backend in ("triton" if dev.type == "cuda" else "native",):
        uda_ops.set_backend(backend)
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(reps):
            step()
        sync()
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(35)
        out.append(f"## cProfile, backend {backend}, {reps} calls, by own time\n{s.getvalue()}")
    uda_ops.set_backend("auto")
    return "\n".join(out)


# (backend, dtype, channels_last) profiled by `kernels`: what the 2026-11-29 run measured furthest from the roofline
# (CUDA fp32 NCHW at 41-59% of copy bandwidth against Triton's 74-85%; bf16 at 35-60%) and the staged rows kernels
# for channels_last, which have never run.
KERNEL_CONFIGS = [(backend, dtype, cl) for dtype, cl in ((torch.float32, False), (torch.bfloat16, False),
                                                         (torch.float32, True))
                  for backend in ("native", "triton")]
KERNEL_OPS = ("sym_kl", "kl_div", "entropy", "self_information", "cosine_discrepancy", "clan_adversarial")


def kernels(device: str) -> str:
    import uda_ops
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from cases import CASES, step

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    shape = (2, 19, 512, 1024) if cuda else (2, 19, 8, 8)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out = [f"one forward+backward per line, in launch order, at {shape} on {dev}"]
    for backend, dtype, cl in KERNEL_CONFIGS:
        if backend == "triton" and not cuda:
            continue
        uda_ops.set_backend(backend)
        for name in KERNEL_OPS:
            xs = CASES[name].make(device, shape=shape, dtype=dtype)
            if cl:
                xs = [x.detach().contiguous(memory_format=torch.channels_last).requires_grad_() for x in xs]
            run = step(CASES[name].fused, xs, "fwdbwd")
            run()  # warm-up, not profiled
            sync()
            line = f"{backend} {name} {str(dtype).replace('torch.', '')} {'channels_last' if cl else 'NCHW'}"
            _say(f"profiled: {line}")
            out.append(line)
            if cuda:
                torch.cuda.cudart().cudaProfilerStart()
            run()
            sync()
            if cuda:
                torch.cuda.cudart().cudaProfilerStop()
    uda_ops.set_backend("auto")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["badgrad", "clan", "hostprof"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="", help="write each part to DIR/diag-<part>.txt (also printed)")
    ap.add_argument("--badgrad-one", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.badgrad_one:
        badgrad_one(args.badgrad_one, args.device)
        return 0
    parts = {"badgrad": badgrad, "clan": clan, "hostprof": hostprof, "kernels": kernels}
    for part in args.parts:
        try:
            text = parts[part](args.device)
        except Exception as exc:  # noqa: BLE001  (one part failing leaves the others)
            text = f"{part} failed: {type(exc).__name__}: {exc}"
        print(f"# {part}\n{text}\n", flush=True)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, f"diag-{part}.txt"), "w") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
