"""Segmentation networks for the ADVENT / CLAN / ADR / DTA trainers, built here (torchvision never needed).

* :class:`ResNetBackbone` — a DeepLab-v2 ResNet: 7x7 stem + max-pool (stride 4), ``layer1``, ``layer2``
  (stride 8), then ``layer3``/``layer4`` dilated (2 and 4) instead of strided, so the output stride is 8.
  ``depth=101`` with Bottleneck blocks ``[3, 4, 23, 3]`` and ``base=64`` is the paper network (layer4: 2048
  channels); the default CPU config is a narrow BasicBlock net (``depth=10``: one block per stage).
* :class:`ASPP` — DeepLab-v2's classifier: the *sum* of parallel 3x3 convolutions with dilation rates
  ``{6, 12, 18, 24}`` (paper; the CPU config uses smaller rates on its 8x16 feature map).
* :class:`DeepLabV2` — backbone + ASPP head on ``layer4``, optional auxiliary ASPP head on ``layer3``
  (ADVENT's multi-level variant), optional second head on ``layer4`` (CLAN's two classifiers), optional
  dropout inside the head (ADR's critic / classifier ``C``).
* :class:`FCDiscriminator` — the DCGAN-style fully convolutional discriminator of ADVENT and CLAN: four 4x4
  stride-2 convolutions (``ndf, 2ndf, 4ndf, 8ndf``; paper ``ndf=64``) with leaky-ReLU 0.2, then a 4x4
  stride-2 classifier to one channel.

All forwards return a dict: ``out`` (main logits at stride 8; for two heads ``out = z1 + z2``, CLAN's
ensemble), ``heads`` (the two heads' logits, CLAN), ``aux`` (auxiliary logits or absent), ``feat`` (the
``layer4`` activation, used by DTA's channel-wise adversarial dropout).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ResNetBackbone", "ASPP", "DropoutHead", "DeepLabV2", "FCDiscriminator", "build_segmenter",
           "build_discriminator", "load_imagenet_weights", "PAPER", "SMALL"]

# Widths/rates presets. `SMALL` trains on 2 CPU cores in seconds at 64x128; `PAPER` is DeepLab-v2 ResNet-101.
PAPER = dict(depth=101, base=64, rates=(6, 12, 18, 24), ndf=64)
SMALL = dict(depth=10, base=16, rates=(1, 2, 3, 4), ndf=16)

_LAYOUTS = {10: ("basic", [1, 1, 1, 1]), 18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
            50: ("bottleneck", [3, 4, 6, 3]), 101: ("bottleneck", [3, 4, 23, 3])}


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(ch)
    if kind == "gn":
        return nn.GroupNorm(min(8, ch), ch)
    raise ValueError(f"norm must be 'bn' or 'gn', got {kind!r}")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, dilation=1, norm="bn"):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = _norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = _norm(norm, planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), _norm(norm, planes))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, dilation=1, norm="bn"):
        super().__init__()
        # DeepLab-v2 (Caffe) puts the stride on the first 1x1 convolution.
        self.conv1 = nn.Conv2d(cin, planes, 1, stride, bias=False)
        self.bn1 = _norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = _norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = _norm(norm, planes * 4)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                            _norm(norm, planes * 4))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + idt)


class ResNetBackbone(nn.Module):
    """DeepLab-v2 ResNet (output stride 8). Parameter names follow torchvision's ResNet (``conv1``, ``bn1``,
    ``layer1..4``), so an ImageNet state dict from a file loads with :func:`load_imagenet_weights`."""

    def __init__(self, depth: int = 10, base: int = 16, in_ch: int = 3, norm: str = "bn"):
        super().__init__()
        if depth not in _LAYOUTS:
            raise ValueError(f"depth must be one of {sorted(_LAYOUTS)}, got {depth}")
        kind, counts = _LAYOUTS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(in_ch, base, 7, 2, 3, bias=False)
        self.bn1 = _norm(norm, base)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = base
        layers = []
        for i, (n, stride, dil) in enumerate(zip(counts, (1, 2, 1, 1), (1, 1, 2, 4))):
            planes = base * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, stride if j == 0 else 1, dil, norm))
                cin = planes * block.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.channels = [base * 2 ** i * block.expansion for i in range(4)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        c3 = self.layer3(x)
        return {"layer3": c3, "layer4": self.layer4(c3)}


class ASPP(nn.Module):
    """DeepLab-v2 ASPP classifier: sum over rates of a dilated 3x3 conv to ``classes`` channels."""

    def __init__(self, cin: int, classes: int, rates: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(cin, classes, 3, 1, r, r, bias=True) for r in rates)
        for c in self.convs:
            nn.init.normal_(c.weight, 0.0, 0.01)
            nn.init.zeros_(c.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.convs[0](x)
        for c in self.convs[1:]:
            out = out + c(x)
        return out


class DropoutHead(nn.Module):
    """ADR's classifier / critic ``C`` for segmentation: channel dropout on its input (as the ADR segmentation
    code's ``Dropout2d(0.1)``), 3x3 conv + norm + ReLU, then ASPP. Dropout is active whenever the module is in
    training mode (ADR samples two critics from it)."""

    def __init__(self, cin: int, classes: int, rates: Sequence[int], hidden: Optional[int] = None,
                 p: float = 0.5, norm: str = "bn"):
        super().__init__()
        hidden = hidden or cin
        self.body = nn.Sequential(nn.Conv2d(cin, hidden, 3, 1, 1, bias=False), _norm(norm, hidden),
                                  nn.ReLU(inplace=True))
        self.drop = nn.Dropout2d(p)
        self.cls = ASPP(hidden, classes, rates)

    def forward(self, x: Tensor) -> Tensor:
        return self.cls(self.body(self.drop(x)))


class DeepLabV2(nn.Module):
    """Backbone + head(s). ``heads=2`` gives CLAN's two classifiers (``out`` = their sum), ``aux=True`` an
    ASPP head on ``layer3`` (ADVENT's multi-level outputs), ``dropout_head=True`` ADR's dropout head ``C`` plus
    its source-only classifier ``C'`` (``clean``; the eval-mode ``out`` when ``predict_clean``)."""

    def __init__(self, classes: int, depth: int = 10, base: int = 16, rates: Sequence[int] = (1, 2, 3, 4),
                 aux: bool = False, heads: int = 1, dropout_head: bool = False, dropout_p: float = 0.1,
                 norm: str = "bn", predict_clean: bool = True):
        super().__init__()
        if heads not in (1, 2):
            raise ValueError("heads must be 1 or 2")
        self.classes, self.n_heads = classes, heads
        self.backbone = ResNetBackbone(depth, base, norm=norm)
        c3, c4 = self.backbone.channels[2], self.backbone.channels[3]
        if dropout_head:
            self.head = DropoutHead(c4, classes, rates, p=dropout_p, norm=norm)
        else:
            self.head = ASPP(c4, classes, rates)
        self.head2 = ASPP(c4, classes, rates) if heads == 2 else None
        self.aux_head = ASPP(c3, classes, rates) if aux else None
        # ADR Sec. 3.3: a classifier C' trained on source only on detached features (never updates G); with
        # predict_clean an ADR model predicts with it in eval mode, else with C (dropout off, as the ADR
        # segmentation code does).
        self.clean_head = ASPP(c4, classes, rates) if dropout_head else None
        self.predict_clean = predict_clean

    def heads(self):
        """The classifier modules that act on ``layer4`` (one, or CLAN's two)."""
        return [self.head] if self.head2 is None else [self.head, self.head2]

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        f = self.backbone(x)
        out = {"feat": f["layer4"]}
        z = self.head(f["layer4"])
        if self.head2 is not None:
            z2 = self.head2(f["layer4"])
            out["heads"] = (z, z2)
            z = z + z2
        out["out"] = z
        if self.clean_head is not None:
            out["clean"] = self.clean_head(f["layer4"].detach())
            if not self.training and self.predict_clean:
                out["out"] = out["clean"]
        if self.aux_head is not None:
            out["aux"] = self.aux_head(f["layer3"])
        return out


class FCDiscriminator(nn.Module):
    """DCGAN-style fully convolutional domain discriminator (ADVENT Sec. 4, CLAN Sec. 4): logits at 1/32
    of the input grid, one channel (source vs target)."""

    def __init__(self, classes: int, ndf: int = 64):
        super().__init__()
        chans = [classes, ndf, ndf * 2, ndf * 4, ndf * 8]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 4, 2, 1) for a, b in zip(chans[:-1], chans[1:]))
        self.classifier = nn.Conv2d(chans[-1], 1, 4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        for c in self.convs:
            x = F.leaky_relu(c(x), 0.2)
        return self.classifier(x)


def build_segmenter(classes: int, size: str = "small", **kw) -> DeepLabV2:
    """``size='small'`` (CPU) or ``'paper'`` (ResNet-101, rates 6/12/18/24); ``kw`` overrides any argument."""
    preset = dict(SMALL if size == "small" else PAPER)
    preset.pop("ndf")
    preset.update(kw)
    return DeepLabV2(classes, **preset)


def build_discriminator(classes: int, size: str = "small", ndf: Optional[int] = None) -> FCDiscriminator:
    return FCDiscriminator(classes, ndf or (SMALL if size == "small" else PAPER)["ndf"])


def load_imagenet_weights(model: nn.Module, path: str, strict: bool = False) -> Dict[str, list]:
    """Load user-provided ImageNet weights (a torchvision-style ResNet state dict, or a checkpoint with a
    ``state_dict``/``model`` entry) from ``path`` into the backbone of ``model`` (a :class:`DeepLabV2` or
    a :class:`ResNetBackbone`). ``fc.*`` and shape-mismatched entries are skipped and reported.
    Returns ``{"loaded": [...], "skipped": [...], "missing": [...]}``."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    backbone = model.backbone if hasattr(model, "backbone") else model
    own = backbone.state_dict()
    loaded, skipped = {}, []
    for k, v in sd.items():
        k2 = k[len("module."):] if k.startswith("module.") else k
        k2 = k2[len("backbone."):] if k2.startswith("backbone.") else k2
        if k2 in own and own[k2].shape == v.shape:
            loaded[k2] = v
        else:
            skipped.append(k)
    missing = [k for k in own if k not in loaded]
    if strict and missing:
        raise ValueError(f"load_imagenet_weights: {len(missing)} backbone entries missing, e.g. {missing[:3]}")
    backbone.load_state_dict(loaded, strict=False)
    return {"loaded": sorted(loaded), "skipped": skipped, "missing": missing}
