"""The task registry behind ``python -m models.train`` and ``python -m models.compare``.

A task is a name -> :class:`TaskSpec`: its kind, its main metric and a ``run(method, seed, iters, out,
progress, sets, data_root, checkpoint_every, resume)`` that trains one method and returns ``(final, metrics)`` (``final``: numbers in
%, the main metric included). A new task plugs in with one ``register(name, spec)``; every method of
``uda_ops.methods`` runs on every task through the task's trainer (data, network, evaluation, logging).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from uda_ops.methods import NAMES as METHODS


@dataclass
class TaskSpec:
    kind: str                 # "classification" or "segmentation"
    metric: str               # "target_acc" or "miou"
    run: Callable[..., Tuple[dict, dict]]
    methods: Tuple[str, ...] = METHODS
    help: str = ""
    defaults: Dict[str, dict] = field(default_factory=dict)  # informational; the trainers hold them


TASKS: Dict[str, TaskSpec] = {}


def register(name: str, spec: TaskSpec) -> None:
    TASKS[name] = spec


def get(name: str) -> TaskSpec:
    if name in TASKS:
        return TASKS[name]
    if "->" in name:  # SRC->TGT classification pairs (models.classification.data.get_task routes them)
        return TASKS["*classification*"]
    raise SystemExit(f"unknown task {name!r}; one of {sorted(k for k in TASKS if not k.startswith('*'))} "
                     f"or SRC->TGT")


def _pct(d: dict) -> dict:
    return {k: 100.0 * v for k, v in d.items() if isinstance(v, (int, float))}


def run_classification(task, method, seed, iters=None, out=None, progress=False, sets=None, data_root=None,
                       checkpoint_every=0, resume=False):
    import json

    from .checkpoint import CHECKPOINT, save_atomic
    from .classification.trainers import make_config, run
    from .train_io import plot_boundary, plot_classification, seed_everything
    seed_everything(seed)
    cfg = make_config(method, task, seed=seed, steps=iters, **(sets or {}))
    metrics, trainer = run(cfg, progress=progress, data_root=data_root, checkpoint_every=checkpoint_every,
                           checkpoint=os.path.join(out, CHECKPOINT) if out else None, resume=resume)
    final = _pct(metrics["final"])
    metrics["final"] = final
    metrics["metric"] = "target_acc"
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(cfg.to_dict(), f, indent=1)
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        save_atomic(trainer.state_dict(), os.path.join(out, CHECKPOINT))
        plot_classification(metrics, os.path.join(out, "curves.png"))
        plot_boundary(trainer, os.path.join(out, "boundary.png"))  # 2-D tasks (two moons) only
    return final, metrics


def _seg_runner(key):
    def run_segmentation(task, method, seed, iters=None, out=None, progress=False, sets=None, data_root=None,
                         checkpoint_every=0, resume=False):
        from .segmentation.train import make_config, run
        sets = dict(sets or {})
        cfg = make_config(method, key, seed=seed, iters=iters, out=out or "", progress=progress,
                          checkpoint_every=checkpoint_every, resume=resume, **sets)
        res = run(cfg)
        res.pop("trainer", None)
        return res.get("final", {}), res
    return run_segmentation


for _name, _help in (("moons", "two moons, rotated 30 degrees (ADR Sec. 4.1)"),
                     ("digits", "scikit-learn 8x8 digits, one half -> the other half rotated 30 degrees"),
                     ("*classification*", "SRC->TGT image pairs")):
    register(_name, TaskSpec("classification", "target_acc",
                             run_classification, help=_help))
for _name, _key in (("synthetic", "synthetic"), ("streets", "synthetic"), ("gta5->cityscapes", "gta5"),
                    ("gta5", "gta5"), ("synthia->cityscapes", "synthia"), ("synthia", "synthia")):
    register(_name, TaskSpec("segmentation", "miou", _seg_runner(_key),
                             help="synthetic street scenes (day -> dusk)" if _key == "synthetic"
                             else f"{_key} -> Cityscapes (--set source_root=... --set target_root=...)"))


def run(task: str, method: str, seed: int, iters: Optional[int] = None, out: Optional[str] = None,
        progress: bool = False, sets: Optional[dict] = None, data_root: Optional[str] = None,
        checkpoint_every: int = 0, resume: bool = False):
    spec = get(task)
    if method not in spec.methods:
        raise SystemExit(f"unknown method {method!r}; one of {spec.methods}")
    if (checkpoint_every or resume) and not out:
        raise SystemExit("--checkpoint-every and --resume need --out")
    return spec.run(task, method, seed, iters=iters, out=out, progress=progress, sets=sets, data_root=data_root,
                    checkpoint_every=checkpoint_every, resume=resume)
