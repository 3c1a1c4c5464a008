"""Train one classification-adaptation method on one task.

    python -m models.train --method dta --task moons
    python -m models.train --method adr --task digits --seed 1 --steps 400 --out runs/adr_digits
    python -m models.train --method i2i --task "mnist->usps" --data-root ~/data   # files you already have

Methods: source_only, adr, dta, i2i. Tasks: moons (ADR Sec. 4.1), digits (scikit-learn 8x8 digits, one half ->
the other half rotated by 30 degrees), or SRC->TGT with mnist, usps, svhn, office31:A|D|W read from --data-root
(nothing is downloaded). Prints the configuration, shows a progress bar, and writes to --out: the final
checkpoint (checkpoint.pt), metrics.json (config, history of target accuracy and losses, final numbers) and
metrics.png (target accuracy and the adaptation losses over training). Any Config field can be set with
--set name=value (e.g. --set lambda_vat=0 --set delta_c=0.02).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import random

import torch

from .classification.trainers import METHODS, Config, make_config, run


def parse_sets(items) -> dict:
    out = {}
    for item in items or []:
        k, _, v = item.partition("=")
        if k not in Config.__dataclass_fields__:
            raise SystemExit(f"--set: unknown config field {k!r}")
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def plot_history(metrics: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = metrics["history"]
    steps = [h["step"] for h in hist]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in ("target_acc", "target_acc_c2", "source_acc"):
        if key in hist[0]:
            a1.plot(steps, [100 * h[key] for h in hist], label=key)
    a1.set_xlabel("step"), a1.set_ylabel("accuracy (%)"), a1.legend(), a1.grid(alpha=.3)
    skip = {"step", "target_acc", "target_acc_c2", "source_acc"}
    for key in [k for k in hist[0] if k not in skip]:
        a2.plot(steps, [h.get(key, float("nan")) for h in hist], label=key)
    # symlog: terms of very different size (DTA's KL terms ~1e-2 beside CE ~1) and sign (critics) stay visible
    a2.set_yscale("symlog", linthresh=1e-3)
    a2.set_xlabel("step"), a2.set_ylabel("loss (interval mean, symlog)"), a2.legend(fontsize=7), a2.grid(alpha=.3)
    c = metrics["config"]
    fig.suptitle(f"{c['method']} on {c['task']} (seed {c['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=METHODS, default="dta")
    ap.add_argument("--task", default="moons")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: per task)")
    ap.add_argument("--data-root", default=None, help="folder with mnist/, usps/, svhn/, office31/")
    ap.add_argument("--out", default=None, help="output folder (default runs/<method>_<task>_s<seed>)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (tiny nets: 1 is fastest)")
    ap.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a Config field")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    cfg = make_config(args.method, args.task, seed=args.seed, steps=args.steps, **parse_sets(args.set))
    safe_task = "".join(ch if ch.isalnum() else "_" for ch in args.task)
    out = args.out or os.path.join("runs", f"{args.method}_{safe_task}_s{args.seed}")
    os.makedirs(out, exist_ok=True)
    print("config:", json.dumps(cfg.to_dict(), sort_keys=True))
    metrics, trainer = run(cfg, progress=not args.no_progress, data_root=args.data_root)
    torch.save(trainer.state_dict(), os.path.join(out, "checkpoint.pt"))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    plot_history(metrics, os.path.join(out, "metrics.png"))
    final = ", ".join(f"{k} {100 * v:.1f}%" for k, v in metrics["final"].items())
    print(f"{args.method} on {args.task}, seed {args.seed}: {final} ({metrics['seconds']:.1f} s); wrote {out}/")
    return metrics


if __name__ == "__main__":
    main()
