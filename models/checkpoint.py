"""Resumable runs (``--checkpoint-every N``, ``--resume``) and the stop on a non-finite loss, for both trainers.

A checkpoint is the trainer's ``state_dict()`` (networks, discriminators, extra modules) plus a ``"resume"``
entry: optimiser states, every RNG state (torch, CUDA, numpy, Python, the trainer's generators, per process
under torchrun), the iteration reached and the metric history. It is written atomically (a temporary file in
the same folder, fsync, ``os.replace``): a run killed at any moment leaves the previous checkpoint or the new
one, never a torn file. Resuming restores all of it, so a killed and resumed run ends bitwise identical to an
uninterrupted one (tests/test_resume.py).
"""
from __future__ import annotations

import math
import os
import random
from typing import Dict, Optional

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"
IGNORED_CONFIG = ("checkpoint_every", "resume", "progress", "out")  # may differ between a run and its resumption


class NonFiniteLoss(FloatingPointError):
    """A NaN or inf loss: the run stops, naming the iteration, the loss term and the last checkpoint."""


def check_finite(losses: Dict[str, float], iteration: int, last_checkpoint: Optional[str]) -> None:
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        where = last_checkpoint or "none written yet (see --checkpoint-every)"
        raise NonFiniteLoss(f"non-finite loss at iteration {iteration}: "
                            + ", ".join(f"{k} = {v}" for k, v in bad.items())
                            + f"; last checkpoint: {where}")


def rng_state(generator: Optional[torch.Generator] = None) -> dict:
    """This process's random state: torch, CUDA (once initialised), numpy, Python, and a trainer's own
    ``generator`` (data order, masks) when it has one."""
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
          "generator": generator.get_state() if generator is not None else None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict, generator: Optional[torch.Generator] = None) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st:
        torch.cuda.set_rng_state_all(st["cuda"])
    if generator is not None:
        generator.set_state(st["generator"])


def save_atomic(obj, path: str) -> str:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_for_resume(path: str, config: dict) -> dict:
    """The checkpoint at ``path``, checked: it exists, holds a resume state, and was written by the same
    configuration (fields in ``IGNORED_CONFIG`` aside)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    sd = torch.load(path, map_location="cpu", weights_only=False)
    if "resume" not in sd:
        raise ValueError(f"--resume: {path} holds no resume state (a finished run's final checkpoint?)")
    saved = sd.get("config", {})
    diff = {k: (saved.get(k), v) for k, v in config.items()
            if k not in IGNORED_CONFIG and _plain(saved.get(k)) != _plain(v)}
    if diff:
        raise ValueError(f"--resume: {path} was written with another configuration: "
                         + ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items()))
    return sd


def _plain(v):
    return list(v) if isinstance(v, (tuple, list)) else v
