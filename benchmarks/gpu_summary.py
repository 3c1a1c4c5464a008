"""GPU benchmarks by the method of issue 10 (the device tool's METHOD.md): every loss forward+backward (and
optionally forward alone) and the mask searches, each uda_ops backend (CUDA kernels, Triton) beside the eager
reference, torch.compile of it (default, and max-autotune-no-cudagraphs), and the official repositories'
eager formulas (benchmarks/official.py), at (2, 19, 512, 1024) and (8, 19, 256, 512), fp32 and bf16, NCHW and
channels_last.

How it times: CUDA events around each repetition, all recorded back to back and synchronised once; the
median of --reps repetitions after a warm-up; the inputs rotated among enough sets to exceed the L2 cache
(gpu_common.ROTATE_BYTES, 60 MB); and a second time from CUDA-graph replays of the same steps (Python dispatch
and launch gaps left out; "-" where a step cannot be captured).
Columns: ms (events), graph ms, GB/s for the bytes that must move (inputs read, outputs and gradients written;
fwd+bwd reads the inputs twice) and its fraction of the device-to-device copy bandwidth measured once in the
same run, speed-up over eager ("x eager") and over each torch.compile, and peak memory above the inputs
(outputs, gradients, temporaries) beside the gradients' own size.

    python benchmarks/gpu_summary.py --save                        # all of it; JSON + markdown in benchmarks/results/
    python benchmarks/gpu_summary.py --ops entropy --dtypes bf16 --reps 20
    python benchmarks/gpu_summary.py --dry-run                     # CPU, tiny shapes: exercises the code, no GPU
    python benchmarks/gpu_summary.py --from results.json --markdown   # print an earlier run
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import gpu_common as G  # noqa: E402
from cases import CASES, bytes_moved, step  # noqa: E402
from summary import fmt  # noqa: E402

try:  # the official repositories' eager formulas (CPU helper's benchmarks/official.py)
    from official import OFFICIAL  # noqa: E402
except ImportError:  # HOOK: without official.py the "official" column is simply absent
    OFFICIAL = {}

LOSSES = [c for c in CASES if CASES[c].differentiable]
MASKS = [c for c in CASES if not CASES[c].differentiable]
LAYOUTS = ("nchw", "channels_last")
COMPILE_MODES = {"compile": "default", "compile_max": "max-autotune-no-cudagraphs"}
FAST = ("cuda", "triton")
REFS = ("eager", "compile", "compile_max", "official")
IMPL_ORDER = FAST + REFS
CASE_OP = {"channel_mask": "channel_adversarial_dropout_mask", "element_mask": "adversarial_dropout_mask"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}


def in_layout(inputs: Sequence[torch.Tensor], layout: str) -> List[torch.Tensor]:
    if layout == "nchw":
        return list(inputs)
    return [x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(x.requires_grad)
            if x.dim() == 4 else x for x in inputs]


def impl_fn(case: str, impl: str) -> Optional[Callable]:
    """The callable an impl runs (None: not available for this case)."""
    c = CASES[case]
    if impl in G.UDA_IMPLS:
        return G.with_backend(c.fused, G.UDA_IMPLS[impl])
    if impl == "eager":
        return c.ref
    if impl in COMPILE_MODES:
        return torch.compile(c.ref, mode=COMPILE_MODES[impl])
    if impl == "official":
        return OFFICIAL.get(case)
    raise ValueError(impl)


def input_sets(case: str, shape, dtype: torch.dtype, layout: str, device: torch.device) -> List[list]:
    """The inputs of a case and enough copies of them to rotate among (gpu_common.rotation_count)."""
    first = in_layout(CASES[case].make(device, shape=shape, dtype=dtype), layout)
    set_bytes = sum(x.numel() * x.element_size() for x in first)
    return [first] + [in_layout([x.detach().clone().requires_grad_(x.requires_grad) for x in first], layout)
                      for _ in range(G.rotation_count(set_bytes) - 1)]


def measure(case: str, impl: str, mode: str, sets: List[list], device: torch.device, reps: int,
            graphs: bool) -> Dict[str, object]:
    """One impl of a case, rotating among the input sets: ms (median, p10, p90), graph ms, peak MiB, bytes."""
    fn = impl_fn(case, impl)
    if fn is None:
        return {}
    if impl in COMPILE_MODES:
        torch._dynamo.reset()
    steps = [step(fn, s, mode) for s in sets]
    out: Dict[str, object] = {"sets": len(sets)}
    try:
        out.update(G.time_rotated(steps, device, reps=reps))
    except Exception as exc:  # noqa: BLE001  (a backend without this dtype/device: recorded, not fatal)
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    if graphs:
        out["graph_ms"] = G.time_graph(steps, device, reps=reps)
    out["peak_mib"] = G.peak_device_bytes(steps[0], device) / 2**20
    out["bytes"] = bytes_moved(CASES[case], sets[0], mode) if impl in FAST or impl == "eager" else None
    return out


def run(ops: Sequence[str], shapes, dtypes: Sequence[str], layouts: Sequence[str], modes: Sequence[str],
        impls: Sequence[str], device: torch.device, reps: int, graphs: bool = True,
        budget_s: Optional[float] = None, log=print, on_row: Optional[Callable[[List[dict]], None]] = None
        ) -> List[dict]:
    """Measure every (op, shape, dtype, layout, mode) for every impl; rows as in the module docstring. Past
    `budget_s` seconds the torch.compile impls are skipped (compilation dominates the time of a run)."""
    t0 = time.time()
    copy = G.copy_bandwidth_gbps(device)
    rows = []
    # the first shape, dtype and layout for every op first: what a time budget leaves out comes last
    # (a layout other than NCHW only for 4-D shapes: a 2-D (N, C) shape has one)
    configs = [(op, shape, dt, lay, mode) for shape in shapes for dt in dtypes for lay in layouts
               for op in ops if op in LOSSES for mode in modes if lay == "nchw" or len(shape) == 4]
    configs += [(op, None, dt, "nchw", "fwd") for op in ops if op in MASKS for dt in dtypes]
    for op, shape, dt, lay, mode in configs:
        row = {"op": op, "shape": list(shape) if shape else "dta", "dtype": dt, "layout": lay, "mode": mode,
               "copy_gbps": copy}
        sets = input_sets(op, shape, DTYPES[dt], lay, device)
        # the gradients a fwd+bwd step must write: the floor of its peak memory above the inputs
        row["grads_mib"] = sum(x.numel() * x.element_size() for x in sets[0]
                               if x.requires_grad and mode == "fwdbwd") / 2**20
        for impl in impls:
            if impl in COMPILE_MODES and budget_s is not None and time.time() - t0 > budget_s:
                row[f"{impl}_skipped"] = "time budget"
                continue
            r = measure(op, impl, mode, sets, device, reps, graphs)
            for k, v in r.items():
                row[f"{impl}_{k}"] = v
        del sets
        finish_row(row)
        rows.append(row)
        if on_row is not None:  # e.g. save what is measured so far (a killed run keeps its rows)
            on_row(rows)
        log(f"[{time.time() - t0:6.0f}s] {op} {row['shape']} {dt} {lay} {mode}: " + ", ".join(
            f"{i} {row[f'{i}_ms']:.3f}" for i in impls if isinstance(row.get(f"{i}_ms"), float)))
    return rows


def finish_row(row: dict) -> None:
    """Derived columns: GB/s and fraction of copy bandwidth (uda_ops impls), speed-ups over each reference."""
    moved = row.get("eager_bytes") or next((row.get(f"{i}_bytes") for i in FAST if row.get(f"{i}_bytes")), None)
    row["bytes"] = moved
    for impl in FAST:
        ms = row.get(f"{impl}_ms")
        if not isinstance(ms, float):
            continue
        best = min(x for x in (ms, row.get(f"{impl}_graph_ms")) if isinstance(x, float))
        if moved:
            row[f"{impl}_gbps"] = moved / (best * 1e-3) / 1e9
            if row.get("copy_gbps"):
                row[f"{impl}_frac_copy"] = row[f"{impl}_gbps"] / row["copy_gbps"]
        for ref in REFS:
            rms = row.get(f"{ref}_ms")
            if isinstance(rms, float):
                row[f"{impl}_x_{ref}"] = rms / ms


def auto_cuda_table(rows: List[dict], info: Optional[dict] = None) -> dict:
    """uda_ops' AUTO_CUDA table (uda_ops/_ops.py load_auto_cuda) from measured rows: per (op, dtype) the
    backend with the lower geometric mean of ms over the measured shapes and layouts (fwd+bwd for the losses,
    fwd for the masks), among rows where both the CUDA and the Triton kernel ran. The times are the CUDA-graph
    replays where a row has both (device time: in a training step the launches queue behind the network's own
    GPU work, so the host's per-call cost overlaps), else the per-call times. On an H200 (2026-11-29) the two
    disagree: per call the Triton path spends ~0.7-0.9 ms on the host per fwd+bwd, more than its kernels.
    Where both class layouts were measured for an (op, dtype) ("planes": NCHW; "rows": channels_last or a 2-D
    (N, C) shape), its choice is per layout ({"planes": ..., "rows": ...}); else one choice for both."""
    ratios: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    for r in rows:
        graphs = isinstance(r.get("cuda_graph_ms"), float) and isinstance(r.get("triton_graph_ms"), float)
        c, t = (r.get("cuda_graph_ms"), r.get("triton_graph_ms")) if graphs else (r.get("cuda_ms"), r.get("triton_ms"))
        if isinstance(c, float) and isinstance(t, float) and r["mode"] == ("fwd" if r["op"] in MASKS else "fwdbwd"):
            name = str(DTYPES[r["dtype"]]).replace("torch.", "")
            layout = "rows" if r.get("layout") == "channels_last" or len(r.get("shape") or ()) == 2 else "planes"
            by = ratios.setdefault(CASE_OP.get(r["op"], r["op"]), {}).setdefault(name, {})
            by.setdefault(layout, []).append(t / c)

    def gmean(v: List[float]) -> float:
        return math.exp(sum(map(math.log, v)) / len(v))

    def pick(g: float) -> str:
        return "triton" if g < 1.0 else "cuda"

    geo = {op: {dt: gmean([x for v in lay.values() for x in v]) for dt, lay in by.items()} for op, by in ratios.items()}
    by_layout = {op: {dt: {k: gmean(v) for k, v in lay.items()} for dt, lay in by.items()} for op, by in ratios.items()}
    choices = {op: {dt: ({k: pick(g) for k, g in by_layout[op][dt].items()} if len(by_layout[op][dt]) > 1
                         else pick(geo[op][dt])) for dt in by} for op, by in ratios.items()}
    return {"source": "benchmarks/gpu_summary.py", "machine": info or {},
            "triton_over_cuda_ms": geo, "triton_over_cuda_ms_by_layout": by_layout, "choices": choices}


def table(rows: List[dict], markdown: bool = False) -> str:
    present = [i for i in IMPL_ORDER if any(isinstance(r.get(f"{i}_ms"), float) for r in rows)]
    fast = [i for i in FAST if i in present]
    refs = [i for i in REFS if i in present]
    head = ["op", "shape", "dtype", "layout", "mode"] + [f"{i} ms" for i in present]
    head += [f"{i} graph ms" for i in fast] + [f"{i} %copy" for i in fast]
    head += [f"{i} x{r}" for i in fast for r in refs] + ["peak MiB " + "/".join(present), "grads MiB"]
    lines = []
    for r in rows:
        shape = "x".join(map(str, r["shape"])) if isinstance(r["shape"], list) else r["shape"]
        line = [r["op"], shape, r["dtype"], r["layout"], r["mode"]]
        line += [fmt(r.get(f"{i}_ms"), ".3f") if f"{i}_error" not in r else "err" for i in present]
        line += [fmt(r.get(f"{i}_graph_ms"), ".3f") for i in fast]
        line += [fmt(100 * r[f"{i}_frac_copy"] if f"{i}_frac_copy" in r else None, ".0f") for i in fast]
        line += [fmt(r.get(f"{i}_x_{ref}"), ".2f") for i in fast for ref in refs]
        line.append("/".join(fmt(r.get(f"{i}_peak_mib"), ".0f") for i in present))
        line.append(fmt(r.get("grads_mib"), ".0f"))
        lines.append(line)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(out + ["| " + " | ".join(l) + " |" for l in lines])
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)] if lines else []
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    return "\n".join(out + ["  ".join(c.ljust(w) for c, w in zip(l, widths)) for l in lines])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default=",".join(LOSSES + MASKS))
    ap.add_argument("--shapes", default=";".join(",".join(map(str, s)) for s in G.GPU_SHAPES + G.CLS_SHAPES),
                    help="';'-separated logits shapes")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--modes", default="fwdbwd", help="fwdbwd and/or fwd")
    ap.add_argument("--impls", default=",".join(IMPL_ORDER))
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--no-graphs", action="store_true")
    ap.add_argument("--budget-s", type=float, default=None, help="skip torch.compile impls after this long")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU, shape 2,5,8,12, 3 reps, no torch.compile: checks the code path without a GPU")
    ap.add_argument("--from", dest="src", help="print the rows of an earlier --json/--save file")
    ap.add_argument("--json", help="write machine info + rows here")
    ap.add_argument("--markdown-out", help="write the markdown table here")
    ap.add_argument("--save", action="store_true", help="keep JSON + markdown in benchmarks/results/")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--auto-cuda-out", help="write uda_ops' AUTO_CUDA table (JSON) from this run here")
    args = ap.parse_args(argv)

    if args.src:
        with open(args.src) as f:
            data = json.load(f)
        print(table(data["rows"], args.markdown))
        if args.auto_cuda_out:
            with open(args.auto_cuda_out, "w") as f:
                json.dump(auto_cuda_table(data["rows"], data.get("machine")), f, indent=1)
        return 0
    impls = args.impls.split(",")
    if args.dry_run:
        device, shapes, reps = torch.device("cpu"), [(2, 5, 8, 12)], 3
        impls = [i for i in impls if i not in COMPILE_MODES and i != "triton"]
    else:
        device = G.bench_device()
        if device.type == "cuda" and not torch.cuda.is_available():
            print("gpu_summary.py: needs a CUDA device (or --dry-run)", file=sys.stderr)
            return 2
        shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";")]
        reps = args.reps
        if "triton" in impls and not (device.type == "cuda" and G.triton_available()):
            impls.remove("triton")
    info = G.machine_info(device)

    def partial(rows_so_far):
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": info, "rows": rows_so_far, "partial": True}, f, indent=1)

    rows = run(args.ops.split(","), shapes, args.dtypes.split(","), args.layouts.split(","),
               args.modes.split(","), impls, device, reps, graphs=not args.no_graphs, budget_s=args.budget_s,
               on_row=partial)
    info["copy_gbps"] = rows[0]["copy_gbps"] if rows else None
    info.update(method="events, median, rotated inputs, graph replays", reps=reps, rotate_bytes=G.ROTATE_BYTES)
    print(f"\n{info.get('device')}, torch {info.get('torch')}, CUDA {info.get('cuda')}, triton {info.get('triton')}, "
          f"{info.get('date')}; copy bandwidth {fmt(info.get('copy_gbps'), '.0f')} GB/s")
    md = table(rows, True)
    print(table(rows, args.markdown))
    outs = []
    if args.save:
        stem = re.sub(r"[^A-Za-z0-9]+", "-", str(info.get("device", "gpu"))).strip("-").lower()
        base = os.path.join(HERE, "results", f"gpu-{stem}-{info.get('date', 'undated')}")
        os.makedirs(os.path.dirname(base), exist_ok=True)
        outs = [(base + ".json", None), (base + ".md", None)]
    if args.json:
        outs.append((args.json, None))
    if args.markdown_out:
        outs.append((args.markdown_out, None))
    if args.auto_cuda_out:
        with open(args.auto_cuda_out, "w") as f:
            json.dump(auto_cuda_table(rows, info), f, indent=1)
        print(f"wrote {args.auto_cuda_out}")
    for path, _ in outs:
        with open(path, "w") as f:
            if path.endswith(".md"):
                f.write(f"{info.get('device')}, torch {info.get('torch')}, CUDA {info.get('cuda')}, "
                        f"triton {info.get('triton')}, {info.get('date')}; copy "
                        f"{fmt(info.get('copy_gbps'), '.0f')} GB/s\n\n{md}\n")
            else:
                json.dump({"machine": info, "rows": rows}, f, indent=1)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
