"""The fused "mean" of a loss (the forward op's `reduction`, one pass, no map written) against the unfused path it
replaced (the op writes the (N, *) map, then torch sums it and divides), side by side in one run: forward and
forward+backward of sym_kl, kl_div, entropy and clan_adversarial on the current backend.

    python benchmarks/fused_reduction.py                          # CPU, (2, 19, 128, 256) fp32
    python benchmarks/fused_reduction.py --device cuda --shape 2,19,512,1024 --dtype bfloat16
Prints a Markdown table of medians (ms) over --rounds alternating rounds; --json writes the figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import uda_ops
from uda_ops import _ops

R = _ops.REDUCTIONS


def _ops_for(x):
    ops = _ops.kernels("entropy", x)
    if ops is None:
        raise SystemExit("no compiled or Triton kernel for these tensors (backend 'reference'?)")
    return ops


def cases(shape, dtype, device):
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(shape, generator=g).mul(3).to(device=device, dtype=dtype) for _ in range(2))
    d = torch.randn((shape[0],) + tuple(shape[2:]), generator=g).to(device=device, dtype=dtype)
    ops = _ops_for(a)
    args = (1.0, 40.0, 0.4, 1)
    return {  # name -> (inputs needing grad, fn(reduction) on them)
        "sym_kl": ((a, b), lambda x, y, r: ops.sym_kl(x, y, 1, False, r)),
        "kl_div": ((a, b), lambda x, y, r: ops.kl_div(x, y, 1, r)),
        "entropy": ((a,), lambda x, r: ops.entropy(x, 1, r)),
        "clan_adversarial": ((d, a, b), lambda dd, x, y, r: ops.clan_adversarial(dd, x, y, *args, r)),
    }


def runner(inputs, fn, fused: bool, backward: bool):
    xs = [x.detach().requires_grad_(backward) for x in inputs]

    def run():
        if fused:
            out = fn(*xs, R["mean"])
        else:
            m = fn(*xs, R["none"])
            out = m.sum() / m.numel()
        if backward:
            torch.autograd.grad(out, xs)
        return out
    return run


def timed(run, device):
    """ms of one call: CUDA events around it on a GPU (launches included: the point of fusing), else the host
    clock."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    run()
    return (time.perf_counter() - t0) * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shape", default="2,19,128,256")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    shape = tuple(int(s) for s in args.shape.split(","))
    rows = []
    for name, (inputs, fn) in cases(shape, dtype, device).items():
        for mode, backward in (("fwd", False), ("fwdbwd", True)):
            runs = {k: runner(inputs, fn, k == "fused", backward) for k in ("unfused", "fused")}
            for r in runs.values():  # warm-up
                for _ in range(3):
                    r()
            t = {k: [] for k in runs}
            for _ in range(args.rounds):  # alternate, so drift hits both alike
                for k, r in runs.items():
                    t[k].append(timed(r, device))
            med = {k: statistics.median(v) for k, v in t.items()}
            rows.append(dict(op=name, mode=mode, unfused_ms=med["unfused"], fused_ms=med["fused"],
                             speedup=med["unfused"] / med["fused"]))
    print(f"{uda_ops.backend_info()['backend']} backend, {device}, {shape} {args.dtype}, "
          f"median of {args.rounds} alternating rounds, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| op | mode | map + torch sum ms | fused ms | x |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['op']} | {r['mode']} | {r['unfused_ms']:.3f} | {r['fused_ms']:.3f} | {r['speedup']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=str(device), shape=shape, dtype=args.dtype, torch=torch.__version__, rows=rows),
                      f, indent=1)


if __name__ == "__main__":
    main()
