"""Compare segmentation UDA methods on the synthetic shift over seeds: mean ± std target mIoU, images.

    python -m models.segmentation.compare --methods source_only,minent,advent,clan --seeds 3 --out demo_out/seg

Runs ``--jobs`` trainings at a time (separate processes, ``--threads`` each), then prints the table
(markdown), writes ``results.json`` / ``table.md`` and ``panels.png`` (for the first seed: input | ground
truth | each method's prediction and entropy map, as ADVENT's Fig. 1 and 3).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time

import torch

from .train import METHODS, make_config, run

LABELS = {"source_only": "source only", "minent": "MinEnt", "advent": "AdvEnt", "clan": "CLAN", "adr": "ADR",
          "dta": "DTA"}


def _one(job):
    method, seed, iters, out, threads, extra = job
    torch.set_num_threads(threads)
    cfg = make_config(method, "synthetic", seed=seed, iters=iters, out=out, progress=False, threads=threads,
                      **extra)
    res = run(cfg)
    res.pop("trainer", None)
    return {k: res[k] for k in ("method", "seed", "miou", "pixel_acc", "iou", "train_time_s")}


def table(results, methods, names):
    rows = ["| method | mIoU (%) mean ± std | per seed | " + " | ".join(names) + " |",
            "|---|---|---|" + "---|" * len(names)]
    summary = {}
    for m in methods:
        rs = sorted((r for r in results if r["method"] == m), key=lambda r: r["seed"])
        v = [100 * r["miou"] for r in rs]
        mean, std = statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)
        per_cls = [statistics.mean(100 * r["iou"][n] for r in rs) for n in names]
        summary[m] = {"mean": mean, "std": std, "per_seed": v}
        rows.append(f"| {LABELS.get(m, m)} | {mean:.1f} ± {std:.1f} | " + ", ".join(f"{x:.1f}" for x in v) + " | "
                    + " | ".join(f"{x:.1f}" for x in per_cls) + " |")
    return "\n".join(rows), summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="source_only,minent,advent,clan")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--iters", type=int, default=None, help="iterations per run (task default if omitted)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="demo_out/segmentation")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra config overrides for every run, e.g. lambda_ent=0.1")
    a = p.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m}")
    extra = {}
    for kv in a.set:
        k, v = kv.split("=", 1)
        extra[k] = type(getattr(make_config(), k))(v) if not isinstance(getattr(make_config(), k), bool) \
            else v.lower() in ("1", "true")
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    jobs = [(m, s, a.iters, os.path.join(a.out, f"{m}_seed{s}"), a.threads, extra) for s in seeds for m in methods]
    t0 = time.time()
    print(f"{len(jobs)} runs ({', '.join(methods)} x seeds {seeds}), {a.jobs} at a time", flush=True)
    if a.jobs > 1:
        with mp.get_context("spawn").Pool(a.jobs) as pool:
            results = pool.map(_one, jobs, chunksize=1)
    else:
        results = [_one(j) for j in jobs]
    wall = time.time() - t0
    from .synthetic import SYN_CLASSES, SYN_PALETTE, SyntheticShift
    md, summary = table(results, methods, SYN_CLASSES)
    cfg0 = make_config(methods[0], "synthetic", iters=a.iters)
    header = (f"Synthetic shift ({cfg0.crop[0]}x{cfg0.crop[1]}, {cfg0.classes} classes), {cfg0.iters} iterations x "
              f"batch {cfg0.batch}, seeds {seeds}; target-val mIoU over {cfg0.n_val} images; wall {wall:.0f}s")
    print(header)
    print(md, flush=True)
    base = summary.get("source_only")
    if base:
        for m in methods:
            if m != "source_only":
                wins = sum(x > y for x, y in zip(summary[m]["per_seed"], base["per_seed"]))
                print(f"{LABELS.get(m, m)} vs source only: {summary[m]['mean'] - base['mean']:+.1f} mIoU, "
                      f"better on {wins}/{len(seeds)} seeds")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"runs": results, "summary": summary, "wall_s": wall, "header": header}, f, indent=1)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(header + "\n\n" + md + "\n")
    # panels: first seed, every method, the first 6 target-val images
    from .metrics import save_panels
    from .networks import build_segmenter
    from .train import IMAGENET_MEAN, IMAGENET_STD
    nets = {}
    for m in methods:
        ck = torch.load(os.path.join(a.out, f"{m}_seed{seeds[0]}", "checkpoint.pt"), map_location="cpu",
                        weights_only=False)
        c = ck["config"]
        net = build_segmenter(len(SYN_CLASSES), c["size"], aux=c["multi_level"] and m not in ("adr", "dta"),
                              heads=2 if m == "clan" else 1, dropout_head=m == "adr", norm=c["norm"],
                              **{k: c[k] for k in ("depth", "base") if c[k]})
        net.load_state_dict(ck["model"])
        nets[LABELS.get(m, m)] = net
    val = SyntheticShift("target", "val", 6, tuple(cfg0.crop))
    path = save_panels(nets, val.images, val.labels, SYN_PALETTE, os.path.join(a.out, "panels.png"),
                       torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    print(f"images: {path} (columns: input | ground truth | " + " | ".join(f"{n} prediction, entropy" for n in nets)
          + f"); per-run curves and samples under {a.out}/<method>_seed<k>/")
    return summary


if __name__ == "__main__":
    main()
