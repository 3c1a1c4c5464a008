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
