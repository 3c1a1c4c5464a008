"""Loaders for the real benchmarks, in their released directory layouts, with the official label mappings.

* **GTA5** (Richter et al. 2016): ``root/images/XXXXX.png`` and ``root/labels/XXXXX.png``; labels hold
  Cityscapes *label ids* (a palette PNG), mapped to the 19 Cityscapes train ids.
* **SYNTHIA-RAND-CITYSCAPES** (Ros et al. 2016): ``root/RGB/XXXXXXX.png`` and ``root/GT/LABELS/XXXXXXX.png``;
  labels are 16-bit PNGs whose first channel is the SYNTHIA class id, mapped to the 16 classes shared with
  Cityscapes (ADVENT / AdaptSegNet protocol); the 13-class mIoU drops wall, fence and pole.
* **Cityscapes** (Cordts et al. 2016): ``root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` and
  ``root/gtFine/<split>/<city>/<name>_gtFine_labelIds.png``; label ids mapped to 19 train ids (or to the 16
  SYNTHIA classes with ``classes=16``, 13 with ``classes=13``).

Unlabelled pixels map to 255 (ignored). Items are ``(image float32 (3, H, W) in [0, 1], label int64 (H, W))``;
``crop=(H, W)`` resizes (bilinear image, nearest label; ADVENT resizes GTA5 to 1280x720, Cityscapes to
1024x512) — ``None`` keeps the original size. PNGs are read with Pillow, except 16-bit multi-channel ones,
which Pillow cannot represent: :func:`read_png` decodes those with OpenCV (``opencv-python-headless``, an
optional dependency, needed for SYNTHIA only; :func:`write_png` writes them, for tests).
"""
from __future__ import annotations

import glob
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["CITYSCAPES_CLASSES", "CITYSCAPES_ID_TO_TRAINID", "SYNTHIA_ID_TO_16", "SYNTHIA_16_CLASSES",
           "SYNTHIA_13_IN_16", "CITYSCAPES_PALETTE", "GTA5", "SynthiaRandCityscapes", "Cityscapes", "read_png",
           "write_png", "class_names", "palette", "lookup_table"]

CITYSCAPES_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle"]
# Cityscapes label id -> train id (the 19 evaluated classes; everything else is ignored). GTA5 uses these ids.
CITYSCAPES_ID_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                            25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_PALETTE = np.array([
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153], [153, 153, 153],
    [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60], [255, 0, 0],
    [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32]], dtype=np.uint8)

# The 16 classes SYNTHIA shares with Cityscapes (the 19 without terrain, truck, train), in Cityscapes order.
SYNTHIA_16_TRAINIDS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18]
SYNTHIA_16_CLASSES = [CITYSCAPES_CLASSES[i] for i in SYNTHIA_16_TRAINIDS]
# SYNTHIA class id -> index among the 16: 1 sky, 2 building, 3 road, 4 sidewalk, 5 fence, 6 vegetation, 7 pole,
# 8 car, 9 traffic sign, 10 pedestrian, 11 bicycle, 12 motorcycle, 15 traffic light, 17 rider, 19 bus, 21 wall
# (0 void, 13 parking slot, 14 road work, 16 terrain, 18 truck, 20 train, 22 lane marking: ignored).
SYNTHIA_ID_TO_16 = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12, 19: 13,
                    12: 14, 11: 15}
# The 13-class protocol (mIoU*): the 16 without wall, fence, pole — as indices into the 16.
SYNTHIA_13_IN_16 = [i for i, n in enumerate(SYNTHIA_16_CLASSES) if n not in ("wall", "fence", "pole")]


def class_names(classes: int) -> List[str]:
    if classes == 19:
        return list(CITYSCAPES_CLASSES)
    if classes == 16:
        return list(SYNTHIA_16_CLASSES)
    if classes == 13:
        return [SYNTHIA_16_CLASSES[i] for i in SYNTHIA_13_IN_16]
    raise ValueError(f"classes must be 19, 16 or 13, got {classes}")


def palette(classes: int) -> np.ndarray:
    if classes == 19:
        return CITYSCAPES_PALETTE
    ids = SYNTHIA_16_TRAINIDS if classes == 16 else [SYNTHIA_16_TRAINIDS[i] for i in SYNTHIA_13_IN_16]
    return CITYSCAPES_PALETTE[ids]


def lookup_table(mapping: dict, size: int = 256) -> np.ndarray:
    lut = np.full(size, 255, dtype=np.uint8)
    for k, v in mapping.items():
        lut[k] = v
    return lut


def _trainid_to(classes: int) -> np.ndarray:
    """LUT from the 19 Cityscapes train ids (and 255) to the 19 / 16 / 13 class indices."""
    lut = np.full(256, 255, dtype=np.uint8)
    if classes == 19:
        lut[:19] = np.arange(19)
    else:
        keep = SYNTHIA_16_TRAINIDS if classes == 16 else [SYNTHIA_16_TRAINIDS[i] for i in SYNTHIA_13_IN_16]
        for j, t in enumerate(keep):
            lut[t] = j
    return lut


# ---------------------------------------------------------------------------------------------------------
# PNG (for 16-bit multi-channel label files): OpenCV, an optional dependency
# ---------------------------------------------------------------------------------------------------------
PNG_PACKAGE = "opencv-python-headless"


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError(f"reading and writing 16-bit multi-channel PNGs (SYNTHIA labels) needs {PNG_PACKAGE}: "
                          f"pip install {PNG_PACKAGE}  (or pip install 'uda_ops[datasets]')") from e
    return cv2


def read_png(path: str) -> np.ndarray:
    """Decode a PNG at full depth: ``(H, W)`` or ``(H, W, C)`` in RGB(A) order, uint8 or uint16 (palette PNGs
    come back as colours: read palette indices with Pillow). Raises ``ValueError`` naming the file when it
    is missing, truncated or not a PNG."""
    cv2 = _cv2()
    arr = cv2.imread(path, cv2.IMREAD_UNCHANGED) if os.path.isfile(path) else None
    if arr is None:
        raise ValueError(f"{path}: cannot decode the PNG (missing, truncated or not an image)")
    if arr.ndim == 3:  # OpenCV's order is BGR(A)
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return arr


def write_png(path: str, arr: np.ndarray) -> None:
    """Write a uint8 or uint16 ``(H, W)`` / ``(H, W, C)`` (C = 1, 3 or 4, RGB(A) order) array as a PNG."""
    cv2 = _cv2()
    arr = np.asarray(arr)
    if arr.dtype not in (np.uint8, np.uint16) or arr.shape[2:] not in ((), (1,), (3,), (4,)):
        raise ValueError(f"write_png: uint8/uint16 (H, W) or (H, W, 1|3|4) expected, got {arr.dtype} {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] > 1:
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGBA2BGRA if arr.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(path, arr):
        raise OSError(f"{path}: cannot write the PNG")


# ---------------------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------------------
def _image(path: str, what: str = "image"):
    """Pillow's decoding of ``path`` (fully loaded), any failure re-raised as a ValueError naming the file."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Exception as e:  # truncated, corrupt, not an image: the message names the file
        raise ValueError(f"{path}: cannot decode the {what} ({type(e).__name__}: {e})") from e


def _folder(path: str, dataset: str) -> str:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{dataset}: folder {path} not found")
    return path


class _SegFolder(torch.utils.data.Dataset):
    """Image/label pairs. Checked when built: every image exists and, with labels, every label (an image
    without its label raises, naming both). Checked when read: each file decodes, the label has its image's
    size, and in ``strict`` mode every raw label id is one the dataset defines (``0 .. known_ids - 1``;
    otherwise unknown ids are ignored, like void). Errors name the file; nothing is skipped."""
    ignore_index = 255
    known_ids = 34  # Cityscapes label ids 0..33 (GTA5 uses them too)

    def __init__(self, pairs: Sequence[Tuple[str, str]], lut: np.ndarray, crop, with_labels=True,
                 names=None, label_channel: Optional[int] = None, strict: bool = False, where: str = ""):
        name = type(self).__name__
        if not pairs:
            raise FileNotFoundError(f"{name}: no images found in {where}")
        for ip, lp in pairs:
            if not os.path.isfile(ip):
                raise FileNotFoundError(f"{name}: image {ip} not found")
            if with_labels and not os.path.isfile(lp):
                raise FileNotFoundError(f"{name}: image {ip} has no label: {lp} not found")
        self.pairs, self.lut, self.crop, self.with_labels = list(pairs), lut, crop, with_labels
        self.label_channel, self.strict = label_channel, strict
        self.classes = names

    def __len__(self):
        return len(self.pairs)

    def _label(self, path):
        if self.label_channel is None:
            lab = np.array(_image(path, "label"))  # palette PNGs keep their indices
            if lab.ndim == 3:
                lab = lab[..., 0]
        else:
            lab = read_png(path)
            lab = lab[..., self.label_channel] if lab.ndim == 3 else lab
        lab = lab.astype(np.int64)
        if self.strict:
            unknown = np.unique(lab[lab >= self.known_ids])
            if unknown.size:
                raise ValueError(f"{path}: unknown label ids {unknown[:10].tolist()} (the dataset defines "
                                 f"0..{self.known_ids - 1}; strict=False ignores them)")
        return self.lut[np.minimum(lab, len(self.lut) - 1)]

    def __getitem__(self, i):
        from PIL import Image
        ip, lp = self.pairs[i]
        img = _image(ip).convert("RGB")
        lab = self._label(lp) if self.with_labels else None
        if lab is not None and lab.shape != (img.height, img.width):
            raise ValueError(f"{lp}: label of size {lab.shape[1]}x{lab.shape[0]} for the image {ip} of size "
                             f"{img.width}x{img.height} (leave the pair out, e.g. GTA5's list_file)")
        if self.crop is not None:
            H, W = self.crop
            img = img.resize((W, H), Image.BILINEAR)
            if lab is not None:
                lab = np.array(Image.fromarray(lab).resize((W, H), Image.NEAREST))
        x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1).contiguous()
        y = torch.full(x.shape[1:], 255, dtype=torch.long) if lab is None else torch.from_numpy(lab.astype(np.int64))
        return x, y


def _stems(folder: str, suffix: str = ".png") -> List[str]:
    return sorted(os.path.basename(p)[:-len(suffix)] for p in glob.glob(os.path.join(folder, "*" + suffix)))


class GTA5(_SegFolder):
    """GTA5: ``root/images/*.png`` + ``root/labels/*.png`` (Cityscapes label ids) -> 19 train ids; ``list_file``
    (one name a line) restricts the pairs."""

    def __init__(self, root: str, crop=(720, 1280), with_labels: bool = True, list_file: Optional[str] = None,
                 strict: bool = False):
        images = _folder(os.path.join(_folder(root, "GTA5"), "images"), "GTA5")
        stems = ([os.path.splitext(l.strip())[0] for l in open(list_file) if l.strip()] if list_file
                 else _stems(images))
        pairs = [(os.path.join(images, s + ".png"), os.path.join(root, "labels", s + ".png")) for s in stems]
        super().__init__(pairs, lookup_table(CITYSCAPES_ID_TO_TRAINID), crop, with_labels, CITYSCAPES_CLASSES,
                         strict=strict, where=list_file or images)


class SynthiaRandCityscapes(_SegFolder):
    """SYNTHIA-RAND-CITYSCAPES: ``root/RGB/*.png`` + ``root/GT/LABELS/*.png`` (16-bit, class id in the first
    channel) -> the 16 shared classes (``classes=16``) or 13 (``classes=13``)."""
    known_ids = 23  # SYNTHIA class ids 0 (void) .. 22 (lane marking)

    def __init__(self, root: str, classes: int = 16, crop=(760, 1280), with_labels: bool = True,
                 strict: bool = False):
        images = _folder(os.path.join(_folder(root, "SYNTHIA"), "RGB"), "SYNTHIA")
        pairs = [(os.path.join(images, s + ".png"), os.path.join(root, "GT", "LABELS", s + ".png"))
                 for s in _stems(images)]
        lut = lookup_table(SYNTHIA_ID_TO_16, 65536)
        if classes == 13:
            to13 = np.full(256, 255, np.uint8)
            to13[SYNTHIA_13_IN_16] = np.arange(13)
            lut = to13[lut]
        elif classes != 16:
            raise ValueError("SYNTHIA: classes must be 16 or 13")
        super().__init__(pairs, lut, crop, with_labels, class_names(classes), label_channel=0, strict=strict,
                         where=images)


class Cityscapes(_SegFolder):
    """Cityscapes ``leftImg8bit`` + ``gtFine`` ``*_labelIds.png`` of a split -> 19 (or 16 / 13) classes."""

    def __init__(self, root: str, split: str = "val", classes: int = 19, crop=(512, 1024), with_labels: bool = True,
                 strict: bool = False):
        images = _folder(os.path.join(_folder(root, "Cityscapes"), "leftImg8bit", split), "Cityscapes")
        pairs = []
        for ip in sorted(glob.glob(os.path.join(images, "*", "*_leftImg8bit.png"))):
            city = os.path.basename(os.path.dirname(ip))
            stem = os.path.basename(ip)[:-len("_leftImg8bit.png")]
            pairs.append((ip, os.path.join(root, "gtFine", split, city, stem + "_gtFine_labelIds.png")))
        lut = _trainid_to(classes)[lookup_table(CITYSCAPES_ID_TO_TRAINID)]
        super().__init__(pairs, lut, crop, with_labels, class_names(classes), strict=strict, where=images)
