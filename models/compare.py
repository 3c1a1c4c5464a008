"""Compare methods over seeds: target accuracy as mean +- std, JSON and a plot.

    python -m models.compare --task moons --methods source_only,adr,dta --seeds 5
    python -m models.compare --task digits --methods source_only,adr,dta,i2i --seeds 3

Seeds are 0..N-1 (no selection). Runs go to --jobs worker processes (default 2), each single-threaded,
and every run is bitwise reproducible from its seed. Writes <out>/compare_<task>.json (per-seed final
numbers, histories and configs) and <out>/compare_<task>.png (target accuracy over training, mean and
band of one std per method). On 2-D tasks (two moons) also <out>/compare_<task>_boundaries.png: each
method's decision boundary after training on seed 0, over the source and target samples (ADR's Fig. 3).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from .classification.trainers import make_config, run
from .train import parse_sets


GRID = 150  # decision-boundary plot resolution


def _boundary(trainer):
    """P(class 1) of the trained network on a GRID x GRID lattice around a 2-D task's samples (or None)."""
    t = trainer.task
    if t.input_shape != (2,) or t.num_classes != 2:
        return None
    pts = torch.cat([t.xs, t.xt_test])
    lo, hi = pts.min(0).values - 0.5, pts.max(0).values + 0.5
    xx, yy = torch.meshgrid(torch.linspace(lo[0], hi[0], GRID), torch.linspace(lo[1], hi[1], GRID), indexing="xy")
    trainer.net.eval()
    with torch.no_grad():
        p1 = torch.softmax(trainer.net(torch.stack([xx.ravel(), yy.ravel()], 1)), 1)[:, 1].reshape(GRID, GRID)
    return {"extent": [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])], "p1": p1}


def _one(job):
    method, task, seed, steps, sets, data_root = job
    torch.set_num_threads(1)
    t0 = time.process_time()
    metrics, trainer = run(make_config(method, task, seed=seed, steps=steps, **sets), data_root=data_root)
    metrics["cpu_seconds"] = time.process_time() - t0
    return method, seed, metrics, (_boundary(trainer) if seed == 0 else None)


def _stats(v):
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def plot(results: dict, task: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, runs in results.items():
        steps = [h["step"] for h in runs[0]["history"]]
        curves = torch.tensor([[100 * h["target_acc"] for h in r["history"]] for r in runs])
        m = curves.mean(0)
        s = curves.std(0) if len(runs) > 1 else torch.zeros_like(m)
        ax.plot(steps, m, label=f"{method} ({m[-1]:.1f}%)")
        ax.fill_between(steps, m - s, m + s, alpha=.2)
    ax.set_xlabel("step"), ax.set_ylabel("target accuracy (%)"), ax.grid(alpha=.3), ax.legend()
    ax.set_title(f"{task}: target accuracy, mean and std over {len(next(iter(results.values())))} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_boundaries(boundaries: dict, task, accs: dict, path: str) -> None:
    """One panel per method: P(class 1) of seed 0's network (blue 0 .. red 1), the 0.5 contour, source (light
    dots) and target test samples (dark crosses) coloured by their true class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    src_cmap = ListedColormap(["#6baed6", "#fb6a4a"])  # class 0 blue, class 1 red; target darker
    tgt_cmap = ListedColormap(["#08306b", "#67000d"])
    fig, axes = plt.subplots(1, len(boundaries), figsize=(4 * len(boundaries), 3.8), squeeze=False)
    for ax, (method, b) in zip(axes[0], boundaries.items()):
        ax.imshow(b["p1"].numpy(), origin="lower", extent=b["extent"], cmap="coolwarm", vmin=0, vmax=1,
                  alpha=.35, aspect="auto")
        x0, x1, y0, y1 = b["extent"]
        ax.contour(torch.linspace(x0, x1, GRID), torch.linspace(y0, y1, GRID), b["p1"], levels=[.5], colors="k")
        ax.scatter(*task.xs.T, c=task.ys, cmap=src_cmap, s=3, vmin=0, vmax=1, label="source")
        ax.scatter(*task.xt_test.T, c=task.yt_test, cmap=tgt_cmap, s=7, marker="x", linewidths=.7, vmin=0,
                   vmax=1, label="target")
        ax.set_title(f"{method}: target {accs[method]:.1f}%")
        ax.set_xticks([]), ax.set_yticks([])
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{task.name}, seed 0: decision boundaries (black: P = 0.5)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="moons")
    ap.add_argument("--methods", default="source_only,adr,dta")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a Config field (all methods)")
    args = ap.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    sets = parse_sets(args.set)
    for m in methods:
        print("config", m + ":", json.dumps(make_config(m, args.task, steps=args.steps, **sets).to_dict(),
                                            sort_keys=True))
    jobs = [(m, args.task, s, args.steps, sets, args.data_root) for m in methods for s in range(args.seeds)]
    t0 = time.time()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda it, **_: it  # noqa: E731
    done = []
    if args.jobs > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for r in tqdm(pool.imap_unordered(_one, jobs), total=len(jobs), desc=f"{args.task} runs"):
                done.append(r)
    else:
        done = [_one(j) for j in tqdm(jobs, desc=f"{args.task} runs")]
    wall = time.time() - t0
    boundaries = {m: b for m in methods for mm, s, _, b in done if mm == m and b is not None}
    done = [(m, s, r) for m, s, r, _ in done]
    results = {m: [r for mm, s, r in sorted(done, key=lambda x: x[1]) if mm == m] for m in methods}

    print(f"\n{args.task}: target accuracy over seeds 0..{args.seeds - 1} "
          f"({wall:.0f} s wall, {sum(r['cpu_seconds'] for *_, r in done):.0f} s CPU)")
    print(f"| method | target acc. (mean ± std) | per seed | extra |")
    print("| --- | --- | --- | --- |")
    summary = {}
    for m in methods:
        accs = [100 * r["final"]["target_acc"] for r in results[m]]
        mean, std = _stats(accs)
        summary[m] = {"mean": mean, "std": std, "per_seed": accs}
        extra = ""
        if "target_acc_c2" in results[m][0]["final"]:
            c2 = [100 * r["final"]["target_acc_c2"] for r in results[m]]
            summary[m]["c2_mean"], summary[m]["c2_std"] = _stats(c2)
            extra = f"C' {summary[m]['c2_mean']:.1f} ± {summary[m]['c2_std']:.1f}"
        print(f"| {m} | {mean:.1f} ± {std:.1f} | {' '.join(f'{a:.1f}' for a in accs)} | {extra} |")
    if "source_only" in summary:
        base = summary["source_only"]["mean"]
        for m in methods:
            if m != "source_only":
                print(f"{m}: {summary[m]['mean'] - base:+.1f} points over source-only")
    os.makedirs(args.out, exist_ok=True)
    safe_task = "".join(ch if ch.isalnum() else "_" for ch in args.task)
    with open(os.path.join(args.out, f"compare_{safe_task}.json"), "w") as f:
        json.dump({"task": args.task, "seeds": args.seeds, "wall_seconds": wall, "summary": summary,
                   "runs": results}, f, indent=1)
    plot(results, args.task, os.path.join(args.out, f"compare_{safe_task}.png"))
    print(f"wrote {args.out}/compare_{safe_task}.json and .png")
    if len(boundaries) == len(methods):
        from .classification.data import get_task

        path = os.path.join(args.out, f"compare_{safe_task}_boundaries.png")
        accs = {m: 100 * results[m][0]["final"]["target_acc"] for m in methods}
        plot_boundaries(boundaries, get_task(args.task, 0, args.data_root), accs, path)
        print(f"wrote {path}")
    return summary


if __name__ == "__main__":
    main()
