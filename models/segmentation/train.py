"""Segmentation UDA trainers: source-only, MinEnt (+ entropy ranking, + class-ratio prior), AdvEnt, CLAN, I2I,
ADR and DTA, on the synthetic shift or on GTA5/SYNTHIA -> Cityscapes; single process or ``torchrun``.

    python -m models.train --task synthetic --method advent --seed 0 --iters 300 --out runs/advent
    torchrun --nproc_per_node 2 -m models.train --task synthetic --method clan --iters 100
    python -m models.train --task gta5->cityscapes --method advent --set source_root=data/GTA5 \\
        --set target_root=data/Cityscapes --set size=paper --set imagenet_weights=resnet101.pth

Method steps are ``uda_ops.methods``; loss math comes only from the public ``uda_ops`` API (entropy, self_information, entropy_ranking_loss,
class_ratio_prior_loss, clan_adversarial_loss, weight_discrepancy_loss, sym_kl, kl_div, and
``uda_ops.dropout`` for DTA's mask search). Segmenter: SGD (momentum 0.9) with the poly schedule
``lr (1 - it/iters)^0.9``; discriminators: Adam. Defaults are the papers' (``PAPER_DEFAULTS``); the
``synthetic`` task overrides the ones that depend on the budget and on training from scratch
(``SYNTHETIC_DEFAULTS``, documented there). Outputs in ``--out``: ``config.json``, ``metrics.json``,
``checkpoint.pt``, ``curves.png`` (mIoU and losses), ``samples.png`` (input | GT | prediction | entropy).
``checkpoint_every``/``resume``: resumable checkpoints (``models.checkpoint``; every process's RNG state).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from uda_ops import methods

from .. import checkpoint as ckpt
from ..train_io import seed_everything
from . import distributed as D
from .metrics import evaluate, save_panels
from .networks import build_discriminator, build_segmenter, load_imagenet_weights

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

METHODS = ("source_only", "minent", "advent", "clan", "adr", "dta", "i2i")
TASKS = ("synthetic", "gta5", "synthia")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class _RunConfig:
    method: str = "source_only"
    task: str = "synthetic"
    seed: int = 0
    iters: int = 250000
    batch: int = 1                 # per process
    out: str = ""
    device: str = "auto"
    amp: bool = True               # bf16 autocast on CUDA (ignored on CPU)
    # network
    size: str = "paper"            # "small" (CPU) or "paper" (ResNet-101, ASPP rates 6/12/18/24, ndf 64)
    depth: Optional[int] = None
    base: Optional[int] = None
    norm: str = "bn"
    ndf: Optional[int] = None      # discriminator width (paper 64)
    multi_level: bool = True       # ADVENT: aux ASPP head on layer3 (conv4)
    imagenet_weights: str = ""
    adr_dropout: float = 0.1       # ADR: Dropout2d on C's input, as the ADR segmentation code's (0.1)
    adr_predict: str = "c"         # ADR's eval-mode prediction: "c" (the dropout head, as the ADR segmentation
    #                                code) or "c2" (C', a head trained on detached source features, Sec. 3.3)
    # optimisation (ADVENT Sec. 4 / CLAN Sec. 4.1)
    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4     # ADVENT (SGD); CLAN: 5e-4 for both optimisers (METHOD_DEFAULTS)
    power: float = 0.9
    lr_d: float = 1e-4
    betas_d: tuple = (0.9, 0.99)
    lambda_seg_aux: float = 0.1


# The methods' hyperparameters, Config's fields after _RunConfig's: each sets that field of the method's
# ``Hyper`` (``uda_ops.methods.<method>``) and has its default there (the paper's) unless a third value gives
# this task's own. MinEnt: ADVENT Eq. 4, Sec. 3.3, 4.3 (``entropy_ranking`` > 0 minimises only on this top
# ratio of pixels, paper 0.3; ``class_prior_mu`` > 0 adds the class-ratio prior loss, paper mu = 0.5). AdvEnt:
# Eq. 9. CLAN: Eqs. 4-6 (``preheat``: the fraction of iterations with the plain, unweighted adversarial loss;
# ``clan_damping``: lambda_adv * (1 - it/iters)). ADR: Eqs. 1-5 (``adr_divergence``: "exact", "l1" (the ADR
# segmentation code's default d_loss "diff") or "official"). DTA: Eq. 12, Table A-1's segmentation row. I2I
# Adapt: Eq. 7, the Table 1 special cases by zero weights.
METHOD_FIELDS = {
    "minent": ("lambda_ent", "lambda_ent_aux", "entropy_ranking", "class_prior_mu", "lambda_cp"),
    "advent": ("lambda_adv", "lambda_adv_aux"),
    "clan": ("lambda_adv", "lambda_weight", "lambda_local", "epsilon", ("preheat", "preheat", 0.05),
             ("clan_damping", "damping")),
    "adr": (("adr_gen_steps", "n_gen"), ("adr_lambda_balance", "lambda_balance", 0.0),
            ("adr_divergence", "divergence", "exact")),
    "dta": ("lambda_dta", ("dta_lambda_ent", "lambda_ent"), ("dta_delta_c", "delta_c", 0.02),
            ("dta_ramp", "ramp_epochs", 1)),
    "i2i": tuple((f"i2i_{n}", n) for n in ("lambda_c", "lambda_z", "lambda_tr", "lambda_id", "lambda_cyc",
                                            "lambda_trc", "gp")),
}


@dataclass
class Config(methods.with_hyper_fields(_RunConfig, METHOD_FIELDS)):
    """One segmentation run: _RunConfig's fields, the methods' (METHOD_FIELDS), data and logging."""
    # data
    source_root: str = ""
    target_root: str = ""
    crop: tuple = (512, 1024)
    classes: int = 19              # synthia: 16 (13-class mIoU also reported)
    n_source: int = 400
    n_target: int = 400
    n_val: int = 100
    workers: int = 0
    # logging
    eval_every: int = 0            # 0: only at the end
    log_every: int = 10
    save_images: int = 4
    progress: bool = True
    threads: int = 0
    checkpoint_every: int = 0      # > 0: a resumable OUT/checkpoint.pt every N iterations (models.checkpoint)
    resume: bool = False           # continue from OUT/checkpoint.pt


# The papers' values are the Config defaults above. The synthetic task trains a small network from scratch
# for a few hundred iterations, so the step size and the adaptation weights are larger there (the paper
# weights are tuned for ImageNet-initialised ResNet-101 over 100k+ iterations). It uses GroupNorm: with
# BatchNorm trained from scratch, every method that forwards target batches in training mode also moves the
# running statistics to the target domain (AdaBN), and on this task that alone is worth as much as the
# adaptation losses (source only 39.9 -> 46.6 mIoU by re-estimating the BN statistics on target images), which
# would hide what the losses do. DeepLab-v2 itself keeps its (ImageNet) BatchNorm statistics frozen.
SYNTHETIC_DEFAULTS = dict(
    iters=300, batch=4, size="small", base=8, ndf=8, norm="gn", eval_every=100, lr=0.02, weight_decay=5e-4, lr_d=1e-4,
    lambda_ent=0.1, lambda_ent_aux=0.02, lambda_cp=0.1, lambda_adv=0.03, lambda_adv_aux=0.006,
    lambda_weight=0.01, preheat=0.2, crop=(64, 128), classes=6, multi_level=True,
    dta_lambda_ent=0.05, lambda_dta=0.5, dta_delta_c=0.1,
)
TASK_DEFAULTS = {"synthetic": SYNTHETIC_DEFAULTS, "gta5": dict(classes=19),
                 "synthia": dict(classes=16, crop=(512, 1024))}
METHOD_DEFAULTS = {"clan": dict(lr_d=5e-5, weight_decay=5e-4, multi_level=False), "adr": dict(multi_level=False),
                   "dta": dict(multi_level=False)}


def make_config(method: str = "source_only", task: str = "synthetic", **over) -> Config:
    """Dataclass defaults (papers) < task defaults < method defaults < explicit overrides."""
    vals = dict(TASK_DEFAULTS.get(task, {}))
    vals.update(METHOD_DEFAULTS.get(method, {}))
    if method == "clan" and task == "synthetic":
        # tuned on the synthetic shift (3 seeds each): lambda_adv 0.01 / 0.03 / 0.1 / 0.3 gave 56.2 / 57.1 / 58.0 /
        # 60.6 mIoU (source only 56.2); its discriminator sees probabilities, decayed by (1 - it/iters)
        vals.update(lr_d=1e-4, lambda_adv=0.3)
    vals.update({k: v for k, v in over.items() if v is not None})
    return Config(method=method, task=task, **vals)


# ----------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------
def build_data(cfg: Config):
    """(source train, target train, target val, info dict: classes, names, palette, subset)."""
    if cfg.task == "synthetic":
        from .synthetic import SYN_CLASSES, SYN_PALETTE, SyntheticShift
        size = tuple(cfg.crop)
        return (SyntheticShift("source", "train", cfg.n_source, size), SyntheticShift("target", "train", cfg.n_target, size),
                SyntheticShift("target", "val", cfg.n_val, size),
                dict(classes=len(SYN_CLASSES), names=SYN_CLASSES, palette=SYN_PALETTE, subset=None))
    from . import datasets as ds
    if not cfg.source_root or not cfg.target_root:
        raise SystemExit(f"--task {cfg.task} needs --source-root and --target-root")
    if cfg.task == "gta5":
        src = ds.GTA5(cfg.source_root, crop=cfg.crop)
    else:
        src = ds.SynthiaRandCityscapes(cfg.source_root, classes=cfg.classes, crop=cfg.crop)
    tgt = ds.Cityscapes(cfg.target_root, "train", classes=cfg.classes, crop=cfg.crop, with_labels=False)
    val = ds.Cityscapes(cfg.target_root, "val", classes=cfg.classes, crop=None)
    names = ds.class_names(cfg.classes)
    subset = ds.SYNTHIA_13_IN_16 if cfg.classes == 16 else None
    return src, tgt, val, dict(classes=cfg.classes, names=names, palette=ds.palette(cfg.classes), subset=subset)


class InfiniteLoader:
    """Random batches forever, seeded per process (``seed``, ``rank``); a DataLoader when workers > 0.
    ``start``: the number of batches already drawn (a resumed run continues the same sequence)."""

    def __init__(self, dataset, batch: int, seed: int, workers: int = 0, start: int = 0):
        self.ds, self.batch = dataset, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.workers = workers
        self.skip = start * batch
        self._it = None

    def _sampler(self):
        skip, self.skip = self.skip, 0
        while True:
            perm = torch.randperm(len(self.ds), generator=self.gen).tolist()
            if skip >= len(perm):
                skip -= len(perm)
                continue
            yield from perm[skip:]
            skip = 0

    def __iter__(self):
        if self.workers:
            dl = torch.utils.data.DataLoader(self.ds, self.batch, sampler=self._sampler(), num_workers=self.workers,
                                             drop_last=True, persistent_workers=True)
            return iter(dl)
        return self._plain()

    def _plain(self):
        samp = self._sampler()
        imgs = getattr(self.ds, "images", None)
        while True:
            idx = [next(samp) for _ in range(self.batch)]
            if imgs is not None:
                yield self.ds.images[idx], self.ds.labels[idx]
            else:
                items = [self.ds[i] for i in idx]
                yield torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def class_prior(dataset, classes: int, max_items: int = 500) -> torch.Tensor:
    """l1-normalised histogram of source label pixels (ADVENT's class-ratio prior p_s)."""
    labs = getattr(dataset, "labels", None)
    if labs is None:
        labs = torch.stack([dataset[i][1] for i in range(min(len(dataset), max_items))])
    h = torch.bincount(labs[labs < classes].reshape(-1), minlength=classes).double()
    return (h / h.sum()).float()


# ----------------------------------------------------------------------------------------------------------
# trainer
# ----------------------------------------------------------------------------------------------------------
def poly_lr(base: float, it: int, iters: int, power: float) -> float:
    return base * (1 - it / max(iters, 1)) ** power


class _Backbone(nn.Module):
    """G for the method layer: normalise, backbone; ``layer4`` (or ``{layer3, layer4}`` for multi-level
    heads). Records the input size for :class:`_Head`'s upsampling."""

    def __init__(self, net, mean, std, use_amp: bool, multi_level: bool):
        super().__init__()
        self.backbone, self.multi_level, self.use_amp = net.backbone, multi_level, use_amp
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.size = None

    def forward(self, x):
        self.size = x.shape[-2:]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_amp):
            f = self.backbone((x - self.mean) / self.std)
        return f if self.multi_level else f["layer4"]


class _Head(nn.Module):
    """C for the method layer: a segmenter head on ``layer4`` (or ``key``), float32 logits upsampled to the
    last input size of ``g``."""

    def __init__(self, head, g: _Backbone, key: str = "layer4"):
        super().__init__()
        self.head, self.key = head, key
        self.g = [g]  # not a submodule (its parameters are G's)

    def forward(self, f):
        if isinstance(f, dict):
            f = f[self.key]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.g[0].use_amp):
            z = self.head(f)
        return F.interpolate(z.float(), size=self.g[0].size, mode="bilinear", align_corners=False)


class _ScoreMap(nn.Module):
    """A discriminator in float32 (bf16 autocast on CUDA inside)."""

    def __init__(self, d, use_amp: bool):
        super().__init__()
        self.d, self.use_amp = d, use_amp

    def forward(self, x):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_amp):
            return self.d(x).float()


def method_hyper(cfg: "Config", prior: Optional[torch.Tensor]):
    """The method's ``uda_ops.methods.<method>.Hyper``: its METHOD_FIELDS from ``cfg``, and what this task sets
    or derives. ADR: each KL's target held constant, source and target through G separately. DTA: fDTA only
    (no cDTA split in the segmenter's head), the clean pass as reference, no VAT, normalised entropy; one
    "epoch" of the delta ramp = len(source) / global batch iterations."""
    fixed = {"minent": dict(prior=prior), "clan": dict(iters=cfg.iters),
             "adr": dict(detach_targets=True, joint=False),
             "dta": dict(lambda_vat=0.0, delta_e=0.0, random_dropout=0.0, kl_norm="sum", entropy_nats=False,
                         cdta=False, joint=False,
                         steps_per_epoch=max(1, cfg.n_source // max(cfg.batch * D.world(), 1)))}
    return methods.hyper_from(cfg, cfg.method, **fixed.get(cfg.method, {}))


class SegTrainer:
    """One object per run; ``step(xs, ys, xt, it)`` does one iteration of ``cfg.method`` (the method's
    ``uda_ops.methods`` step over this task's segmenter, discriminators and optimisers) and returns the
    losses as floats. Gradients are averaged over processes before every optimiser step (``D.allreduce_grads``)
    when distributed."""

    def __init__(self, cfg: Config, classes: int, prior: Optional[torch.Tensor] = None):
        self.cfg, self.C = cfg, classes
        dev = cfg.device
        self.dev = dev
        kw = {}
        if cfg.depth:
            kw["depth"] = cfg.depth
        if cfg.base:
            kw["base"] = cfg.base
        m = cfg.method
        multi = cfg.multi_level and m in ("source_only", "minent", "advent")
        self.net = build_segmenter(classes, cfg.size, aux=multi, heads=2 if m == "clan" else 1,
                                   dropout_head=m == "adr", dropout_p=cfg.adr_dropout, norm=cfg.norm,
                                   predict_clean=cfg.adr_predict == "c2", **kw).to(dev)
        if cfg.imagenet_weights:
            rep = load_imagenet_weights(self.net, cfg.imagenet_weights)
            if D.is_main():
                print(f"loaded {len(rep['loaded'])} ImageNet tensors from {cfg.imagenet_weights} "
                      f"({len(rep['missing'])} missing, {len(rep['skipped'])} skipped)")
        D.broadcast_params(self.net)
        self.mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
        self.use_amp = bool(cfg.amp) and dev.startswith("cuda")
        g = _Backbone(self.net, self.mean, self.std, self.use_amp, multi)
        parts = methods.Parts(g=g, c=_Head(self.net.head, g), lambda_sup_aux=cfg.lambda_seg_aux,
                              sync=lambda o: D.allreduce_grads(p for grp in o.param_groups for p in grp["params"]))
        if multi:
            parts.aux = _Head(self.net.aux_head, g, "layer3")
        if m == "clan":
            parts.c2 = _Head(self.net.head2, g)
        if m == "adr":
            parts.c2 = _Head(self.net.clean_head, g)
        self.discs: List[nn.Module] = []
        if m in ("advent", "clan"):
            n = 2 if (m == "advent" and multi) else 1
            self.discs = [build_discriminator(classes, cfg.size, cfg.ndf).to(dev) for _ in range(n)]
        elif m == "i2i":  # I2I's decoders (layer4 -> image) and WGAN critics (latent, each image domain)
            from models.classification.networks import Decoder, critic
            with torch.no_grad():
                feat = self.net.backbone(torch.zeros(1, 3, *cfg.crop, device=dev))["layer4"].shape[1:]
            img = (3, *cfg.crop)
            parts.modules = {"dec_s": Decoder(feat, img).to(dev), "dec_t": Decoder(feat, img).to(dev)}
            self.discs = [critic(feat).to(dev), critic(img).to(dev), critic(img).to(dev)]
            parts.modules.update(zip(("d_z", "d_s", "d_t"), self.discs))
        for d in self.discs + list(parts.modules.values()):
            D.broadcast_params(d)
        parts.discs = [_ScoreMap(d, self.use_amp) for d in self.discs] if m in ("advent", "clan") else []
        adam_d = lambda ps: torch.optim.Adam(ps, lr=cfg.lr_d, betas=tuple(cfg.betas_d),  # noqa: E731
                                             weight_decay=cfg.weight_decay if m == "clan" else 0.0)
        self.opt_d = [adam_d(d.parameters()) for d in self.discs]
        parts.opt_d = self.opt_d
        sgd = lambda params: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,  # noqa: E731
                                             weight_decay=cfg.weight_decay)
        if m == "adr":
            parts.opt_g = sgd(self.net.backbone.parameters())
            parts.opt_c = sgd(list(self.net.head.parameters()) + list(self.net.clean_head.parameters()))
            self.opts = [parts.opt_g, parts.opt_c]
        else:
            dec = [p for k in ("dec_s", "dec_t") if k in parts.modules for p in parts.modules[k].parameters()]
            parts.opt = sgd(list(self.net.parameters()) + dec)
            self.opts = [parts.opt]
        parts.generator = torch.Generator(device=dev).manual_seed(cfg.seed + 1) if m == "i2i" else None
        self.parts, self.method = parts, methods.get(m)
        self.hp = method_hyper(cfg, prior.to(dev) if prior is not None else None)

    def set_lr(self, it: int) -> float:
        lr = poly_lr(self.cfg.lr, it, self.cfg.iters, self.cfg.power)
        for o in self.opts:
            for g in o.param_groups:
                g["lr"] = lr
        return lr

    def step(self, xs, ys, xt, it: int) -> Dict[str, float]:
        self.set_lr(it)
        return self.method.step(self.parts, self.hp, xs, ys, xt, it)

    # -- state -----------------------------------------------------------------------------------------
    def _decoders(self):
        return {k: m for k, m in self.parts.modules.items() if k.startswith("dec")}  # I2I (critics: discs)

    def state_dict(self):
        sd = {"model": self.net.state_dict(), "opts": [o.state_dict() for o in self.opts]}
        if self.discs:
            sd["discs"] = [d.state_dict() for d in self.discs]
            sd["opt_d"] = [o.state_dict() for o in self.opt_d]
        sd.update({k: m.state_dict() for k, m in self._decoders().items()})
        return sd

    def load_state_dict(self, sd):
        self.net.load_state_dict(sd["model"])
        for o, s in zip(self.opts, sd["opts"]):
            o.load_state_dict(s)
        for d, s in zip(self.discs, sd.get("discs", [])):
            d.load_state_dict(s)
        for o, s in zip(getattr(self, "opt_d", []), sd.get("opt_d", [])):
            o.load_state_dict(s)
        for k, m in self._decoders().items():
            m.load_state_dict(sd[k])


def _plot(history: List[dict], evals: List[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    keys = sorted({k for h in history for k in h if k not in ("it", "lr", "delta")})
    for k in keys:
        xs = [h["it"] for h in history if k in h]
        ax[0].plot(xs, [h[k] for h in history if k in h], label=k)
    ax[0].set_yscale("symlog", linthresh=1e-3)
    ax[0].set_xlabel("iteration")
    ax[0].set_title("losses")
    ax[0].legend(fontsize=7)
    ax[1].plot([e["it"] for e in evals], [100 * e["miou"] for e in evals], "o-")
    ax[1].set_xlabel("iteration")
    ax[1].set_title("target mIoU (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _save_resumable(tr: SegTrainer, cfg: Config, path: str, iteration: int, history, evals) -> str:
    """Every process's random state gathered to rank 0, which writes the checkpoint atomically."""
    mine = ckpt.rng_state(tr.parts.generator)  # the global RNGs and the method's generator (I2I)
    ranks = [mine]
    if D.is_dist():
        ranks = [None] * D.world()
        torch.distributed.all_gather_object(ranks, mine)
    if D.is_main():
        ckpt.save_atomic({"config": dataclasses.asdict(cfg), **tr.state_dict(),
                          "resume": {"iteration": iteration, "history": history, "evals": evals, "ranks": ranks}},
                         path)
    D.barrier()
    return path


def run(cfg: Config) -> Dict[str, object]:
    """Train and evaluate one configuration; returns the final metrics (rank 0; other ranks: only
    ``trainer``) and the :class:`SegTrainer` under ``"trainer"``."""
    if cfg.device == "auto":
        cfg.device = "cuda" if torch.cuda.is_available() else "cpu"
    D.init(cfg.device)
    if D.is_dist() and cfg.device.startswith("cuda"):
        cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    main = D.is_main()
    if cfg.method not in METHODS:
        raise SystemExit(f"unknown method {cfg.method!r}; one of {METHODS}")
    if main:
        print("config: " + json.dumps(dataclasses.asdict(cfg), sort_keys=True), flush=True)
    seed_everything(cfg.seed)                       # same initial weights on every rank (DDP broadcasts anyway)
    src, tgt, val, info = build_data(cfg)
    classes = info["classes"]
    prior = class_prior(src, classes) if cfg.class_prior_mu > 0 else None
    tr = SegTrainer(cfg, classes, prior)
    r = D.rank()
    path = os.path.join(cfg.out, ckpt.CHECKPOINT) if cfg.out else None
    if (cfg.checkpoint_every or cfg.resume) and not path:
        raise SystemExit("--checkpoint-every and --resume need --out")
    start, history, evals, last = 0, [], [], None
    if cfg.resume:
        sd = ckpt.load_for_resume(path, dataclasses.asdict(cfg))
        if len(sd["resume"]["ranks"]) != D.world():
            raise ValueError(f"--resume: {path} was written by {len(sd['resume']['ranks'])} processes, "
                             f"this run has {D.world()}")
        tr.load_state_dict(sd)
        start, history, evals, last = sd["resume"]["iteration"], sd["resume"]["history"], sd["resume"]["evals"], path
    ls = InfiniteLoader(src, cfg.batch, cfg.seed * 1000 + 2 * r, cfg.workers, start=start)
    lt = InfiniteLoader(tgt, cfg.batch, cfg.seed * 1000 + 2 * r + 1, cfg.workers, start=start)
    its, itt = iter(ls), iter(lt)
    torch.manual_seed(cfg.seed * 7919 + r)          # dropout and other randomness differ per rank
    if cfg.resume:  # after the per-rank seed above, which it replaces
        ckpt.set_rng_state(sd["resume"]["ranks"][r], tr.parts.generator)
    bar = tqdm(range(start, cfg.iters), desc=f"{cfg.method} s{cfg.seed}", initial=start, total=cfg.iters,
               disable=not (main and cfg.progress and tqdm), dynamic_ncols=True, mininterval=1.0) if tqdm \
        else range(start, cfg.iters)
    t0 = time.time()
    for it in bar:
        xs, ys = next(its)
        xt, _ = next(itt)
        xs, ys, xt = xs.to(cfg.device), ys.to(cfg.device), xt.to(cfg.device)
        logs = tr.step(xs, ys, xt, it)
        ckpt.check_finite(logs, it, last)
        if it % cfg.log_every == 0 or it == cfg.iters - 1:
            history.append({"it": it, **logs})
            if tqdm and main and cfg.progress:
                bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items()})
        if main and cfg.eval_every and (it + 1) % cfg.eval_every == 0 and it + 1 < cfg.iters:
            e = evaluate(tr.net, val, classes, tr.mean, tr.std, device=cfg.device, class_subset=info["subset"])
            evals.append({"it": it + 1, "miou": e["miou"]})
        if cfg.checkpoint_every and (it + 1) % cfg.checkpoint_every == 0 and it + 1 < cfg.iters:
            last = _save_resumable(tr, cfg, path, it + 1, history, evals)
    train_time = time.time() - t0
    result: Dict[str, object] = {}
    if main:
        e = evaluate(tr.net, val, classes, tr.mean, tr.std, device=cfg.device, class_subset=info["subset"])
        evals.append({"it": cfg.iters, "miou": e["miou"]})
        result = {"method": cfg.method, "task": cfg.task, "seed": cfg.seed, "iters": cfg.iters,
                  "world_size": D.world(), "miou": e["miou"], "pixel_acc": e["pixel_acc"],
                  "iou": dict(zip(info["names"], e["iou"])), "train_time_s": train_time,
                  "history": history, "evals": evals}
        if "miou_subset" in e:
            result["miou_13"] = e["miou_subset"]
        result["final"] = {k: 100.0 * result[k] for k in ("miou", "pixel_acc", "miou_13") if k in result}
        print(f"[{cfg.method} seed {cfg.seed}] target mIoU {100 * e['miou']:.2f}  "
              f"({train_time:.1f}s, {cfg.iters} it, world {D.world()})  per class: "
              + ", ".join(f"{n} {100 * v:.1f}" for n, v in zip(info["names"], e["iou"])), flush=True)
        if cfg.out:
            os.makedirs(cfg.out, exist_ok=True)
            with open(os.path.join(cfg.out, "config.json"), "w") as f:
                json.dump(dataclasses.asdict(cfg), f, indent=1)
            with open(os.path.join(cfg.out, "metrics.json"), "w") as f:
                json.dump({**result, "confusion": e["confusion"]}, f, indent=1)
            ckpt.save_atomic({"config": dataclasses.asdict(cfg), **tr.state_dict()}, path)
            try:
                _plot(history, evals, os.path.join(cfg.out, "curves.png"))
            except ImportError:  # pragma: no cover
                pass
            if cfg.save_images:
                k = min(cfg.save_images, len(val))
                items = [val[i] for i in range(k)]
                save_panels({cfg.method: tr.net}, torch.stack([a for a, _ in items]).to(cfg.device),
                            torch.stack([b for _, b in items]), info["palette"],
                            os.path.join(cfg.out, "samples.png"), tr.mean, tr.std)
    result["trainer"] = tr
    D.barrier()
    return result
