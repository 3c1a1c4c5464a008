"""Compare methods on one task over seeds: the table (mean ± std of the task's main metric, in %) and JSON.

    python -m models.compare --task moons --methods source_only,adr,dta --seeds 5 --json demo_out/moons.json
    python -m models.compare --task synthetic --methods source_only,minent,advent,clan,i2i --seeds 0,1,2 \\
        --json demo_out/streets.json --out demo_out/streets

``--seeds K`` runs seeds 0..K-1 (no selection); ``--seeds 3,7`` the listed ones. Runs go to ``--workers``
processes (default 2), each single-threaded; every run is reproducible from its seed. JSON:
``{"task", "metric": "target_acc"|"miou", "results": {method: {"per_seed", "seeds", "mean", "std",
"final": [per-seed final dicts]}}}``. With ``--out``, each run also writes its own folder
``<out>/<method>_s<seed>`` (config.json, metrics.json, checkpoint.pt, curves.png).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time

import torch

from . import tasks
from .train_io import parse_sets


def parse_seeds(s: str):
    return list(range(int(s))) if "," not in s and s.strip().isdigit() else [int(x) for x in s.split(",") if x]


def _one(job):
    task, method, seed, iters, sets, out, data_root = job
    torch.set_num_threads(1)
    run_out = os.path.join(out, f"{method}_s{seed}") if out else None
    final, _ = tasks.run(task, method, seed, iters=iters, out=run_out, progress=False, sets=sets,
                         data_root=data_root)
    return method, seed, final


def compare(task, methods, seeds, iters=None, sets=None, out=None, workers=2, data_root=None, progress=True):
    spec = tasks.get(task)
    jobs = [(task, m, s, iters, sets or {}, out, data_root) for m in methods for s in seeds]
    t0 = time.time()
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            it = pool.imap_unordered(_one, jobs)
            rows = list(_bar(it, len(jobs), task, progress))
    else:
        rows = list(_bar(map(_one, jobs), len(jobs), task, progress))
    results = {}
    for m in methods:
        got = sorted((s, f) for mm, s, f in rows if mm == m)
        vals = [f[spec.metric] for _, f in got]
        results[m] = {"per_seed": vals, "seeds": [s for s, _ in got], "mean": statistics.mean(vals),
                      "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "final": [f for _, f in got]}
    return {"task": task, "metric": spec.metric, "results": results, "wall_seconds": time.time() - t0}


def _bar(it, total, task, progress):
    if not progress:
        return it
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return it
    return tqdm(it, total=total, desc=f"{task} runs", file=sys.stderr)


def table(res: dict) -> str:
    name = {"target_acc": "target acc. (%)", "miou": "target mIoU (%)"}[res["metric"]]
    lines = [f"| method | {name} mean ± std | per seed |", "| --- | --- | --- |"]
    for m, r in res["results"].items():
        lines.append(f"| {m} | {r['mean']:.1f} ± {r['std']:.1f} | " + " ".join(f"{v:.1f}" for v in r["per_seed"])
                     + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="moons")
    ap.add_argument("--methods", default="source_only,adr,dta")
    ap.add_argument("--seeds", default="3", help="K (seeds 0..K-1) or a list S1,S2,...")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--json", default=None, help="where to write the results JSON")
    ap.add_argument("--out", default=None, help="a folder for every run's outputs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a trainer Config field")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if not parse_seeds(args.seeds):
        raise SystemExit("--seeds: K >= 1 or a list S1,S2,...")
    res = compare(args.task, methods, parse_seeds(args.seeds), iters=args.iters, sets=parse_sets(args.set),
                  out=args.out, workers=args.workers, data_root=args.data_root)
    print(f"\n{args.task}: {res['metric']} over seeds {res['results'][methods[0]]['seeds']} "
          f"({res['wall_seconds']:.0f} s wall)")
    print(table(res))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {args.json}")
    return res


if __name__ == "__main__":
    main()
