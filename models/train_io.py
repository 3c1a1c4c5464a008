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


GRID = 150  # decision-boundary plot resolution


def boundary(trainer):
    """P(class 1) of a trained 2-D, two-class classifier on a GRID x GRID lattice around the task's samples
    (``{"extent", "p1"}``), or None for other tasks."""
    import torch
    t = trainer.task
    if t.input_shape != (2,) or t.num_classes != 2:
        return None
    pts = torch.cat([t.xs, t.xt_test])
    lo, hi = pts.min(0).values - 0.5, pts.max(0).values + 0.5
    xx, yy = torch.meshgrid(torch.linspace(lo[0], hi[0], GRID), torch.linspace(lo[1], hi[1], GRID), indexing="xy")
    trainer.net.eval()
    with torch.no_grad():
        p1 = torch.softmax(trainer.predict(torch.stack([xx.ravel(), yy.ravel()], 1)), 1)[:, 1].reshape(GRID, GRID)
    trainer.net.train()
    return {"extent": [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])], "p1": p1}


def plot_boundary(trainer, path: str) -> bool:
    """The decision boundary over the source and target test samples (ADR's Fig. 3); False if not 2-D."""
    b = boundary(trainer)
    if b is None:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = trainer.task
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.imshow(b["p1"].numpy(), extent=b["extent"], origin="lower", cmap="coolwarm", alpha=0.35, vmin=0, vmax=1)
    ax.contour(b["p1"].numpy(), levels=[0.5], extent=b["extent"], origin="lower", colors="k", linewidths=1)
    ax.scatter(t.xs[:, 0], t.xs[:, 1], c=t.ys, cmap="coolwarm", s=4, marker="o", label="source")
    ax.scatter(t.xt_test[:, 0], t.xt_test[:, 1], c="green", s=4, marker="x", alpha=0.5, label="target")
    c = trainer.cfg
    ax.set_title(f"{c.method} on {c.task} (seed {c.seed})", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
