"""Segmentation UDA (issue 5): networks, synthetic shift, real-dataset loaders on tiny generated trees, mIoU,
every trainer for a few iterations, reproducibility, the CLI, and a two-process torchrun (gloo) run."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `models` is not an installed package
    sys.path.insert(0, ROOT)

from models.segmentation import datasets as ds  # noqa: E402
from models.segmentation.metrics import TITLE_H, confusion_matrix, iou_from_confusion, save_panels
from models.segmentation.networks import (DeepLabV2, FCDiscriminator, ResNetBackbone, build_discriminator,
                                          build_segmenter, load_imagenet_weights)
from models.segmentation.synthetic import SYN_CLASSES, SYN_PALETTE, SyntheticShift, make_split
from models.segmentation.train import METHODS, make_config, poly_lr, run
TINY = dict(iters=3, batch=2, n_source=8, n_target=8, n_val=4, progress=False, save_images=0, threads=1,
            adr_gen_steps=1)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster, and kinder to a shared machine
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ networks
def test_segmenter_variants_shapes():
    x = torch.randn(2, 3, 64, 128)
    net = build_segmenter(6, "small", aux=True)
    o = net(x)
    assert o["out"].shape == (2, 6, 8, 16) and o["aux"].shape == (2, 6, 8, 16)  # output stride 8
    assert o["feat"].shape[:2] == (2, net.backbone.channels[3])
    clan = build_segmenter(6, "small", heads=2)
    o = clan(x)
    z1, z2 = o["heads"]
    torch.testing.assert_close(o["out"], z1 + z2)
    assert len(clan.heads()) == 2 and sum(p.numel() for p in clan.head.parameters()) == \
        sum(p.numel() for p in clan.head2.parameters())
    adr = build_segmenter(6, "small", dropout_head=True).train()
    a, b = adr(x)["out"], adr(x)["out"]
    assert a.shape == (2, 6, 8, 16) and not torch.equal(a, b)  # dropout: two different critics
    adr.eval()
    torch.testing.assert_close(adr(x)["out"], adr(x)["out"])
    torch.testing.assert_close(adr(x)["out"], adr(x)["clean"])  # predicts with C' by default
    adr.predict_clean = False                                    # or with C, dropout off
    torch.testing.assert_close(adr(x)["out"], adr.head(adr.backbone(x)["layer4"]))
    gn = build_segmenter(6, "small", norm="gn", depth=18)
    assert gn(x[:1])["out"].shape == (1, 6, 8, 16)


def test_paper_widths():
    net = build_segmenter(19, "paper", aux=True)
    assert net.backbone.channels == [256, 512, 1024, 2048]
    assert [len(getattr(net.backbone, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert [c.dilation[0] for c in net.head.convs] == [6, 12, 18, 24]
    assert 42e6 < sum(p.numel() for p in net.parameters()) < 46e6
    d = build_discriminator(19, "paper")
    assert [c.out_channels for c in d.convs] == [64, 128, 256, 512]
    assert d(torch.randn(1, 19, 64, 128)).shape == (1, 1, 2, 4)


def test_discriminator_small():
    d = FCDiscriminator(6, ndf=8)
    assert d(torch.randn(3, 6, 64, 128)).shape == (3, 1, 2, 4)


def test_load_imagenet_weights(tmp_path):
    src = ResNetBackbone(18, 8)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    sd["fc.weight"] = torch.randn(1000, 64)
    path = tmp_path / "imagenet.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    net = DeepLabV2(6, depth=18, base=8)
    rep = load_imagenet_weights(net, str(path))
    assert not rep["missing"] and rep["skipped"] == ["module.fc.weight"]
    for k, v in src.state_dict().items():
        torch.testing.assert_close(net.backbone.state_dict()[k], v)


# ------------------------------------------------------------------------------------------------ metrics
def test_confusion_and_miou():
    gt = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pr = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    conf = confusion_matrix(pr, gt, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]  # the 255 pixel is ignored
    r = iou_from_confusion(conf)
    np.testing.assert_allclose(r["iou"], [1 / 3, 3 / 4, 1 / 2])
    assert r["miou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert r["pixel_acc"] == pytest.approx(5 / 7)
    r = iou_from_confusion(confusion_matrix(torch.zeros(4), torch.zeros(4), 3))  # absent classes: NaN, skipped
    assert r["miou"] == 1.0 and np.isnan(r["iou"][1])


def test_poly_lr():
    assert poly_lr(1.0, 0, 100, 0.9) == 1.0
    assert poly_lr(1.0, 50, 100, 0.9) == pytest.approx(0.5 ** 0.9)


# ------------------------------------------------------------------------------------------------ data
def test_synthetic_shift_deterministic_and_shifted():
    a = make_split(6, "source", 5)
    b = make_split(6, "source", 5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    xs, ys = make_split(32, "source", 1)
    xt, yt = make_split(32, "target", 1)
    assert xs.shape == (32, 3, 64, 128) and ys.dtype == torch.int64 and xs.min() >= 0 and xs.max() <= 1
    assert set(torch.unique(ys).tolist()) == set(range(len(SYN_CLASSES)))
    # same layout statistics, different appearance: per-class mean colours differ between the domains
    for c in range(len(SYN_CLASSES)):
        ms = xs.permute(1, 0, 2, 3)[:, ys == c].mean(1)
        mt = xt.permute(1, 0, 2, 3)[:, yt == c].mean(1)
        assert (ms - mt).abs().max() > 0.05 or c == 5
    ds_ = SyntheticShift("target", "val", 4)
    assert len(ds_) == 4 and ds_[0][0].shape == (3, 64, 128)


def test_png_roundtrip(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    a16 = rng.integers(0, 65535, (5, 7, 3)).astype(np.uint16)
    ds.write_png(str(tmp_path / "a.png"), a16)
    assert np.array_equal(ds.read_png(str(tmp_path / "a.png")), a16)
    # Pillow's (filtered) 8-bit RGB encoding decodes identically
    img = (np.add.outer(np.arange(9), np.arange(11))[..., None] * [3, 5, 7] % 256).astype(np.uint8)
    img[2:4, 3:6] = rng.integers(0, 255, (2, 3, 3))
    Image.fromarray(img).save(tmp_path / "b.png", optimize=True)
    assert np.array_equal(ds.read_png(str(tmp_path / "b.png")), img)


def _save_rgb(path, h, w):
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3)).astype(np.uint8)).save(path)


def test_gta5_and_cityscapes_trees(tmp_path):
    from PIL import Image
    ids = np.array([[7, 8, 11, 12, 13, 17, 19, 20, 21, 22], [23, 24, 25, 26, 27, 28, 31, 32, 33, 0],
                    [1, 4, 6, 9, 10, 14, 15, 16, 18, 29]], dtype=np.uint8)
    want = np.array([list(range(10)), list(range(10, 19)) + [255], [255] * 10])
    g = tmp_path / "GTA5"
    for stem in ("00001", "00002"):
        _save_rgb(str(g / "images" / f"{stem}.png"), 3, 10)
        os.makedirs(g / "labels", exist_ok=True)
        Image.fromarray(ids, mode="L").convert("P").save(g / "labels" / f"{stem}.png")
    gta = ds.GTA5(str(g), crop=None)
    x, y = gta[0]
    assert len(gta) == 2 and x.shape == (3, 3, 10) and np.array_equal(y.numpy(), want)
    x, y = ds.GTA5(str(g), crop=(6, 20))[1]
    assert x.shape == (3, 6, 20) and y.shape == (6, 20) and y[0, 0] == 0
    c = tmp_path / "Cityscapes"
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        stem = f"{city}_000000_000019"
        _save_rgb(str(c / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"), 3, 10)
        os.makedirs(c / "gtFine" / split / city, exist_ok=True)
        Image.fromarray(ids).save(c / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    val = ds.Cityscapes(str(c), "val", crop=None)
    assert len(val) == 1 and np.array_equal(val[0][1].numpy(), want)
    # the 16 SYNTHIA classes: terrain (9), truck (14), train (16) become ignored, the rest re-indexed
    y16 = ds.Cityscapes(str(c), "val", classes=16, crop=None)[0][1].numpy()
    assert y16[0].tolist() == list(range(9)) + [255]
    assert y16[1].tolist() == [9, 10, 11, 12, 255, 13, 255, 14, 15, 255]
    unl = ds.Cityscapes(str(c), "train", crop=None, with_labels=False)[0][1]
    assert (unl == 255).all()
    assert ds.class_names(16) == ds.SYNTHIA_16_CLASSES and len(ds.class_names(13)) == 13
    assert len(ds.palette(19)) == 19 and len(ds.palette(16)) == 16
    # a trainer end to end on the real-dataset loaders (GTA5 -> Cityscapes, 19 classes)
    res = run(make_config("advent", "gta5", source_root=str(g), target_root=str(c), iters=2, batch=1, size="small",
                          base=8, ndf=8, crop=(32, 64), progress=False, save_images=1, threads=1,
                          out=str(tmp_path / "gta_run")))
    assert len(res["iou"]) == 19 and (tmp_path / "gta_run" / "samples.png").exists()


def test_synthia_tree(tmp_path):
    root = tmp_path / "RAND_CITYSCAPES"
    lab = np.zeros((3, 8, 3), np.uint16)
    lab[..., 0] = np.array([[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15],
                            [16, 17, 18, 19, 20, 21, 22, 300]])
    lab[..., 1] = 999  # instance ids in the second channel must not matter
    _save_rgb(str(root / "RGB" / "0000000.png"), 3, 8)
    os.makedirs(root / "GT" / "LABELS")
    ds.write_png(str(root / "GT" / "LABELS" / "0000000.png"), lab)
    y = ds.SynthiaRandCityscapes(str(root), crop=None)[0][1].numpy()
    names = ds.SYNTHIA_16_CLASSES
    assert y[0].tolist() == [255, names.index("sky"), names.index("building"), names.index("road"),
                             names.index("sidewalk"), names.index("fence"), names.index("vegetation"),
                             names.index("pole")]
    assert y[1].tolist() == [names.index("car"), names.index("traffic sign"), names.index("person"),
                             names.index("bicycle"), names.index("motorcycle"), 255, 255, names.index("traffic light")]
    assert y[2].tolist() == [255, names.index("rider"), 255, names.index("bus"), 255, names.index("wall"), 255, 255]
    y13 = ds.SynthiaRandCityscapes(str(root), classes=13, crop=None)[0][1].numpy()
    n13 = ds.class_names(13)
    assert y13[0, 5] == 255 and y13[0, 7] == 255 and y13[2, 5] == 255  # fence, pole, wall dropped
    assert y13[0, 3] == n13.index("road") and y13[1, 0] == n13.index("car")


# ------------------------------------------------------------------------------------------------ trainers
@pytest.mark.parametrize("method", METHODS)
def test_every_trainer_runs(method):
    extra = dict(entropy_ranking=0.3, class_prior_mu=0.5) if method == "minent" else {}
    res = run(make_config(method, "synthetic", seed=1, **TINY, **extra))
    assert 0.0 <= res["miou"] <= 1.0 and len(res["iou"]) == 6
    assert all(np.isfinite(v) for h in res["history"] for k, v in h.items())
    keys = set(res["history"][0])
    assert {"ce"} <= keys
    assert {"minent": {"ent", "cp"}, "advent": {"adv", "d"}, "clan": {"adv", "weight", "d"},
            "adr": {"sensitivity_critic", "sensitivity_gen", "ce_c2"}, "dta": {"fdta", "entropy"},
            "i2i": {"critic", "q_z", "q_tr", "q_id", "q_cyc", "q_trc"}, "source_only": set()}[method] <= keys
    if method == "advent":
        assert len(res["trainer"].discs) == 2  # multi-level: one discriminator per output
    if method == "clan":
        assert res["trainer"].net.head2 is not None


def test_seeded_run_is_reproducible():
    def params(seed):
        tr = run(make_config("advent", "synthetic", seed=seed, **TINY))["trainer"]
        return torch.cat([p.detach().reshape(-1) for p in list(tr.net.parameters()) + list(tr.discs[0].parameters())])
    a, b, c = params(4), params(4), params(5)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_panels_png(tmp_path):
    val = SyntheticShift("target", "val", 2)
    nets = {"a": build_segmenter(6, "small"), "b": build_segmenter(6, "small", heads=2)}
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    p = save_panels(nets, val.images, val.labels, SYN_PALETTE, str(tmp_path / "p.png"), mean, std, scale=1)
    from PIL import Image
    im = Image.open(p)
    assert im.size == (6 * 128 + 5 * 2, TITLE_H + 2 * 64 + 2)
    strip = np.asarray(im)[:TITLE_H]  # the column titles: dark text in each of the 6 columns
    assert all((strip[:, i * 130:i * 130 + 128] < 128).any() for i in range(6))


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def test_cli_outputs(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "models.train", "--task", "synthetic", "--method", "clan", "--iters", "4",
                        "--out", str(out), "--set", "batch=2", "--set", "n_source=8", "--set", "n_target=8",
                        "--set", "n_val=4", "--set", "eval_every=2", "--set", "log_every=1"],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "miou" in r.stdout
    for f in ("config.json", "metrics.json", "checkpoint.pt", "curves.png", "samples.png"):
        assert (out / f).exists(), f
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "clan" and len(m["evals"]) == 2 and len(m["history"]) == 4
    assert abs(m["final"]["miou"] - 100 * m["miou"]) < 1e-9
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert "discs" in ck and ck["config"]["lambda_local"] == 40.0


def test_compare_json_segmentation(tmp_path):
    from models import compare
    res = compare.compare("synthetic", ["source_only", "i2i"], [0], iters=2, workers=1, progress=False,
                          sets=dict(batch=2, n_source=8, n_target=8, n_val=4, save_images=0))
    assert res["metric"] == "miou" and set(res["results"]) == {"source_only", "i2i"}
    assert all(0 <= r["mean"] <= 100 and r["seeds"] == [0] for r in res["results"].values())


def test_torchrun_two_processes():
    """Every trainer under DDP (gloo, 2 CPU processes): runs, and the ranks end with identical weights."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    cmd = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"])
    cmd += ["--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
            os.path.join(ROOT, "tests", "seg_ddp_worker.py"), ",".join(METHODS)]
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=170)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    lines = [l for l in r.stdout.splitlines() if l.startswith("DDP-CHECK")]
    assert len(lines) == len(METHODS), r.stdout[-2000:]
    for l in lines:
        assert "world=2" in l and "maxdiff=0 " in l, l
