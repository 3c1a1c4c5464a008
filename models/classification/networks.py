"""Networks: a feature generator G and a classifier C = top(low(.)), split where the adversarial dropout
layers of DTA go (fDTA: channel-wise on G's output; cDTA: element-wise on C's hidden units), plus the
decoders and critics of I2I Adapt."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class Classifier(nn.Module):
    """``dropout -> Linear -> BN -> ReLU`` (``low``, hidden units ``u``) then ``dropout -> Linear`` (``top``)."""

    def __init__(self, in_dim: int, hidden: int, classes: int, p: float = 0.5):
        super().__init__()
        self.flat = nn.Flatten()
        self.drop1, self.fc1, self.bn1 = nn.Dropout(p), nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden)
        self.drop2, self.fc2 = nn.Dropout(p), nn.Linear(hidden, classes)

    def low(self, f: Tensor) -> Tensor:
        return torch.relu(self.bn1(self.fc1(self.drop1(self.flat(f)))))

    def top(self, u: Tensor) -> Tensor:
        return self.fc2(self.drop2(u))

    def forward(self, f: Tensor) -> Tensor:
        return self.top(self.low(f))


def toy_generator(dims: Sequence[int] = (2, 5, 5)) -> nn.Module:
    """ADR Sec. 4.1: generator layers [2, 5, 5] (Linear 2->5, Linear 5->5), BN + ReLU after each."""
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
    return nn.Sequential(*layers)


def conv_generator(in_ch: int, width: int = 32) -> nn.Module:
    """Two conv-BN-ReLU-pool blocks, output ``(N, 2*width, 4, 4)`` for any input size >= 8."""
    return nn.Sequential(
        nn.Conv2d(in_ch, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4))


class Net(nn.Module):
    """``G`` and ``C`` (and, for ADR, the extra classifier ``C2`` = ADR's C', trained on source only)."""

    def __init__(self, g: nn.Module, c: Classifier, c2: nn.Module = None):
        super().__init__()
        self.g, self.c = g, c
        self.c2 = c2

    def forward(self, x: Tensor) -> Tensor:
        return self.c(self.g(x))


def lenet_generator(in_ch: int, widths: Sequence[int] = (20, 50), kernel: int = 5) -> nn.Module:
    """The LeNet feature extractor of the digit experiments (ADDA's, which ADR uses with BatchNorm before each
    activation): ``conv5 -> BN -> ReLU -> pool2`` twice, 'same' padding. Output ``(N, widths[1], H/4, W/4)``
    (``(N, 50, 4, 4)`` at 16x16): a feature map, as I2I's decoders and fDTA's channel-wise mask need."""
    c1, c2 = widths
    pad = kernel // 2
    return nn.Sequential(
        nn.Conv2d(in_ch, c1, kernel, padding=pad), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, kernel, padding=pad), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2))


def build_net(task, p: float = 0.5, extra_classifier: bool = False, width: int = 32, hidden: int = 128) -> Net:
    """The task's default network. A task with an ``arch`` attribute of ``("lenet", (c1, c2))`` (the real-data
    tasks, :mod:`models.classification.real_data`) gets :func:`lenet_generator` with those widths and the
    :class:`Classifier` with ``hidden`` units (``width`` unused); other tasks: vectors the ADR toy network,
    images :func:`conv_generator`."""
    k = task.num_classes
    arch = getattr(task, "arch", None)
    if arch is not None and arch[0] == "lenet":
        g = lenet_generator(task.input_shape[0], arch[1])
        feat = int(torch.Size(g(torch.zeros(2, *task.input_shape)).shape[1:]).numel())
        mk = lambda: Classifier(feat, hidden, k, p)  # noqa: E731
        return Net(g, mk(), mk() if extra_classifier else None)
    if len(task.input_shape) == 1:  # moons: [2,5,5] + [5,5,2]
        g, feat, hid = toy_generator((task.input_shape[0], 5, 5)), 5, 5
    else:
        g, feat, hid = conv_generator(task.input_shape[0], width), 2 * width * 16, hidden
    mk = lambda: Classifier(feat, hid, k, p)  # noqa: E731
    return Net(g, mk(), mk() if extra_classifier else None)


# ------------------------------------------------------------------------------------------ I2I Adapt
class Decoder(nn.Module):
    """Latent ``G(x)`` -> an input-space sample of the given shape (MLP for vectors, transposed convs for
    images ``(C, H, W)`` from the ``(N, F, 4, 4)`` latent).

    Output activation: ``Sigmoid`` ([0, 1] images), or ``Tanh`` when ``out_shape`` carries
    ``value_range == (-1, 1)`` (:class:`ImageShape`, the real-data tasks' ``input_shape``), so that decoded
    images live where the inputs do (the image critics and the L1 identity/cycle terms compare them).
    """

    def __init__(self, latent_shape, out_shape, hidden: int = 32):
        super().__init__()
        self.value_range = tuple(getattr(out_shape, "value_range", (0.0, 1.0)))
        self.out_shape = tuple(out_shape)
        if len(out_shape) == 1:
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.Size(latent_shape).numel()), hidden),
                                     nn.ReLU(), nn.Linear(hidden, out_shape[0]))
        else:
            c_in = latent_shape[0]
            self.net = nn.Sequential(nn.ConvTranspose2d(c_in, hidden, 4, 2, 1), nn.BatchNorm2d(hidden), nn.ReLU(),
                                     nn.Conv2d(hidden, out_shape[0], 3, padding=1),
                                     nn.Tanh() if self.value_range == (-1.0, 1.0) else nn.Sigmoid())

    def forward(self, z: Tensor) -> Tensor:
        y = self.net(z)
        if len(self.out_shape) == 3 and y.shape[-2:] != self.out_shape[-2:]:
            y = nn.functional.interpolate(y, size=self.out_shape[-2:], mode="bilinear", align_corners=False)
        return y


class ImageShape(tuple):
    """An input shape ``(C, H, W)`` that also says the images' value range (``value_range``), for
    :class:`Decoder`'s output activation. Compares and unpacks as the plain tuple."""
    value_range = (0.0, 1.0)

    def __new__(cls, shape, value_range=(0.0, 1.0)):
        obj = super().__new__(cls, tuple(shape))
        obj.value_range = tuple(float(v) for v in value_range)
        return obj


def critic(in_shape, hidden: int = 64) -> nn.Module:
    """WGAN critic (no BatchNorm: the gradient penalty is per sample): MLP on the flattened input."""
    n = int(torch.Size(in_shape).numel())
    return nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                         nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
