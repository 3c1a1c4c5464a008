"""Runs that survive a kill (issue 13 items 2 and 5): a run SIGKILLed halfway and resumed with ``--resume``
ends bitwise identical (weights, metrics.json ``final`` and history) to an uninterrupted run; a NaN or inf
loss stops the run naming the iteration, the loss term and the last checkpoint; checkpoints are atomic."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from models import checkpoint as ckpt  # noqa: E402

# models.train with the trainer's step wrapped to SIGKILL the process just before iteration K
KILLER = """
import os, signal, sys
kill_at, argv = int(sys.argv[1]), sys.argv[2:]
from models.classification.trainers import Trainer
from models.segmentation.train import SegTrainer

def killing(step, iteration):
    def wrapped(self, *a):
        if iteration(self, a) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self, *a)
    return wrapped

Trainer.step = killing(Trainer.step, lambda self, a: self.step_i)
SegTrainer.step = killing(SegTrainer.step, lambda self, a: a[3])
from models import train
train.main(argv)
"""

CASES = {
    # DTA on two moons: batches, dropout masks, VAT directions all drawn from the RNGs; Adam
    "classification": ["--task", "moons", "--method", "dta", "--iters", "40", "--checkpoint-every", "10",
                       "--set", "eval_every=10"],
    # AdvEnt on the synthetic streets: SGD with the poly schedule, a discriminator with Adam, the loaders'
    # order across an epoch boundary (8 images, batches of 2), evaluations before and after the kill
    "segmentation": ["--task", "synthetic", "--method", "advent", "--iters", "6", "--checkpoint-every", "2",
                     "--set", "n_source=8", "--set", "n_target=8", "--set", "n_val=4", "--set", "batch=2",
                     "--set", "eval_every=2", "--set", "save_images=0", "--set", "log_every=1"],
}
KILL_AT = {"classification": 25, "segmentation": 3}  # checkpoints at 20 and 2: the resumed run redoes some


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


def _train(args, out, *extra):
    subprocess.run([sys.executable, "-m", "models.train", *args, "--seed", "3", "--no-progress", "--out", str(out),
                    *extra], cwd=ROOT, env=_env(), check=True, capture_output=True, timeout=600)


def _weights(path):
    sd = torch.load(path, map_location="cpu", weights_only=False)
    out = {}
    for k, v in sd.items():
        if isinstance(v, dict) and k != "config":
            out.update({f"{k}.{n}": t for n, t in v.items() if isinstance(t, torch.Tensor)})
        elif isinstance(v, list):
            out.update({f"{k}{i}.{n}": t for i, d in enumerate(v) if isinstance(d, dict)
                        for n, t in d.items() if isinstance(t, torch.Tensor)})
    return out


def _assert_same_run(whole, resumed):
    """Bitwise the same final weights (every tensor of checkpoint.pt) and the same metrics.json final and history."""
    a, b = _weights(whole / "checkpoint.pt"), _weights(resumed / "checkpoint.pt")
    assert a.keys() == b.keys() and len(a) > 4
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    ma = json.loads((whole / "metrics.json").read_text())
    mb = json.loads((resumed / "metrics.json").read_text())
    assert ma["final"] == mb["final"] and ma["history"] == mb["history"]


@pytest.mark.parametrize("kind", list(CASES))
def test_killed_and_resumed_run_is_bitwise_identical(tmp_path, kind):
    args = CASES[kind]
    _train(args, tmp_path / "whole")
    (tmp_path / "killer.py").write_text(KILLER)
    p = subprocess.run([sys.executable, str(tmp_path / "killer.py"), str(KILL_AT[kind]), *args, "--seed", "3",
                        "--no-progress", "--out", str(tmp_path / "killed")], cwd=ROOT, env=_env(),
                       capture_output=True, timeout=600)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed_from = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["resume"]["iteration"]
    assert 0 < resumed_from < KILL_AT[kind]
    _train(args, tmp_path / "killed", "--resume")
    _assert_same_run(tmp_path / "whole", tmp_path / "killed")


def test_resume_checks_what_it_resumes(tmp_path):
    from models import train
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        train.main(["--task", "moons", "--iters", "4", "--out", str(tmp_path / "none"), "--resume", "--no-progress"])
    out = str(tmp_path / "run")
    train.main(["--task", "moons", "--iters", "6", "--checkpoint-every", "2", "--out", out, "--no-progress"])
    with pytest.raises(ValueError, match="no resume state"):  # a finished run's final checkpoint
        train.main(["--task", "moons", "--iters", "6", "--out", out, "--resume", "--no-progress"])
    sd = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)
    ckpt.save_atomic({**sd, "resume": {}}, os.path.join(out, "checkpoint.pt"))
    with pytest.raises(ValueError, match="another configuration: steps: 6 there, 8 now"):
        train.main(["--task", "moons", "--iters", "8", "--out", out, "--resume", "--no-progress"])


def test_save_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    ckpt.save_atomic({"a": torch.ones(3)}, path)
    real = torch.save

    def torn(obj, f):
        real(obj, f)
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_atomic({"a": torch.zeros(3)}, path)
    assert torch.equal(torch.load(path)["a"], torch.ones(3)) and os.listdir(tmp_path) == ["checkpoint.pt"]


@pytest.mark.parametrize("kind", list(CASES))
def test_non_finite_loss_stops_the_run(tmp_path, monkeypatch, kind):
    from models import train
    from models.classification.trainers import Trainer
    from models.segmentation.train import SegTrainer
    cls, iteration = (Trainer, lambda self, a: self.step_i) if kind == "classification" else \
        (SegTrainer, lambda self, a: a[3])
    bad_at = 5 if kind == "classification" else 3
    step = cls.step

    def step_with_nan(self, *a):
        losses = step(self, *a)
        if iteration(self, a) == bad_at:
            losses = {**losses, "loss_adv": float("inf") if kind == "segmentation" else float("nan")}
        return losses

    monkeypatch.setattr(cls, "step", step_with_nan)
    args = [a for a in CASES[kind]]
    args[args.index("--checkpoint-every") + 1] = "2"
    out = tmp_path / "run"
    with pytest.raises(ckpt.NonFiniteLoss) as e:
        train.main([*args, "--out", str(out), "--no-progress"])
    msg = str(e.value)
    assert f"iteration {bad_at}:" in msg and ("loss_adv = nan" in msg or "loss_adv = inf" in msg)
    assert f"last checkpoint: {out / 'checkpoint.pt'}" in msg
    assert torch.load(out / "checkpoint.pt", weights_only=False)["resume"]["iteration"] == bad_at - bad_at % 2



def _torchrun(program, out, port, *extra):
    """``torchrun --nproc_per_node 2 PROGRAM <the segmentation case> --out OUT *extra``."""
    import shutil
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    cmd = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"])
    cmd += ["--nproc_per_node", "2", "--master_port", str(port), *program, *CASES["segmentation"],
            "--seed", "3", "--no-progress", "--out", str(out), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, timeout=600)


def test_killed_and_resumed_torchrun_is_bitwise_identical(tmp_path):
    """Two processes (gloo): rank 1 is SIGKILLed before iteration 3 and torchrun tears the run down; the
    resumed run (each rank restoring its own RNG state and data order) ends with rank 0's checkpoint and
    metrics identical to an uninterrupted two-process run."""
    port = 29700 + os.getpid() % 200
    r = _torchrun(["-m", "models.train"], tmp_path / "whole", port)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    # only rank 1 kills itself (rank 0 gets an iteration it never reaches)
    (tmp_path / "killer.py").write_text("import os, sys\nif os.environ.get('RANK') != '1':\n    sys.argv[1] = '-1'\n"
                                        + KILLER)
    r = _torchrun([str(tmp_path / "killer.py"), str(KILL_AT["segmentation"])], tmp_path / "killed", port + 1)
    assert r.returncode != 0 and not (tmp_path / "killed" / "metrics.json").exists(), r.stderr.decode()[-3000:]
    ck = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["resume"]
    assert ck["iteration"] == 2 and len(ck["ranks"]) == 2
    r = _torchrun(["-m", "models.train"], tmp_path / "killed", port + 2, "--resume")
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    _assert_same_run(tmp_path / "whole", tmp_path / "killed")
