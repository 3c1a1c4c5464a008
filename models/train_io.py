"""Shared CLI helpers: --set parsing, seeding, the classification curves plot."""
from __future__ import annotations

import ast
import random


def parse_sets(items) -> dict:
    out = {}
    for item in items or []:
        k, _, v = item.partition("=")
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def plot_classification(metrics: dict, path: str) -> None:
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
    skip = {"step", "target_acc", "target_acc_c2", "source_acc", "delta"}
    for key in [k for k in hist[0] if k not in skip]:
        a2.plot(steps, [h.get(key, float("nan")) for h in hist], label=key)
    a2.set_yscale("symlog", linthresh=1e-3)
    a2.set_xlabel("step"), a2.set_ylabel("loss (interval mean, symlog)"), a2.legend(fontsize=7), a2.grid(alpha=.3)
    c = metrics["config"]
    fig.suptitle(f"{c['method']} on {c['task']} (seed {c['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
