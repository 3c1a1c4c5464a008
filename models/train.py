"""Train one method on one task (classification or segmentation), the same flags for every task.

    python -m models.train --task moons --method dta --iters 600 --seed 0 --out runs/dta_moons
    python -m models.train --task digits --method clan --seed 1 --out runs/clan_digits
    python -m models.train --task synthetic --method i2i --iters 300 --out runs/i2i_streets
    python -m models.train --task gta5->cityscapes --method advent --set source_root=data/GTA5 \\
        --set target_root=data/Cityscapes --set size=paper

Tasks: see ``models.tasks`` (moons, digits, SRC->TGT image pairs, synthetic/streets, gta5->cityscapes,
synthia->cityscapes). Methods: ``uda_ops.methods.NAMES``. ``--iters``: training iterations (default per
task). ``--set NAME=VALUE`` overrides a trainer Config field. Writes to --out: config.json, metrics.json
(with a ``final`` dict in %, the task's main metric included: target_acc or miou), checkpoint.pt and
curves.png; a progress bar on stderr. ``--checkpoint-every N`` writes a resumable checkpoint.pt every N
iterations and ``--resume`` continues from it (``models.checkpoint``); a NaN or inf loss stops the run,
naming the iteration, the loss term and the last checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from . import tasks
from .train_io import parse_sets


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="moons")
    ap.add_argument("--method", choices=tasks.METHODS, default="source_only")
    ap.add_argument("--iters", type=int, default=None, help="training iterations (default: per task)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output folder (default runs/<method>_<task>_s<seed>)")
    ap.add_argument("--data-root", default=None, help="classification SRC->TGT: folder with the datasets")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a trainer Config field")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                    help="write OUT/checkpoint.pt atomically every N iterations (everything --resume needs)")
    ap.add_argument("--resume", action="store_true",
                    help="continue from OUT/checkpoint.pt, ending as an uninterrupted run would")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    safe = "".join(ch if ch.isalnum() else "_" for ch in args.task)
    out = args.out or os.path.join("runs", f"{args.method}_{safe}_s{args.seed}")
    final, metrics = tasks.run(args.task, args.method, args.seed, iters=args.iters, out=out,
                               progress=not args.no_progress, sets=parse_sets(args.set), data_root=args.data_root,
                               checkpoint_every=args.checkpoint_every, resume=args.resume)
    print(f"{args.method} on {args.task}, seed {args.seed}: "
          + ", ".join(f"{k} {v:.1f}%" for k, v in final.items()) + f"; wrote {out}/")
    return {"final": final, **{k: v for k, v in metrics.items() if k != "final"}}


if __name__ == "__main__":
    main()
