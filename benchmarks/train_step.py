"""A whole UDA training step for benchmarking the losses in context: a small DeepLab-style segmentation net
with two classifier heads (CLAN), an AdvEnt entropy discriminator and a CLAN output-space discriminator.
One step = generator update (source cross entropy, MinEnt, AdvEnt adversarial loss on the self-information
map, CLAN's discrepancy-weighted adversarial loss) + discriminator update (both discriminators, CLAN's weight
map detached). The losses run through uda_ops under a chosen backend ("reference" = the eager formulas,
"native" = the CUDA kernels, "triton"); everything else is plain PyTorch. Self-contained (random data).

    python benchmarks/train_step.py                       # ms/step and peak memory per backend and dtype
    python benchmarks/train_step.py --image 256 512 --batch 4
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import uda_ops  # noqa: E402
from gpu_common import backend, bench_device, machine_info, peak_device_bytes, synced, time_ms  # noqa: E402

CLASSES = 19


def _conv_bn(cin, cout, stride=1, dilation=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, cin, cout, stride=1, dilation=1):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, stride, dilation),
                                  nn.Conv2d(cout, cout, 3, 1, padding=dilation, dilation=dilation, bias=False),
                                  nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return F.relu(self.body(x) + self.skip(x))


class ASPPHead(nn.Module):
    """DeepLab-v2 classifier: a sum of dilated 3x3 convolutions straight to the classes."""

    def __init__(self, cin, classes, rates=(6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(cin, classes, 3, padding=r, dilation=r) for r in rates)

    def forward(self, x):
        return sum(b(x) for b in self.branches)


class TinyDeepLab(nn.Module):
    """Output stride 8 (dilated last stages), two classifier heads, logits upsampled to the input size."""

    def __init__(self, classes=CLASSES, width=32):
        super().__init__()
        w = width
        self.stem = nn.Sequential(_conv_bn(3, w, 2), _conv_bn(w, w), nn.MaxPool2d(3, 2, 1))
        self.layers = nn.Sequential(Residual(w, 2 * w), Residual(2 * w, 4 * w, stride=2),
                                    Residual(4 * w, 4 * w, dilation=2), Residual(4 * w, 8 * w, dilation=4))
        self.head1, self.head2 = ASPPHead(8 * w, classes), ASPPHead(8 * w, classes)

    def forward(self, x):
        f = self.layers(self.stem(x))
        size = x.shape[-2:]
        up = lambda z: F.interpolate(z, size=size, mode="bilinear", align_corners=True)  # noqa: E731
        return up(self.head1(f)), up(self.head2(f))


class Discriminator(nn.Module):
    """AdvEnt / CLAN fully convolutional discriminator (4 stride-2 convs, LeakyReLU 0.2)."""

    def __init__(self, cin=CLASSES, ndf=32):
        super().__init__()
        layers, c = [], cin
        for k in range(4):
            layers += [nn.Conv2d(c, ndf * 2**k, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            c = ndf * 2**k
        self.body = nn.Sequential(*layers, nn.Conv2d(c, 1, 4, 2, 1))

    def forward(self, x):
        return self.body(x)


class TrainSetup:
    SOURCE, TARGET = 0.0, 1.0

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32, image: Tuple[int, int] = (512, 1024),
                 batch: int = 2, seed: int = 0):
        torch.manual_seed(seed)
        self.device, self.dtype = device, dtype
        self.image_shape = (batch, 3) + tuple(image)
        self.model = TinyDeepLab().to(device)
        self.d_ent, self.d_out = Discriminator().to(device), Discriminator().to(device)
        self.opt_g = torch.optim.SGD(self.model.parameters(), lr=2.5e-4, momentum=0.9)
        self.opt_d = torch.optim.Adam(list(self.d_ent.parameters()) + list(self.d_out.parameters()), lr=1e-4,
                                      betas=(0.9, 0.99))
        g = torch.Generator().manual_seed(seed)
        self.xs = torch.randn(self.image_shape, generator=g).to(device)
        self.xt = torch.randn(self.image_shape, generator=g).to(device)
        self.ys = torch.randint(0, CLASSES, (batch,) + tuple(image), generator=g).to(device)

    def _autocast(self):
        if self.dtype == torch.float32:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _d_out(self, z1, z2):
        """CLAN's discriminator on the fused prediction, upsampled back to the logits' grid."""
        d = self.d_out(F.softmax(z1 + z2, dim=1))
        return F.interpolate(d, size=z1.shape[-2:], mode="bilinear", align_corners=True).to(z1.dtype)

    def step(self):
        bce = F.binary_cross_entropy_with_logits
        # generator
        self.opt_g.zero_grad(set_to_none=True)
        with self._autocast():
            z1s, z2s = self.model(self.xs)
            z1t, z2t = self.model(self.xt)
            seg = F.cross_entropy(z1s.float(), self.ys) + F.cross_entropy(z2s.float(), self.ys)
            i_t = uda_ops.self_information(z1t)
            d_ent = self.d_ent(i_t)
            adv_ent = bce(d_ent.float(), torch.full_like(d_ent.float(), self.SOURCE))
            adv_clan = uda_ops.clan_adversarial_loss(self._d_out(z1t, z2t), z1t, z2t, self.SOURCE)
            minent = uda_ops.entropy(z1t)
            loss = seg + 1e-3 * adv_ent + 1e-3 * adv_clan.float() + 1e-3 * minent.float()
        loss.backward()
        self.opt_g.step()
        # discriminators (inputs detached; CLAN's weight map detached)
        self.opt_d.zero_grad(set_to_none=True)
        with self._autocast():
            d_loss = 0.0
            for z1, z2, label in ((z1s.detach(), z2s.detach(), self.SOURCE), (z1t.detach(), z2t.detach(), self.TARGET)):
                d_i = self.d_ent(uda_ops.self_information(z1))
                d_loss = d_loss + bce(d_i.float(), torch.full_like(d_i.float(), label))
                d_loss = d_loss + uda_ops.clan_adversarial_loss(self._d_out(z1, z2), z1, z2, label,
                                                                detach_weight=True).float()
        d_loss.backward()
        self.opt_d.step()
        return loss.detach(), d_loss.detach()

    def step_fn(self, backend_name: str):
        def run():
            with backend(backend_name):
                return self.step()
        return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", type=int, nargs=2, default=(512, 1024))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    dev = bench_device()
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("train_step.py: needs a CUDA device (or UDA_BENCH_DEVICE=cpu for a smoke run)")
    info = machine_info(dev)
    print(f"{info['device']}, torch {info['torch']}, image {tuple(args.image)}, batch {args.batch}")
    backends = ["reference", "native"] + (["triton"] if dev.type == "cuda" and _has_triton() else [])
    for dtype in (torch.float32, torch.bfloat16):
        setup = TrainSetup(dev, dtype, tuple(args.image), args.batch)
        for name in backends:
            run = synced(setup.step_fn(name), dev)
            ms = time_ms(run, dev, reps=args.reps, warmup=2)
            peak = peak_device_bytes(run, dev) / 2**20
            print(f"  {str(dtype):15s} {name:10s} {ms:8.2f} ms/step   peak +{peak:8.1f} MiB")


def _has_triton() -> bool:
    from gpu_common import triton_available

    return triton_available()


if __name__ == "__main__":
    main()
