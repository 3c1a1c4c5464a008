"""MinEnt (ADVENT's entropy minimisation) on a small generated domain shift: the demo of `make demo`.

Task: three Gaussian classes in 2-D, centred 6 apart on a line with std 0.5 (source); the target domain
is the same distribution shifted by `--shift` along that line, so the source decision boundaries cut
through two target classes while a low-density gap that suits both domains still exists. A small MLP is trained on labelled source data only (source-only), then
a copy is adapted with source cross-entropy + `--lambda-ent` * uda_ops.entropy(target logits), the
target labels never seen. Prints target accuracy of both, as mean and std over seeds.

    python -m models.minent_toy --seeds 5 --shift 2.5
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

import uda_ops

try:
    from tqdm import tqdm
except ImportError:  # progress bars are a nicety, not a dependency
    def tqdm(it, **_):
        return it


def make_domain(n: int, shift: float, gen: torch.Generator, classes: int = 3, spacing: float = 6.0,
                std: float = 0.5):
    y = torch.randint(classes, (n,), generator=gen)
    centres = torch.stack([(y.float() - (classes - 1) / 2) * spacing + shift, torch.zeros(n)], 1)
    return centres + std * torch.randn(n, 2, generator=gen), y


def mlp(classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, classes))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def run(seed: int, shift: float, steps: int, lambda_ent: float, batch: int = 128):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xs, ys = make_domain(2000, 0.0, gen)
    xt, yt = make_domain(2000, shift, gen)  # yt: for evaluation only
    xt_test, yt_test = make_domain(2000, shift, gen)

    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):  # source only
        idx = torch.randint(len(xs), (batch,), generator=gen)
        loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    source_only = accuracy(model, xt_test, yt_test)

    adapted = copy.deepcopy(model)
    opt = torch.optim.Adam(adapted.parameters(), lr=5e-3)
    for _ in range(steps):  # MinEnt: source CE + entropy of target predictions
        i_s = torch.randint(len(xs), (batch,), generator=gen)
        i_t = torch.randint(len(xt), (batch,), generator=gen)
        loss = nn.functional.cross_entropy(adapted(xs[i_s]), ys[i_s]) + lambda_ent * uda_ops.entropy(adapted(xt[i_t]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return source_only, accuracy(adapted, xt_test, yt_test)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--shift", type=float, default=2.5, help="target shift along the class axis")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lambda-ent", type=float, default=0.3)
    args = ap.parse_args(argv)
    print(f"MinEnt toy: 3 Gaussian classes, target shifted by {args.shift}, {args.steps} steps, "
          f"lambda_ent={args.lambda_ent}, seeds={args.seeds}; uda_ops backend: "
          f"{uda_ops.backend_info()['ops']['entropy']['cpu']}")
    t0 = time.time()
    results = [run(s, args.shift, args.steps, args.lambda_ent)
               for s in tqdm(range(args.seeds), desc="seeds")]
    src, ada = zip(*results)
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
    for s, (a, b) in enumerate(results):
        print(f"  seed {s}: source-only {100 * a:5.1f}%   MinEnt {100 * b:5.1f}%")
    print(f"target accuracy over {args.seeds} seeds: source-only {100 * statistics.mean(src):.1f} "
          f"+- {100 * sd(src):.1f}%, MinEnt {100 * statistics.mean(ada):.1f} +- {100 * sd(ada):.1f}% "
          f"({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
