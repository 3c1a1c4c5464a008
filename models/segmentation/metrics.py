"""Evaluation: confusion matrix, per-class IoU and mIoU (ignore label 255), and ADVENT-style images
(input | ground truth | prediction | entropy map) saved as PNG."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

import uda_ops

__all__ = ["confusion_matrix", "iou_from_confusion", "evaluate", "colorize", "entropy_to_rgb", "save_panels"]


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, classes: int, ignore_index: int = 255) -> torch.Tensor:
    """(classes, classes) int64 counts, rows = ground truth, columns = prediction; ignored pixels dropped."""
    pred, label = pred.reshape(-1).long(), label.reshape(-1).long()
    keep = (label != ignore_index) & (label >= 0) & (label < classes)
    idx = label[keep] * classes + pred[keep].clamp(0, classes - 1)
    return torch.bincount(idx, minlength=classes * classes).reshape(classes, classes)


def iou_from_confusion(conf: torch.Tensor) -> Dict[str, object]:
    """Per-class IoU = TP / (TP + FP + FN) (NaN for a class absent from both), mIoU over present classes,
    and pixel accuracy."""
    conf = conf.double()
    tp = conf.diag()
    denom = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(denom > 0, tp / denom.clamp(min=1), torch.full_like(tp, float("nan")))
    valid = ~torch.isnan(iou)
    miou = iou[valid].mean().item() if valid.any() else float("nan")
    acc = (tp.sum() / conf.sum().clamp(min=1)).item()
    return {"iou": iou.tolist(), "miou": miou, "pixel_acc": acc}


@torch.no_grad()
def predict(model, images: torch.Tensor, mean, std) -> torch.Tensor:
    """Full-resolution logits (bilinear upsampling of the stride-8 output), model in eval mode."""
    x = (images - mean) / std
    z = model(x)["out"]
    return F.interpolate(z.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)


@torch.no_grad()
def evaluate(model, dataset, classes: int, mean, std, batch: int = 32, device="cpu",
             class_subset: Optional[Sequence[int]] = None) -> Dict[str, object]:
    """mIoU of ``model`` on ``dataset`` (items ``(image, label)``); restores the model's training mode.
    ``class_subset``: also report the mIoU over these classes (e.g. SYNTHIA's 13 of 16)."""
    was = model.training
    model.eval()
    conf = torch.zeros(classes, classes, dtype=torch.long)
    for i in range(0, len(dataset), batch):
        items = [dataset[j] for j in range(i, min(i + batch, len(dataset)))]
        x = torch.stack([a for a, _ in items]).to(device)
        y = torch.stack([b for _, b in items])
        conf += confusion_matrix(predict(model, x, mean, std).argmax(1).cpu(), y, classes)
    model.train(was)
    res = iou_from_confusion(conf)
    if class_subset is not None:
        sub = [res["iou"][c] for c in class_subset if not np.isnan(res["iou"][c])]
        res["miou_subset"] = float(np.mean(sub)) if sub else float("nan")
    res["confusion"] = conf.tolist()
    return res


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) trainIds -> (H, W, 3) uint8; 255 (ignore) is black."""
    out = np.zeros(label.shape + (3,), np.uint8)
    ok = label < len(palette)
    out[ok] = palette[label[ok]]
    return out


def entropy_to_rgb(ent: np.ndarray) -> np.ndarray:
    """Normalised entropy in [0, 1] -> an 'inferno'-like colour map (matplotlib's when available)."""
    try:
        from matplotlib import colormaps
        return (colormaps["viridis"](np.clip(ent, 0, 1))[..., :3] * 255).astype(np.uint8)
    except Exception:  # pragma: no cover - matplotlib missing
        g = (np.clip(ent, 0, 1) * 255).astype(np.uint8)
        return np.stack([g, g, g], -1)


@torch.no_grad()
def save_panels(models: Dict[str, torch.nn.Module], images: torch.Tensor, labels: torch.Tensor, palette, path: str,
                mean, std, scale: int = 3) -> str:
    """One row per image: input | ground truth | for each model: prediction, entropy map (ADVENT Fig. 1/3),
    under a strip of column titles. Saved as a PNG (Pillow if present, else matplotlib, without titles)."""
    rows = []
    for i in range(len(images)):
        img = (images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
        cells = [img, colorize(labels[i].cpu().numpy(), palette)]
        for m in models.values():
            was = m.training
            m.eval()
            z = predict(m, images[i:i + 1], mean, std)
            m.train(was)
            cells.append(colorize(z.argmax(1)[0].cpu().numpy(), palette))
            cells.append(entropy_to_rgb(uda_ops.entropy(z, reduction="none")[0].cpu().numpy()))
        sep = np.full((img.shape[0], 2, 3), 255, np.uint8)
        row = [c for cell in cells for c in (cell, sep)][:-1]
        rows.append(np.concatenate(row, 1))
        rows.append(np.full((2, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows[:-1], 0)
    grid = grid.repeat(scale, 0).repeat(scale, 1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        from PIL import Image
        titles = ["input", "ground truth"] + [f"{n}: {c}" for n in models for c in ("prediction", "entropy")]
        Image.fromarray(_titled(grid, titles, images.shape[-1] * scale, 2 * scale, scale)).save(path)
    except ImportError:  # pragma: no cover
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        plt.imsave(path, grid)
    return path


TITLE_H = 12  # px per unit of ``scale``: the column-title strip above a panel image


def _titled(grid: np.ndarray, titles: List[str], col_w: int, sep: int, scale: int) -> np.ndarray:
    """``grid`` under a white strip with one title per column (columns ``col_w`` wide, ``sep`` apart)."""
    from PIL import Image, ImageDraw, ImageFont
    strip = Image.new("RGB", (grid.shape[1], TITLE_H * scale), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    try:
        font = ImageFont.load_default(size=9 * scale)
    except TypeError:  # pragma: no cover (Pillow < 10.1: one bitmap size)
        font = ImageFont.load_default()
    for i, t in enumerate(titles):
        while len(t) > 1 and draw.textlength(t, font=font) > col_w - 2:
            t = t[:-2] + "~"
        draw.text((i * (col_w + sep) + 1, scale), t, fill=(0, 0, 0), font=font)
    return np.concatenate([np.asarray(strip), grid], 0)


def header(names: List[str]) -> str:
    """Column legend for a panel image."""
    return "input | ground truth | " + " | ".join(f"{n}: prediction, entropy" for n in names)
