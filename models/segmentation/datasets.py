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
which Pillow cannot represent; :func:`read_png` decodes those (and writes them, for tests).
"""
from __future__ import annotations

import glob
import os
import struct
import zlib
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
# PNG (for 16-bit multi-channel label files)
# ---------------------------------------------------------------------------------------------------------
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def read_png(path: str) -> np.ndarray:
    """Decode a non-interlaced greyscale / RGB / RGBA PNG of bit depth 8 or 16 at full depth:
    ``(H, W)`` or ``(H, W, C)``, uint8 or uint16. Other PNGs go through Pillow."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = hdr
    if interlace or depth not in (8, 16) or ctype not in _CHANNELS:
        from PIL import Image
        return np.array(Image.open(path))
    ch = _CHANNELS[ctype]
    bpp = ch * depth // 8
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, 1 + w * bpp)
    out = np.zeros((h, w * bpp), np.int32)
    prev = np.zeros(w * bpp, np.int32)
    for y in range(h):
        ft, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if ft == 0:
            cur = line
        elif ft == 2:
            cur = (line + prev) & 255
        elif ft == 1:  # Sub: a running sum per byte lane
            cur = (np.cumsum(line.reshape(w, bpp), 0) & 255).reshape(-1)
        else:  # Average / Paeth depend on the reconstructed left pixel: one pixel at a time
            cur = np.zeros_like(line)
            left = np.zeros(bpp, np.int32)
            ul = np.zeros(bpp, np.int32)
            for x in range(w):
                s = slice(x * bpp, (x + 1) * bpp)
                up = prev[s]
                pred = (left + up) // 2 if ft == 3 else _paeth(left, up, ul)
                left = (line[s] + pred) & 255
                cur[s] = left
                ul = up
        out[y] = cur
        prev = cur
    arr = out.astype(np.uint8).reshape(h, w, bpp)
    if depth == 16:
        arr = arr.reshape(h, w, ch, 2)
        arr = (arr[..., 0].astype(np.uint16) << 8) | arr[..., 1].astype(np.uint16)
    else:
        arr = arr.reshape(h, w, ch)
    return arr[..., 0] if ch == 1 else arr


def write_png(path: str, arr: np.ndarray) -> None:
    """Write a uint8 or uint16 ``(H, W)`` / ``(H, W, C)`` (C in 1..4) array as a PNG (filter 0)."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, ch = arr.shape
    depth = 16 if arr.dtype == np.uint16 else 8
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    body = arr.astype(">u2" if depth == 16 else np.uint8).tobytes()
    row = w * ch * depth // 8
    raw = b"".join(b"\x00" + body[y * row:(y + 1) * row] for y in range(h))

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------------------
class _SegFolder(torch.utils.data.Dataset):
    ignore_index = 255

    def __init__(self, pairs: Sequence[Tuple[str, Optional[str]]], lut: np.ndarray, crop, with_labels=True,
                 names=None, label_channel: Optional[int] = None):
        if not pairs:
            raise FileNotFoundError(f"{type(self).__name__}: no images found")
        self.pairs, self.lut, self.crop, self.with_labels = list(pairs), lut, crop, with_labels
        self.label_channel = label_channel
        self.classes = names

    def __len__(self):
        return len(self.pairs)

    def _label(self, path):
        if self.label_channel is None:
            from PIL import Image
            lab = np.array(Image.open(path))
            if lab.ndim == 3:
                lab = lab[..., 0]
        else:
            lab = read_png(path)
            lab = lab[..., self.label_channel] if lab.ndim == 3 else lab
        return self.lut[np.minimum(lab.astype(np.int64), len(self.lut) - 1)]

    def __getitem__(self, i):
        from PIL import Image
        ip, lp = self.pairs[i]
        img = Image.open(ip).convert("RGB")
        lab = self._label(lp) if (lp and self.with_labels) else None
        if self.crop is not None:
            H, W = self.crop
            img = img.resize((W, H), Image.BILINEAR)
            if lab is not None:
                lab = np.array(Image.fromarray(lab).resize((W, H), Image.NEAREST))
        x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1).contiguous()
        if lab is None:
            y = torch.full(x.shape[1:], 255, dtype=torch.long)
        else:
            y = torch.from_numpy(lab.astype(np.int64))
            if y.shape != x.shape[1:]:  # a few GTA5 labels differ in size from their image
                y = torch.from_numpy(np.array(Image.fromarray(lab).resize((x.shape[2], x.shape[1]), Image.NEAREST))
                                     .astype(np.int64))
        return x, y


def _stems(folder: str, suffix: str = ".png") -> List[str]:
    return sorted(os.path.basename(p)[:-len(suffix)] for p in glob.glob(os.path.join(folder, "*" + suffix)))


class GTA5(_SegFolder):
    """GTA5: ``root/images/*.png`` + ``root/labels/*.png`` (Cityscapes label ids) -> 19 train ids."""

    def __init__(self, root: str, crop=(720, 1280), with_labels: bool = True, list_file: Optional[str] = None):
        stems = ([os.path.splitext(l.strip())[0] for l in open(list_file) if l.strip()] if list_file
                 else _stems(os.path.join(root, "images")))
        pairs = [(os.path.join(root, "images", s + ".png"), os.path.join(root, "labels", s + ".png")) for s in stems]
        super().__init__(pairs, lookup_table(CITYSCAPES_ID_TO_TRAINID), crop, with_labels, CITYSCAPES_CLASSES)


class SynthiaRandCityscapes(_SegFolder):
    """SYNTHIA-RAND-CITYSCAPES: ``root/RGB/*.png`` + ``root/GT/LABELS/*.png`` (16-bit, class id in the first
    channel) -> the 16 shared classes (``classes=16``) or 13 (``classes=13``)."""

    def __init__(self, root: str, classes: int = 16, crop=(760, 1280), with_labels: bool = True):
        stems = _stems(os.path.join(root, "RGB"))
        pairs = [(os.path.join(root, "RGB", s + ".png"), os.path.join(root, "GT", "LABELS", s + ".png"))
                 for s in stems]
        lut = lookup_table(SYNTHIA_ID_TO_16, 65536)
        if classes == 13:
            to13 = np.full(256, 255, np.uint8)
            to13[SYNTHIA_13_IN_16] = np.arange(13)
            lut = to13[lut]
        elif classes != 16:
            raise ValueError("SYNTHIA: classes must be 16 or 13")
        super().__init__(pairs, lut, crop, with_labels, class_names(classes), label_channel=0)


class Cityscapes(_SegFolder):
    """Cityscapes ``leftImg8bit`` + ``gtFine`` ``*_labelIds.png`` of a split -> 19 (or 16 / 13) classes."""

    def __init__(self, root: str, split: str = "val", classes: int = 19, crop=(512, 1024), with_labels: bool = True):
        imgs = sorted(glob.glob(os.path.join(root, "leftImg8bit", split, "*", "*_leftImg8bit.png")))
        pairs = []
        for ip in imgs:
            city = os.path.basename(os.path.dirname(ip))
            stem = os.path.basename(ip)[:-len("_leftImg8bit.png")]
            lp = os.path.join(root, "gtFine", split, city, stem + "_gtFine_labelIds.png")
            pairs.append((ip, lp if os.path.exists(lp) else None))
        lut = _trainid_to(classes)[lookup_table(CITYSCAPES_ID_TO_TRAINID)]
        super().__init__(pairs, lut, crop, with_labels, class_names(classes))
