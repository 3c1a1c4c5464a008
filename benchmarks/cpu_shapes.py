"""Forward+backward of every loss on the CPU, uda_ops beside the official repositories' eager formulas
(benchmarks/official.py), across the shapes users run: segmentation maps (NCHW and channels_last, C = 19 and ADE20K's
150, fp32 and bf16) and classification logits (N, C) from 10 to 1000 classes. The summary script measures one
shape; this one checks that the ratio holds elsewhere.

    python benchmarks/cpu_shapes.py                        # every op, every shape: a Markdown table
    python benchmarks/cpu_shapes.py -k entropy,sym_kl --shape 256,1000 --json out.json

Each (op, shape) times the two side by side in alternating rounds (each round: as many calls as fill --budget
seconds) and reports the medians: x official is measured within one run. The backward is torch.autograd.grad of the
loss (the official formulas return a loss; self_information and cosine_discrepancy return maps, summed).

A third step is timed in the same rounds: "one op", torch.exp of the first differentiable input, summed, forward and
backward (torch.autograd.grad): one cheap elementwise op and one reduction, a gradient for one input only. A loss that
returns a map (self_information, cosine_discrepancy: summed here, as the one op is) cannot take less as an autograd
op, so for them official / one op ("ceiling") bounds the x official that any such implementation can reach at that
shape. The losses with a fused reduction need no separate sum, so for them the ceiling is a loose bound (one op and
one backward node looser). Where it is near or below 3, per-call overhead (torch's, not the kernels') decides.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from typing import List, Optional, Tuple

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cases import CASES, step  # noqa: E402
from official import OFFICIAL  # noqa: E402
from summary import device_name  # noqa: E402

# (shape, dtype, channels_last)
SHAPES: List[Tuple[Tuple[int, ...], torch.dtype, bool]] = [
    ((2, 19, 128, 256), torch.float32, False),
    ((1, 19, 512, 1024), torch.float32, False),
    ((8, 19, 64, 128), torch.float32, False),
    ((2, 150, 32, 64), torch.float32, False),
    ((2, 19, 128, 256), torch.float32, True),
    ((2, 19, 128, 256), torch.bfloat16, False),
    ((64, 10), torch.float32, False),
    ((256, 10), torch.float32, False),
    ((32, 31), torch.float32, False),
    ((128, 65), torch.float32, False),
    ((64, 1000), torch.float32, False),
    ((256, 1000), torch.float32, False),
    ((256, 1000), torch.bfloat16, False),
    ((128, 345), torch.float32, False),  # DomainNet's 345 classes
]

# The losses, in the order of the table; their inputs, uda_ops calls and forward+backward steps are
# benchmarks/cases.py's (CASES, step), as in the pytest-benchmark suite.
OPS = ("sym_kl", "kl_div", "entropy", "self_information", "cosine_discrepancy", "clan_adversarial")


def official(name: str):
    """The official formula; ADVENT's entropy_loss and CLAN's weight map unpack (N, C, H, W), so (N, C) logits
    get two unit dimensions (a view: the same work)."""
    fn = OFFICIAL[name]

    def call(*xs):
        if xs[0].dim() == 2 and name in ("entropy", "cosine_discrepancy", "clan_adversarial"):
            xs = [x[..., None, None] for x in xs]
        return fn(*xs)
    return call


def inputs(name: str, shape, dtype, channels_last: bool) -> List[torch.Tensor]:
    xs = CASES[name].make("cpu", shape=shape, dtype=dtype)
    if channels_last:
        xs = [x.detach().contiguous(memory_format=torch.channels_last).requires_grad_() for x in xs]
    return xs


def per_call(run, budget: float) -> float:
    run()
    n, t0 = 0, time.perf_counter()
    while True:
        run()
        n += 1
        t = time.perf_counter() - t0
        if t > budget:
            return t / n


def main(argv: Optional[List[str]] = None) -> List[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", dest="ops", default=",".join(OPS), help="comma-separated ops (default: all six)")
    ap.add_argument("--shape", action="append", help="only this shape, e.g. 64,10 (repeatable; default: SHAPES)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--budget", type=float, default=0.05, help="seconds per timing round")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    shapes = [s for s in SHAPES if not args.shape or ",".join(map(str, s[0])) in args.shape]
    warnings.filterwarnings("ignore", message=".*'mean' divides the total loss.*")  # DTA/ADR kl_div "mean"
    info = {"device": device_name(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(f"{info['device']}, {info['threads']} threads, torch {info['torch']}")
    print("| op | shape | dtype | layout | uda_ops ms | official ms | x official | one op ms | ceiling |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in args.ops.split(","):
        for shape, dtype, cl in shapes:
            xs = inputs(name, shape, dtype, cl)
            first = next(x for x in xs if x.requires_grad)
            runs = (step(CASES[name].fused, xs, "fwdbwd"), step(official(name), xs, "fwdbwd"),
                    step(torch.exp, [first], "fwdbwd"))
            times = [[], [], []]
            for _ in range(args.rounds):
                for run, t in zip(runs, times):
                    t.append(per_call(run, args.budget))
            ours, theirs, one = (statistics.median(t) * 1e3 for t in times)
            row = dict(op=name, shape=list(shape), dtype=str(dtype).replace("torch.", ""),
                       layout="channels_last" if cl else ("NC" if len(shape) == 2 else "NCHW"),
                       uda_ops_ms=ours, official_ms=theirs, x_official=theirs / ours, one_op_ms=one,
                       ceiling=theirs / one)
            rows.append(row)
            print(f"| {name} | {tuple(shape)} | {row['dtype']} | {row['layout']} | {ours:.3f} | {theirs:.3f} | "
                  f"{row['x_official']:.2f} | {one:.3f} | {row['ceiling']:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
