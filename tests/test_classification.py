"""models/: the classification trainers (source-only, ADR, DTA, I2I Adapt), data loaders and the CLI.

Small sizes only: a few steps on CPU each, checking that the losses go down, that seeded runs are bitwise
reproducible, and that the file loaders read the standard formats (tiny trees generated in tmp_path).
"""
from __future__ import annotations

import bz2
import gzip
import json
import os
import struct

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from models.classification import data  # noqa: E402
from models.classification.trainers import Trainer, make_config  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_digits(seed=0, n=160):
    t = data.digits(seed)
    return data.Task(t.name, t.xs[:n], t.ys[:n], t.xt[:n], t.yt[:n], t.xt_test[:n], t.yt_test[:n], 10)


def first_last(hist, key):
    return hist[0][key], hist[-1][key]


def test_moons_task():
    t = data.moons(0)
    assert t.xs.shape == (1000, 2) and t.num_classes == 2
    # the target is the 30-degree rotation of a moons sample: its norms match the source distribution's
    back = data.rotate2d(t.xt, -30.0)
    assert back[:, 0].min() > -1.6 and back[:, 0].max() < 2.6
    assert torch.allclose(data.rotate2d(data.rotate2d(t.xs, 30.0), -30.0), t.xs, atol=1e-5)


def test_digits_task():
    t = data.digits(0)
    assert t.xs.shape[1:] == (1, 8, 8) and t.num_classes == 10
    assert len(t.xs) + len(t.xt) == 1797
    assert 0.0 <= float(t.xt.min()) and float(t.xt.max()) <= 1.0
    assert not torch.equal(data.digits(1).ys, t.ys)  # seeded split


@pytest.mark.parametrize("method", ["source_only", "adr", "dta", "i2i"])
def test_trainer_losses_decrease_on_moons(method):
    cfg = make_config(method, "moons", seed=0, steps=80, eval_every=20)
    m = Trainer(cfg, data.moons(0)).fit()
    first, last = first_last(m["history"], "ce")
    assert last < first, (method, first, last)
    assert 0.0 <= m["final"]["target_acc"] <= 1.0


@pytest.mark.parametrize("method", ["source_only", "minent", "advent", "clan", "adr", "dta", "i2i"])
def test_trainer_losses_decrease_on_digits(method):
    extra = dict(lambda_vat=0.1, vat_eps=0.9) if method == "dta" else {}  # exercise VAT too
    cfg = make_config(method, "digits", seed=0, steps=30, eval_every=10, batch=32, **extra)
    m = Trainer(cfg, small_digits()).fit()
    first, last = first_last(m["history"], "ce")
    assert last < first, (method, first, last)
    keys = set(m["history"][-1])
    expected = {"source_only": {"ce"}, "adr": {"sensitivity_critic", "sensitivity_gen", "ce_c2"},
                "dta": {"fdta", "cdta", "vat", "entropy"}, "i2i": {"q_z", "q_tr", "q_id", "q_cyc", "q_trc"},
                "minent": {"ent"}, "advent": {"adv", "d"}, "clan": {"adv", "weight", "d"}}
    assert expected[method] <= keys


@pytest.mark.parametrize("method", ["adr", "dta", "i2i", "clan"])
def test_seeded_run_is_bitwise_reproducible(method):
    def once():
        return Trainer(make_config(method, "moons", seed=3, steps=25, eval_every=5), data.moons(3)).fit()

    a, b = once(), once()
    a.pop("seconds"), b.pop("seconds")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


I2I_LAMBDAS = ("lambda_z", "lambda_tr", "lambda_id", "lambda_cyc", "lambda_trc")


@pytest.mark.parametrize("on, terms, trained", [
    ((), {"ce"}, set()),                                               # source only
    (("lambda_z",), {"ce", "q_z", "critic"}, {"d_z"}),                 # feature adversary (ADDA style)
    (("lambda_id",), {"ce", "q_id"}, {"dec_s", "dec_t"}),              # reconstruction (DRCN style)
    (("lambda_trc",), {"ce", "q_trc"}, set()),                         # Q_trc trains G and C, not the decoder
    (("lambda_tr", "lambda_trc"), {"ce", "q_tr", "q_trc", "critic"},   # translate, classify translated
     {"d_s", "d_t", "dec_s", "dec_t"}),
    (("lambda_tr", "lambda_cyc"), {"ce", "q_tr", "q_cyc", "critic"},   # cycle-consistent translation
     {"d_s", "d_t", "dec_s", "dec_t"}),
    (I2I_LAMBDAS, {"ce", "q_z", "q_tr", "q_id", "q_cyc", "q_trc", "critic"},
     {"d_z", "d_s", "d_t", "dec_s", "dec_t"}),
], ids=["source_only", "feature_adversary", "reconstruction", "translated_ce", "translation", "cycle", "all"])
def test_i2i_zero_lambdas_switch_terms_and_modules_off(on, terms, trained):
    """I2I Table 1: a special case keeps some lambdas and zeroes the rest. Exactly its terms are computed,
    and the critics and decoders that no remaining term trains keep their initial weights (parameters:
    a decoder's BatchNorm statistics move whenever it runs in train mode)."""
    lambdas = {k: (make_config("i2i", "moons").to_dict()[k] if k in on else 0.0) for k in I2I_LAMBDAS}
    tr = Trainer(make_config("i2i", "moons", seed=0, steps=4, eval_every=4, **lambdas), data.moons(0))
    parts = ("d_z", "d_s", "d_t", "dec_s", "dec_t")
    before = {k: [p.detach().clone() for p in tr.parts.modules[k].parameters()] for k in parts}
    m = tr.fit()
    assert set(m["history"][-1]) - {"step", "target_acc", "source_acc"} == terms
    for k in parts:
        same = all(torch.equal(p, q) for p, q in zip(tr.parts.modules[k].parameters(), before[k]))
        assert same == (k not in trained), k


def own_net(with_c2=False, flat=False):
    """A user's backbone for 8x8 digits (not one of build_net's) and the Classifier on its features."""
    from torch import nn
    from models.classification.networks import Classifier, Net
    if flat:
        g, feat = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.BatchNorm1d(24), nn.ReLU()), 24
    else:
        g, feat = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2)), 96
    mk = lambda: Classifier(feat, 16, 10, p=0.3)  # noqa: E731
    return Net(g, mk(), mk() if with_c2 else None)


@pytest.mark.parametrize("method", ["source_only", "adr", "dta", "i2i"])
def test_trainer_takes_your_own_backbone(method):
    net = own_net(with_c2=method == "adr")
    before = [p.detach().clone() for p in net.g.parameters()]
    tr = Trainer(make_config(method, "digits", seed=0, steps=3, eval_every=3, batch=16), small_digits(), net=net)
    assert tr.net is net
    tr.fit()
    assert all(not torch.equal(p, q) for p, q in zip(net.g.parameters(), before))  # the backbone was trained
    flat = own_net(flat=True, with_c2=method == "adr")  # a flat feature vector: fine except for I2I's decoders
    if method == "i2i":
        with pytest.raises(ValueError, match="feature map"):
            Trainer(make_config(method, "digits", steps=1), small_digits(), net=flat)
    else:
        Trainer(make_config(method, "digits", seed=0, steps=2, eval_every=2, batch=16), small_digits(), net=flat).fit()


def test_trainer_rejects_a_net_the_method_cannot_train():
    from torch import nn
    digits = small_digits()
    with pytest.raises(ValueError, match="C'"):
        Trainer(make_config("adr", "digits"), digits, net=own_net())
    no_split = own_net()
    no_split.c = nn.Sequential(nn.Flatten(), nn.Linear(96, 10))
    with pytest.raises(ValueError, match="low"):
        Trainer(make_config("dta", "digits"), digits, net=no_split)
    Trainer(make_config("source_only", "digits"), digits, net=no_split)  # source-only needs no split
    with pytest.raises(ValueError, match="backbone"):
        Trainer(make_config("source_only", "digits"), digits, net=nn.Linear(64, 10))


def test_dta_leaves_bn_stats_to_main_passes():
    """The auxiliary passes (Jacobian, adversarial, VAT) do not update BatchNorm statistics: one DTA step
    counts exactly one batch in each BN layer (the joint source+target pass)."""
    tr = Trainer(make_config("dta", "moons", seed=0, steps=1, eval_every=1), data.moons(0))
    tr.fit()
    bns = [m for m in tr.net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bns and all(int(m.num_batches_tracked) == 1 for m in bns)


def test_dta_passes_differ_by_their_masks_alone():
    """fDTA/cDTA compare the classifier under a random and an adversarial mask; its own dropout layers
    (p=0.5 on digits) are off in those passes. With no flips and no random mask the two passes are the
    same network on the same input, so both terms are exactly 0."""
    cfg = make_config("dta", "digits", seed=0, steps=1, batch=16, delta_c=0.0, delta_e=0.0, random_dropout=0.0,
                      lambda_vat=0.0)
    assert cfg.dropout == 0.5
    tr = Trainer(cfg, small_digits())
    tr.step_i = 0
    out = tr.step(*tr.batch())
    assert out["fdta"] == 0.0 and out["cdta"] == 0.0
    assert all(m.training for m in tr.net.modules())  # restored after the step


def test_dta_vat_is_zero_at_zero_radius():
    """VAT compares a batch with its own perturbed copy under the same BatchNorm normalisation: at radius 0
    (and without random dropout in the network) the term is exactly 0. Comparing with the joint
    source+target pass instead would leave a non-zero BN mismatch that VAT then trains on."""
    tr = Trainer(make_config("dta", "moons", seed=0, steps=1, lambda_vat=1.0, vat_eps=0.0, dropout=0.0),
                 data.moons(0))
    tr.step_i = 0
    out = tr.step(*tr.batch())
    assert out["vat"] == 0.0


# ------------------------------------------------------------------------------------- file loaders
def write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    head = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") if path.endswith(".gz") else open(path, "wb") as f:
        f.write(head + arr.tobytes())


def make_mnist(root, n=6):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        write_idx(os.path.join(root, f"{split}-images-idx3-ubyte.gz"), rng.integers(0, 256, (n, 28, 28)))
        write_idx(os.path.join(root, f"{split}-labels-idx1-ubyte"), np.arange(n) % 10)


def make_usps(root, n=5):
    os.makedirs(root, exist_ok=True)
    for name in ("usps.bz2", "usps.t"):
        lines = []
        for i in range(n):
            feats = " ".join(f"{j + 1}:{(j % 7) / 3 - 1:.3f}" for j in range(0, 256, 3))
            lines.append(f"{i % 10 + 1} {feats}")
        payload = ("\n".join(lines) + "\n").encode()
        path = os.path.join(root, name)
        with bz2.open(path, "wb") if name.endswith(".bz2") else open(path, "wb") as f:
            f.write(payload)


def make_svhn(root, n=4):
    from scipy.io import savemat
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        savemat(os.path.join(root, f"{split}_32x32.mat"),
                {"X": rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8),
                 "y": (np.arange(n) % 10 + 1).reshape(-1, 1)})


def make_office(root, per_class=2):
    from PIL import Image
    for dom in ("amazon", "webcam"):
        for cls in ("back_pack", "bike", "mug"):
            d = os.path.join(root, "office31", dom, "images", cls)
            os.makedirs(d, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (40 + i, 30), (i * 60, 100, 200)).save(os.path.join(d, f"frame_{i:04d}.jpg"))


def test_mnist_loader(tmp_path):
    make_mnist(str(tmp_path / "mnist"))
    x, y = data.load_mnist(str(tmp_path / "mnist"), "train")
    assert x.shape == (6, 1, 28, 28) and x.max() <= 1 and y.tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(FileNotFoundError):
        data.load_mnist(str(tmp_path))


def test_usps_loader(tmp_path):
    make_usps(str(tmp_path / "usps"))
    x, y = data.load_usps(str(tmp_path / "usps"), "train")
    assert x.shape == (5, 1, 16, 16) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert y.tolist() == [1, 2, 3, 4, 5]
    xt, _ = data.load_usps(str(tmp_path / "usps"), "test")
    assert torch.equal(x, xt)
    assert float(x[0, 0, 0, 1]) == 0.0  # missing features are -1 -> 0


def test_svhn_loader(tmp_path):
    pytest.importorskip("scipy")
    make_svhn(str(tmp_path / "svhn"))
    x, y = data.load_svhn(str(tmp_path / "svhn"), "test")
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [1, 2, 3, 4]


def test_office31_loader_and_file_task(tmp_path):
    pytest.importorskip("PIL")
    make_office(str(tmp_path))
    x, y, classes = data.load_office31(str(tmp_path / "office31"), "A", size=16)
    assert x.shape == (6, 3, 16, 16) and classes == ["back_pack", "bike", "mug"] and y.tolist() == [0, 0, 1, 1, 2, 2]
    t = data.get_task("office31:A->office31:W", 0, str(tmp_path))
    assert t.xs.shape == (6, 3, 32, 32) and t.num_classes == 3


def test_digit_file_task_and_training(tmp_path):
    make_mnist(str(tmp_path / "mnist"), n=12)
    make_usps(str(tmp_path / "usps"), n=12)
    t = data.get_task("usps->mnist", 0, str(tmp_path))
    assert t.xs.shape == (12, 1, 32, 32) and t.xt.shape == (12, 1, 32, 32)
    m = Trainer(make_config("dta", "usps->mnist", seed=0, steps=2, eval_every=1, batch=8), t).fit()
    assert len(m["history"]) == 2


def test_cli_writes_metrics_plot_checkpoint(tmp_path, capsys):
    from models import train
    out = tmp_path / "run"
    train.main(["--method", "dta", "--task", "moons", "--iters", "20", "--out", str(out), "--no-progress",
                "--set", "eval_every=10"])
    assert "target_acc" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["method"] == "dta" and len(metrics["history"]) == 2
    assert metrics["metric"] == "target_acc" and 0 <= metrics["final"]["target_acc"] <= 100
    assert json.loads((out / "config.json").read_text())["steps"] == 20
    assert (out / "curves.png").stat().st_size > 0 and (out / "checkpoint.pt").stat().st_size > 0
    assert (out / "boundary.png").stat().st_size > 0  # two moons: the decision boundary


def test_boundary_grid_is_the_networks_prediction():
    """The decision-boundary plot shows P(class 1) of the trained network at the lattice points, in eval
    mode; image tasks get no plot."""
    from models.train_io import GRID, boundary
    tr = Trainer(make_config("source_only", "moons", seed=0, steps=3, eval_every=3), data.moons(0))
    tr.fit()
    b = boundary(tr)
    x0, x1, y0, y1 = b["extent"]
    corners = torch.tensor([[x0, y0], [x1, y0], [x0, y1], [x1, y1]])  # rows are y (origin lower), columns x
    tr.net.eval()
    with torch.no_grad():
        p = torch.softmax(tr.net(corners), 1)[:, 1]
    g = b["p1"]
    assert g.shape == (GRID, GRID)
    torch.testing.assert_close(torch.stack([g[0, 0], g[0, -1], g[-1, 0], g[-1, -1]]), p)
    assert not torch.allclose(p[1], p[2])  # the check would see a transposed grid
    assert boundary(Trainer(make_config("source_only", "digits", seed=0, steps=1), data.digits(0))) is None


def test_compare_cli_json_contract(tmp_path, capsys):
    from models import compare
    path = tmp_path / "moons.json"
    res = compare.main(["--task", "moons", "--methods", "source_only,clan", "--seeds", "1,3", "--iters", "10",
                        "--workers", "1", "--json", str(path), "--set", "eval_every=5"])
    saved = json.loads(path.read_text())
    assert saved["task"] == "moons" and saved["metric"] == "target_acc"
    assert set(saved["results"]) == {"source_only", "clan"}
    for r in saved["results"].values():
        assert r["seeds"] == [1, 3] and len(r["per_seed"]) == 2
        assert abs(r["mean"] - sum(r["per_seed"]) / 2) < 1e-9 and r["std"] >= 0
        assert all(f["target_acc"] == v for f, v in zip(r["final"], r["per_seed"]))
    assert res["results"]["clan"]["per_seed"] == saved["results"]["clan"]["per_seed"]
    assert "±" in capsys.readouterr().out


def test_compare_seeds_argument():
    from models.compare import parse_seeds
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("4,7") == [4, 7] and parse_seeds("5,") == [5]
