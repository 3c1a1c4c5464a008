"""Run the GPU benchmark suite (benchmarks/test_bench_gpu.py) or read a saved run, and print each uda_ops
backend (CUDA kernels, Triton) beside eager and torch.compile of the reference: ms, speed-ups, achieved GB/s
and its fraction of the device's measured copy bandwidth, peak extra memory; plus the training step.

    python benchmarks/gpu_summary.py --save           # run, print, keep JSON + plot in benchmarks/results/
    python benchmarks/gpu_summary.py -k entropy --markdown
    python benchmarks/gpu_summary.py --from raw.json  # summarise an earlier pytest-benchmark JSON
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from summary import fmt, run_suite  # noqa: E402

IMPL_ORDER = ("cuda", "triton", "eager", "compile", "reference", "native")
FAST = ("cuda", "triton")


def summarise(raw: dict) -> list:
    by = {}
    for b in raw["benchmarks"]:
        e = b["extra_info"]
        key = (e["case"], tuple(e["shape"]), e["dtype"], e["mode"])
        by.setdefault(key, {})[e["impl"]] = dict(e, median_ms=b["stats"]["median"] * 1e3)
    rows = []
    for (case, shape, dtype, mode), impls in sorted(by.items()):
        row = {"op": case, "shape": list(shape), "dtype": dtype, "mode": mode}
        for impl, r in impls.items():
            row[f"{impl}_ms"] = r["median_ms"]
            row[f"{impl}_peak_mib"] = r.get("peak_bytes", 0) / 2**20
            if r.get("bytes"):
                gbps = r["bytes"] / (r["median_ms"] * 1e-3) / 1e9
                row[f"{impl}_gbps"] = gbps
                if r.get("copy_gbps"):
                    row[f"{impl}_frac_copy"] = gbps / r["copy_gbps"]
                    row["copy_gbps"] = r["copy_gbps"]
        base = "reference" if case == "train_step" else "eager"
        for impl in impls:
            for ref in (base, "compile"):
                if ref in impls and impl not in (ref, "eager", "reference"):
                    row[f"{impl}_x_{ref}"] = impls[ref]["median_ms"] / impls[impl]["median_ms"]
        rows.append(row)
    return rows


def table(rows: list, markdown: bool) -> str:
    present = [i for i in IMPL_ORDER if any(f"{i}_ms" in r for r in rows)]
    head = ["op", "shape", "dtype", "mode"] + [f"{i} ms" for i in present]
    head += [f"{i} x{ref}" for i in FAST if i in present for ref in ("eager", "compile")]
    head += [f"{i} GB/s (%copy)" for i in FAST if i in present] + ["peak MiB " + "/".join(present)]
    lines = []
    for r in rows:
        line = [r["op"], "x".join(map(str, r["shape"])), r["dtype"], r["mode"]]
        line += [fmt(r.get(f"{i}_ms"), ".3f") for i in present]
        line += [fmt(r.get(f"{i}_x_{ref}") or (r.get(f"{i}_x_reference") if ref == "eager" else None), ".2f")
                 for i in FAST if i in present for ref in ("eager", "compile")]
        line += [f"{fmt(r.get(f'{i}_gbps'), '.0f')} ({fmt(100 * r[f'{i}_frac_copy'] if f'{i}_frac_copy' in r else None, '.0f')}%)"
                 for i in FAST if i in present]
        line.append("/".join(fmt(r.get(f"{i}_peak_mib"), ".0f") for i in present))
        lines.append(line)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(out + ["| " + " | ".join(l) + " |" for l in lines])
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)] if lines else []
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    return "\n".join(out + ["  ".join(c.ljust(w) for c, w in zip(l, widths)) for l in lines])


def plot(rows: list, path: str, title: str) -> None:
    """Speed-up of each uda_ops backend over eager and torch.compile, one panel per dtype x mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dtype"], r["mode"]) for r in rows if r["op"] != "train_step"})
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 3.2 * len(panels)), squeeze=False)
    series = [(i, ref) for i in FAST for ref in ("eager", "compile")]
    for ax, (dtype, mode) in zip(axes[:, 0], panels):
        sel = [r for r in rows if r["dtype"] == dtype and r["mode"] == mode and r["op"] != "train_step"]
        labels = [f"{r['op']}\n{'x'.join(map(str, r['shape']))}" for r in sel]
        present = [s for s in series if any(f"{s[0]}_x_{s[1]}" in r for r in sel)]
        width = 0.8 / max(len(present), 1)
        for k, (impl, ref) in enumerate(present):
            vals = [r.get(f"{impl}_x_{ref}", 0.0) for r in sel]
            ax.bar([x + k * width for x in range(len(sel))], vals, width, label=f"{impl} vs {ref}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([x + width * (len(present) - 1) / 2 for x in range(len(sel))], labels, fontsize=6)
        ax.set_ylabel("speed-up")
        ax.set_title(f"{dtype}, {mode}")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", help="summarise this pytest-benchmark JSON instead of running")
    ap.add_argument("-k", dest="keyword", help="pytest -k expression to select cases")
    ap.add_argument("--json", help="write the summary (rows + machine info) to this file")
    ap.add_argument("--save", action="store_true", help="keep summary, raw run and plot in benchmarks/results/")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()

    raw = json.load(open(args.src)) if args.src else run_suite(args.keyword, "test_bench_gpu.py")
    import torch

    from gpu_common import bench_device, copy_bandwidth_gbps, machine_info

    dev = bench_device()
    if dev.type == "cuda" and not torch.cuda.is_available() and not args.src:
        sys.exit("gpu_summary.py: needs a CUDA device")
    info = machine_info(dev) if (dev.type != "cuda" or torch.cuda.is_available()) else {}
    if not args.src and info:
        info["copy_gbps"] = copy_bandwidth_gbps(dev)
    rows = summarise(raw)
    print(f"\n{info.get('device')}, torch {info.get('torch')}, CUDA {info.get('cuda')}, triton {info.get('triton')}, "
          f"{info.get('date')}; copy bandwidth {fmt(info.get('copy_gbps'), '.0f')} GB/s")
    print(table(rows, args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)
    if args.save:
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9]+", "-", str(info.get("device", "gpu"))).strip("-").lower()
        base = os.path.join(HERE, "results", f"gpu-{stem}-{info.get('date', 'undated')}")
        with open(base + ".json", "w") as f:
            json.dump({"machine": info, "rows": rows, "raw": None if args.src else raw}, f, indent=1)
        plot(rows, base + ".png", f"uda_ops on {info.get('device')} ({info.get('date')})")
        print(f"saved {os.path.relpath(base, ROOT)}.json and .png")


if __name__ == "__main__":
    main()
