"""A procedural street-scene generator with a small synthetic-to-"real" shift (for CPU end-to-end runs).

Every scene has the same layout statistics in both domains: a horizon, sky, a row of buildings and trees
along it, a road in perspective towards a vanishing point, sidewalks on both sides, grass beyond them and
a few cars on the road. Only the *rendering* differs:

* **source** ("synthetic", like GTA5): flat class colours with a small per-image jitter and faint noise;
* **target** ("real", like Cityscapes): per-class textures (building windows, foliage, asphalt grain and lane
  marks, car windows and shading, sky gradient), a different palette, a per-image colour cast and
  brightness/contrast change, a horizontal lighting gradient, a shadow band and sensor noise.

Classes (trainIds): 0 road, 1 sidewalk, 2 building, 3 vegetation, 4 sky, 5 car; ignore label 255 is never
produced. Images are float32 ``(3, H, W)`` in [0, 1] (the trainers normalise), labels int64 ``(H, W)``.
Everything is deterministic given the seed.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["SYN_CLASSES", "SYN_PALETTE", "render_scene", "make_split", "SyntheticShift"]

SYN_CLASSES = ["road", "sidewalk", "building", "vegetation", "sky", "car"]
# Colours for visualising label maps (not the rendering colours).
SYN_PALETTE = np.array([[128, 64, 128], [244, 35, 232], [70, 70, 70], [107, 142, 35], [70, 130, 180],
                        [0, 0, 142]], dtype=np.uint8)

ROAD, SIDEWALK, BUILDING, VEG, SKY, CAR = range(6)

# Base rendering colours (RGB in [0, 1]) per domain.
_SRC_COLOURS = np.array([[0.40, 0.40, 0.42], [0.62, 0.55, 0.58], [0.58, 0.40, 0.30], [0.20, 0.55, 0.22],
                         [0.55, 0.75, 0.95], [0.80, 0.15, 0.15]], dtype=np.float32)
_TGT_COLOURS = np.array([[0.33, 0.33, 0.31], [0.50, 0.50, 0.46], [0.52, 0.50, 0.46], [0.28, 0.38, 0.20],
                         [0.75, 0.78, 0.80], [0.25, 0.28, 0.45]], dtype=np.float32)


def _layout(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    lab = np.full((H, W), SKY, dtype=np.int64)
    h0 = H * rng.uniform(0.35, 0.5)
    # buildings and trees along the horizon
    x = -rng.uniform(0, 10)
    while x < W:
        w = rng.uniform(0.08, 0.25) * W
        kind = rng.choice([BUILDING, BUILDING, VEG, SKY])
        if kind == BUILDING:
            top = h0 - rng.uniform(0.15, 0.45) * H
            lab[(xx >= x) & (xx < x + w) & (yy >= top) & (yy < h0 + 1)] = BUILDING
        elif kind == VEG:
            top = h0 - rng.uniform(0.1, 0.3) * H
            cx, r = x + w / 2, w / 2
            crown = ((xx - cx) / r) ** 2 + ((yy - top - r * 0.6) / (r * 0.8)) ** 2 < 1
            trunk = (np.abs(xx - cx) < max(1.0, w * 0.06)) & (yy >= top) & (yy < h0 + 1)
            lab[(crown & (yy < h0 + 1)) | trunk] = VEG
        x += w
    # ground: grass, sidewalks, road in perspective
    ground = yy >= h0
    vx = W * rng.uniform(0.3, 0.7)
    k = rng.uniform(0.7, 1.3) * W / max(H - h0, 1) * 0.45
    hw = k * (yy - h0)
    side = hw * rng.uniform(1.3, 1.7) + 1.5
    d = np.abs(xx - vx)
    lab[ground] = VEG
    lab[ground & (d < side)] = SIDEWALK
    lab[ground & (d < hw)] = ROAD
    # cars on the road
    for _ in range(rng.integers(0, 4)):
        yb = rng.uniform(h0 + 0.15 * (H - h0), H + 2)
        cw = max(3.0, 0.9 * k * (yb - h0) * rng.uniform(0.5, 0.9))
        cx = vx + rng.uniform(-0.8, 0.8) * k * (yb - h0) - cw / 2
        ch = cw * rng.uniform(0.45, 0.6)
        body = (xx >= cx) & (xx < cx + cw) & (yy < yb) & (yy >= yb - ch * 0.6)
        cabin = (xx >= cx + cw * 0.2) & (xx < cx + cw * 0.8) & (yy < yb - ch * 0.6) & (yy >= yb - ch)
        lab[body | cabin] = CAR
    return lab


def _noise(rng, H, W, scale):
    """Smooth noise: white noise upsampled from a grid of `scale` pixels (bilinear)."""
    gh, gw = H // scale + 2, W // scale + 2
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    t = torch.from_numpy(g)[None, None]
    up = torch.nn.functional.interpolate(t, size=(gh * scale, gw * scale), mode="bilinear", align_corners=False)
    return up[0, 0, :H, :W].numpy()


def render_scene(lab: np.ndarray, rng: np.random.Generator, domain: str) -> np.ndarray:
    """Render a label map as an image of the given domain ('source' or 'target'); returns (3, H, W)."""
    H, W = lab.shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    if domain == "source":
        cols = _SRC_COLOURS + rng.uniform(-0.04, 0.04, _SRC_COLOURS.shape).astype(np.float32)
        cols[CAR] = rng.uniform(0.1, 0.9, 3)  # cars of any colour
        img = cols[lab].transpose(2, 0, 1)
        img = img + 0.02 * rng.standard_normal(img.shape).astype(np.float32)
        return np.clip(img, 0, 1).astype(np.float32)
    if domain != "target":
        raise ValueError(domain)
    cols = _TGT_COLOURS + rng.uniform(-0.05, 0.05, _TGT_COLOURS.shape).astype(np.float32)
    cols[CAR] = rng.uniform(0.05, 0.6, 3)
    img = cols[lab].transpose(2, 0, 1).copy()
    m = {c: (lab == c) for c in range(6)}
    # textures
    win = ((np.mod(xx + rng.integers(0, 6), 6) < 3) & (np.mod(yy + rng.integers(0, 6), 6) < 3))
    img[:, m[BUILDING] & win] *= 0.6
    foliage = 0.12 * _noise(rng, H, W, 2)
    img[:, m[VEG]] += foliage[m[VEG]]
    img[1, m[VEG]] += 0.5 * foliage[m[VEG]]
    grain = 0.05 * rng.standard_normal((H, W)).astype(np.float32)
    img[:, m[ROAD]] += grain[m[ROAD]]
    img[:, m[SIDEWALK]] += 0.6 * grain[m[SIDEWALK]] + 0.06 * (np.mod(xx + yy, 5) < 1)[m[SIDEWALK]]
    sky_grad = (yy / H) * 0.25
    img[:, m[SKY]] -= sky_grad[m[SKY]]
    img[2, m[SKY]] += 0.1
    carwin = m[CAR] & (np.mod(yy, 4) < 2)
    img[:, carwin] = img[:, carwin] * 0.5 + 0.25
    # lighting: colour cast, brightness/contrast, horizontal gradient, a shadow band, blur-free sensor noise
    cast = rng.uniform(0.75, 1.25, (3, 1, 1)).astype(np.float32)
    img = img * cast
    img = (img - 0.5) * rng.uniform(0.6, 1.1) + 0.5 + rng.uniform(-0.15, 0.15)
    img = img * (1 + rng.uniform(-0.3, 0.3) * (xx / W - 0.5))[None]
    s0 = rng.uniform(0, W)
    shadow = (xx > s0) & (xx < s0 + rng.uniform(0.1, 0.3) * W) & (yy > H * 0.4)
    img[:, shadow] *= 0.6
    img = img + 0.06 * rng.standard_normal(img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def make_split(n: int, domain: str, seed: int, size=(64, 128)):
    """``n`` scenes of one domain: (images float32 (n, 3, H, W), labels int64 (n, H, W))."""
    rng = np.random.default_rng(seed)
    H, W = size
    imgs = np.empty((n, 3, H, W), np.float32)
    labs = np.empty((n, H, W), np.int64)
    for i in range(n):
        lab = _layout(rng, H, W)
        imgs[i] = render_scene(lab, rng, domain)
        labs[i] = lab
    return torch.from_numpy(imgs), torch.from_numpy(labs)


class SyntheticShift(torch.utils.data.Dataset):
    """A split of the synthetic task as a Dataset of ``(image, label)``; pre-rendered in memory."""

    classes = SYN_CLASSES
    palette = SYN_PALETTE
    ignore_index = 255

    def __init__(self, domain: str, split: str = "train", n: int = 400, size=(64, 128), seed: int = 0):
        offset = {"train": 0, "val": 1, "test": 2}[split] + (0 if domain == "source" else 10)
        self.images, self.labels = make_split(n, domain, seed * 100 + offset, size)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]
