"""The real-benchmark loaders' file handling: PNG decoding through OpenCV (16-bit, multi-channel, RGB order,
a clear error without the library) and bad data (missing roots and files, mismatched sizes, truncated
PNGs, unknown label ids), each raising an error that names the file."""
from __future__ import annotations

import builtins
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models.segmentation import datasets as ds  # noqa: E402

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the PNG decoder) not installed")
Image = pytest.importorskip("PIL.Image")


# ---------------------------------------------------------------------------------------------------------
# PNG decoding
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (4, 9, 4)])
def test_png_roundtrip(tmp_path, dtype, shape):
    rng = np.random.default_rng(0)
    a = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    a.flat[:2] = [0, np.iinfo(dtype).max]
    p = str(tmp_path / "a.png")
    ds.write_png(p, a)
    b = ds.read_png(p)
    assert b.dtype == dtype and b.shape == shape and np.array_equal(b, a)


def test_png_filters_and_other_writers(tmp_path):
    """Every PNG row filter (Paeth and Average were the slow path of the old hand-written decoder) and
    Pillow's encoder decode to the same pixels."""
    rng = np.random.default_rng(1)
    a = np.kron(rng.integers(0, 23, (6, 8)), np.ones((5, 5), np.int64)).astype(np.uint16)
    a = np.stack([a, a * 7 + 1000, rng.integers(0, 65535, a.shape).astype(np.uint16)], -1)
    for f in ("NONE", "SUB", "UP", "AVG", "PAETH"):
        p = str(tmp_path / f"{f}.png")
        assert cv2.imwrite(p, a[..., ::-1], [cv2.IMWRITE_PNG_FILTER, getattr(cv2, "IMWRITE_PNG_FILTER_" + f)])
        assert np.array_equal(ds.read_png(p), a), f
    img = (np.add.outer(np.arange(9), np.arange(11))[..., None] * [3, 5, 7] % 256).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "pil.png", optimize=True)
    assert np.array_equal(ds.read_png(str(tmp_path / "pil.png")), img)


def test_png_channel_order(tmp_path):
    """RGB(A) in, RGB(A) out, as the file stores it: a pure red file reads as channel 0 (OpenCV's own order
    is BGR), and Pillow agrees on an 8-bit file."""
    red = np.zeros((2, 3, 3), np.uint16)
    red[..., 0] = 60000
    p = str(tmp_path / "red.png")
    ds.write_png(p, red)
    assert np.array_equal(cv2.imread(p, cv2.IMREAD_UNCHANGED)[..., 2], red[..., 0])  # stored as R
    assert np.array_equal(ds.read_png(p), red)
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 100
    ds.write_png(p, rgba)
    assert np.array_equal(np.array(Image.open(p)), rgba) and np.array_equal(ds.read_png(p), rgba)


def test_png_library_missing(tmp_path, monkeypatch):
    ds.write_png(str(tmp_path / "a.png"), np.zeros((2, 2, 3), np.uint16))
    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2" or name.startswith("cv2."):
            raise ImportError("No module named 'cv2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "cv2")
    monkeypatch.setattr(builtins, "__import__", no_cv2)
    for call in (lambda: ds.read_png(str(tmp_path / "a.png")),
                 lambda: ds.write_png(str(tmp_path / "b.png"), np.zeros((2, 2), np.uint8))):
        with pytest.raises(ImportError, match="opencv-python-headless"):
            call()


def test_synthia_label_is_read_through_opencv(tmp_path):
    """SYNTHIA's 16-bit label: the class id is the first (red) channel, above 255 included."""
    root = tmp_path / "RAND_CITYSCAPES"
    _rgb(root / "RGB" / "0000000.png", 2, 3)
    lab = np.zeros((2, 3, 3), np.uint16)
    lab[..., 0] = [[3, 8, 0], [21, 300, 2]]
    lab[..., 2] = 8  # the blue channel must not be read as the class (a BGR mix-up would)
    (root / "GT" / "LABELS").mkdir(parents=True)
    ds.write_png(str(root / "GT" / "LABELS" / "0000000.png"), lab)
    n = ds.SYNTHIA_16_CLASSES
    y = ds.SynthiaRandCityscapes(str(root), crop=None)[0][1].numpy()
    assert y.tolist() == [[n.index("road"), n.index("car"), 255], [n.index("wall"), 255, n.index("building")]]


def _rgb(path, h, w, seed=0):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3)).astype(np.uint8)).save(str(path))


# ---------------------------------------------------------------------------------------------------------
# bad data: segmentation trees
# ---------------------------------------------------------------------------------------------------------
IDS = np.array([[7, 8, 11, 12, 13, 17, 19, 20, 21, 22], [23, 24, 25, 26, 27, 28, 31, 32, 33, 0],
                [1, 4, 6, 9, 10, 14, 15, 16, 18, 29]], dtype=np.uint8)


def _gta5(root, n=3, ids=IDS):
    for k in range(n):
        _rgb(root / "images" / f"{k:05d}.png", *ids.shape, seed=k)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids, mode="L").convert("P").save(root / "labels" / f"{k:05d}.png")
    return root


def _cityscapes(root, split="val", n=2):
    for k in range(n):
        stem = f"frankfurt_{k:06d}_000019"
        _rgb(root / "leftImg8bit" / split / "frankfurt" / f"{stem}_leftImg8bit.png", *IDS.shape, seed=k)
        (root / "gtFine" / split / "frankfurt").mkdir(parents=True, exist_ok=True)
        Image.fromarray(IDS).save(root / "gtFine" / split / "frankfurt" / f"{stem}_gtFine_labelIds.png")
    return root


def _synthia(root, n=2, ids=None):
    ids = np.arange(24, dtype=np.uint16).reshape(3, 8) if ids is None else ids
    (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
    for k in range(n):
        _rgb(root / "RGB" / f"{k:07d}.png", *ids.shape, seed=k)
        ds.write_png(str(root / "GT" / "LABELS" / f"{k:07d}.png"), np.stack([ids, ids * 0 + 999, ids * 0], -1))
    return root


def _truncate(path, keep=0.5):
    data = open(path, "rb").read()
    open(path, "wb").write(data[:int(len(data) * keep)])


def _all(dataset):
    return [dataset[i] for i in range(len(dataset))]


def test_good_trees_load(tmp_path):
    assert len(_all(ds.GTA5(str(_gta5(tmp_path / "g")), crop=None, strict=True))) == 3
    assert len(_all(ds.Cityscapes(str(_cityscapes(tmp_path / "c")), crop=None, strict=True))) == 2
    s = ds.SynthiaRandCityscapes(str(_synthia(tmp_path / "s", ids=np.arange(23, dtype=np.uint16).reshape(1, 23))),
                                 crop=None, strict=True)
    assert len(_all(s)) == 2


def test_missing_root(tmp_path):
    for make in (lambda r: ds.GTA5(r), lambda r: ds.SynthiaRandCityscapes(r), lambda r: ds.Cityscapes(r)):
        with pytest.raises(FileNotFoundError, match="nowhere"):
            make(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    for make, sub in ((lambda r: ds.GTA5(r), "images"), (lambda r: ds.SynthiaRandCityscapes(r), "RGB"),
                      (lambda r: ds.Cityscapes(r, "val"), os.path.join("leftImg8bit", "val"))):
        with pytest.raises(FileNotFoundError, match=os.path.join("empty", sub)):
            make(str(tmp_path / "empty"))


def test_image_without_label(tmp_path):
    g = _gta5(tmp_path / "g")
    os.remove(g / "labels" / "00001.png")
    with pytest.raises(FileNotFoundError, match=r"00001\.png"):
        ds.GTA5(str(g), crop=None)
    assert len(ds.GTA5(str(g), crop=None, with_labels=False)) == 3  # unlabelled use needs no labels
    c = _cityscapes(tmp_path / "c")
    os.remove(c / "gtFine" / "val" / "frankfurt" / "frankfurt_000001_000019_gtFine_labelIds.png")
    with pytest.raises(FileNotFoundError, match="frankfurt_000001_000019_gtFine_labelIds"):
        ds.Cityscapes(str(c), "val", crop=None)  # was: a label of all-ignored pixels
    s = _synthia(tmp_path / "s")
    os.remove(s / "GT" / "LABELS" / "0000001.png")
    with pytest.raises(FileNotFoundError, match=r"0000001\.png"):
        ds.SynthiaRandCityscapes(str(s), crop=None)
    # a listed image that does not exist
    (tmp_path / "list.txt").write_text("00000\n00007\n")
    with pytest.raises(FileNotFoundError, match=r"00007\.png"):
        ds.GTA5(str(g), list_file=str(tmp_path / "list.txt"), with_labels=False)


@pytest.mark.parametrize("crop", [None, (6, 20)])
def test_label_of_another_size(tmp_path, crop):
    g = _gta5(tmp_path / "g")
    Image.fromarray(np.zeros((4, 10), np.uint8)).save(g / "labels" / "00002.png")
    d = ds.GTA5(str(g), crop=crop)
    d[0], d[1]
    with pytest.raises(ValueError, match=r"00002\.png.*10x4.*10x3"):
        d[2]  # was: resized silently
    s = _synthia(tmp_path / "s")
    ds.write_png(str(s / "GT" / "LABELS" / "0000000.png"), np.zeros((3, 9, 3), np.uint16))
    with pytest.raises(ValueError, match=r"0000000\.png.*9x3"):
        ds.SynthiaRandCityscapes(str(s), crop=crop)[0]


@pytest.mark.parametrize("which", ["image", "label", "label16"])
def test_truncated_png(tmp_path, which):
    if which == "label16":
        root = _synthia(tmp_path / "s")
        bad, d = root / "GT" / "LABELS" / "0000001.png", lambda: ds.SynthiaRandCityscapes(str(root), crop=None)
    else:
        root = _gta5(tmp_path / "g", ids=np.tile(IDS, (20, 20)))
        bad = root / ("images" if which == "image" else "labels") / "00001.png"
        d = lambda: ds.GTA5(str(root), crop=None)  # noqa: E731
    _truncate(bad)
    data = d()
    assert len(data) == len(os.listdir(bad.parent))  # nothing dropped
    data[0]
    with pytest.raises(ValueError, match=str(bad)):
        data[1]


def test_unknown_label_id_strict(tmp_path):
    ids = IDS.copy()
    ids[0, 0] = 40  # not a Cityscapes label id
    g = _gta5(tmp_path / "g", ids=ids)
    assert ds.GTA5(str(g), crop=None)[0][1][0, 0] == 255  # default: ignored, like void
    with pytest.raises(ValueError, match=r"00000\.png.*unknown label ids \[40\]"):
        ds.GTA5(str(g), crop=None, strict=True)[0]
    s = _synthia(tmp_path / "s", ids=np.array([[0, 3, 300]], np.uint16))
    assert ds.SynthiaRandCityscapes(str(s), crop=None)[0][1].tolist() == [[255, 0, 255]]
    with pytest.raises(ValueError, match=r"0000000\.png.*unknown label ids \[300\]"):
        ds.SynthiaRandCityscapes(str(s), crop=None, strict=True)[0]
    c = tmp_path / "c"
    _cityscapes(c)
    Image.fromarray(np.full(IDS.shape, 34, np.uint8)).save(
        c / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000019_gtFine_labelIds.png")
    with pytest.raises(ValueError, match=r"frankfurt_000000_000019_gtFine_labelIds\.png.*\[34\]"):
        ds.Cityscapes(str(c), "val", crop=None, strict=True)[0]


# ---------------------------------------------------------------------------------------------------------
# bad data: classification files
# ---------------------------------------------------------------------------------------------------------
from models.classification import data as cd  # noqa: E402


def _idx(path, arr):
    import gzip
    import struct
    arr = np.asarray(arr, np.uint8)
    head = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb") as f:
        f.write(head + arr.tobytes())


def _mnist(root, n=6, labels=None):
    root.mkdir(parents=True, exist_ok=True)
    _idx(root / "train-images-idx3-ubyte.gz", np.zeros((n, 28, 28)))
    _idx(root / "train-labels-idx1-ubyte", np.arange(n) % 10 if labels is None else labels)
    return root


def test_mnist_bad_files(tmp_path):
    assert len(cd.load_mnist(str(_mnist(tmp_path / "m")))[1]) == 6
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cd.load_mnist(str(tmp_path / "nowhere"))
    m = _mnist(tmp_path / "m1")
    os.remove(m / "train-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        cd.load_mnist(str(m))
    m = _mnist(tmp_path / "m2", labels=np.arange(5))
    with pytest.raises(ValueError, match="6 images.*train-labels-idx1-ubyte holds 5 labels"):
        cd.load_mnist(str(m))  # images without labels
    m = _mnist(tmp_path / "m3", labels=[0, 1, 2, 3, 4, 12])
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: unknown labels \[12\]"):
        cd.load_mnist(str(m))
    m = _mnist(tmp_path / "m4")
    _truncate(m / "train-labels-idx1-ubyte", 0.9)
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte: truncated"):
        cd.load_mnist(str(m))
    m = _mnist(tmp_path / "m5")
    _truncate(m / "train-images-idx3-ubyte.gz", 0.5)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz"):
        cd.load_mnist(str(m))


def test_usps_bad_files(tmp_path):
    root = tmp_path / "u"
    root.mkdir()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cd.load_usps(str(tmp_path / "nowhere"))
    good = "3 1:0.5 256:-0.25\n10 2:1\n"
    (root / "usps").write_text(good)
    assert cd.load_usps(str(root))[1].tolist() == [3, 0]
    for text, match in (("3 1:0.5\n12 2:1\n", r"usps:2: unknown label 12"), ("3 1:0.5\n4 257:1\n", r"usps:2: .*257"),
                        ("3 1:0.5\n4 2:1 3:\n", r"usps:2: not a LIBSVM line"), ("", "usps: no samples")):
        (root / "usps").write_text(text)
        with pytest.raises(ValueError, match=match):
            cd.load_usps(str(root))


def test_svhn_bad_files(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    root = tmp_path / "s"
    root.mkdir()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cd.load_svhn(str(tmp_path / "nowhere"))
    X = np.zeros((32, 32, 3, 4), np.uint8)
    for y, match in (([1, 2, 3], "X holds 4 images but .* y holds 3 labels"), ([1, 2, 3, 11], r"unknown labels \[11\]")):
        scipy_io.savemat(str(root / "train_32x32.mat"), {"X": X, "y": np.reshape(y, (-1, 1))})
        with pytest.raises(ValueError, match=match):
            cd.load_svhn(str(root))
    scipy_io.savemat(str(root / "train_32x32.mat"), {"X": X, "y": np.array([[1], [2], [3], [10]])})
    assert cd.load_svhn(str(root))[1].tolist() == [1, 2, 3, 0]
    _truncate(root / "train_32x32.mat")
    with pytest.raises(ValueError, match=r"train_32x32\.mat"):
        cd.load_svhn(str(root))


def test_office31_bad_files(tmp_path):
    root = tmp_path / "office31"
    with pytest.raises(FileNotFoundError, match="amazon"):
        cd.load_office31(str(root), "A")
    for cls in ("bike", "mug"):
        for i in range(2):
            _rgb(root / "amazon" / "images" / cls / f"frame_{i:04d}.png", 20, 30, seed=i)
    x, y, _ = cd.load_office31(str(root), "A", size=8)
    assert len(y) == 4
    _truncate(root / "amazon" / "images" / "mug" / "frame_0001.png")
    with pytest.raises(ValueError, match=r"mug.frame_0001\.png"):
        cd.load_office31(str(root), "A", size=8)  # was: an error naming no file
    os.remove(root / "amazon" / "images" / "mug" / "frame_0001.png")
    os.remove(root / "amazon" / "images" / "mug" / "frame_0000.png")
    with pytest.raises(FileNotFoundError, match="no images in .*mug"):
        cd.load_office31(str(root), "A", size=8)
