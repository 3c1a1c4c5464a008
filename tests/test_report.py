"""models.report on small fake inputs: compare JSONs, a benchmark summary, run folders with PNGs."""
import base64
import json
import os
import re

from models import report

PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def _png(path, payload=b""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(PNG + payload)


def _demo(root):
    _write(os.path.join(root, "benchmark_summary.json"), {
        "machine": {"device": "Fake CPU", "threads": 1, "torch": "2.x", "date": "2026-01-02"},
        "rows": [{"op": "entropy", "mode": "fwd", "shape": [2, 19, 8, 8], "uda_ops_ms": 0.125, "x_eager": 3.25,
                  "x_compile": 1.5}]})
    _write(os.path.join(root, "moons.json"), {"task": "moons", "metric": "target_acc", "results": {
        "source_only": {"per_seed": [80.0, 82.0], "seeds": [0, 1], "mean": 81.0, "std": 1.414},
        "adr": {"per_seed": [90.25, 87.75], "seeds": [0, 1], "mean": 89.0, "std": 1.768}}})
    _write(os.path.join(root, "synthetic.json"), {"task": "synthetic", "metric": "miou", "results": {
        "source_only": {"per_seed": [56.2], "seeds": [3], "mean": 56.2, "std": 0.0}}})
    _write(os.path.join(root, "unrelated.json"), {"something": 1})
    for m in ("source_only", "adr"):
        for s in (0, 1):
            for name in ("curves.png", "boundary.png"):
                _png(os.path.join(root, "moons", f"{m}_s{s}", name), f"{m}{s}{name}".encode())
    _png(os.path.join(root, "synthetic", "source_only_s3", "samples.png"), b"panel")


def test_load_finds_tables_and_first_seed_plots(tmp_path):
    root = str(tmp_path / "demo_out")
    _demo(root)
    data = report.load(root)
    assert data["bench"]["machine"]["device"] == "Fake CPU"
    assert [t["name"] for t in data["tasks"]] == ["moons", "synthetic"]
    titles = [t for t, _ in data["tasks"][0]["plots"]]
    # the first seed of each method, the decision boundary before the curves; seed 1 not shown
    assert titles == ["source_only, seed 0: boundary", "source_only, seed 0: curves",
                      "adr, seed 0: boundary", "adr, seed 0: curves"]
    assert [t for t, _ in data["tasks"][1]["plots"]] == ["source_only, seed 3: samples"]


def test_summary_tables(tmp_path):
    root = str(tmp_path)
    _demo(root)
    text = report.summary(report.load(root))
    lines = text.splitlines()
    assert "Fake CPU" in lines[0]
    assert re.search(r"^entropy\s+fwd\s+2x19x8x8\s+0\.125\s+3\.2\s+1\.50\s+-$", text, re.M)
    assert "moons: target accuracy (%), seeds 0,1" in text
    assert re.search(r"^adr\s+89\.0 ± 1\.8\s+90\.2 87\.8$", text, re.M)
    assert "synthetic: target mIoU (%), seeds 3" in text
    assert text.index("CPU speed") < text.index("moons:") < text.index("synthetic:")
    assert "unrelated" not in text


def test_busy_machine_warning_is_shown(tmp_path):
    root = str(tmp_path / "d")
    _demo(root)
    path = os.path.join(root, "benchmark_summary.json")
    bench = json.load(open(path))
    assert "warning" not in report.summary(report.load(root))
    bench["machine"]["warning"] = "warning: other processes used 0.97 of 2 cores <on average>"
    _write(path, bench)
    text = report.summary(report.load(root))
    lines = text.splitlines()
    assert lines.index(bench["machine"]["warning"]) == lines.index("") - 1  # right under the speed table
    report.main([root])
    assert "<strong>warning: other processes used 0.97 of 2 cores &lt;on average&gt;</strong>" in \
        open(os.path.join(root, "report.html")).read()


def test_html_is_self_contained(tmp_path):
    root = str(tmp_path / "d")
    _demo(root)
    data = report.main([root])
    page = open(os.path.join(root, "report.html")).read()
    assert page.count("<table>") == 3  # speed + one per task
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 5
    assert base64.b64decode(imgs[0]) == open(data["tasks"][0]["plots"][0][1], "rb").read()
    assert "src=\"demo_out" not in page and "file:" not in page
    assert "<td>89.0 ± 1.8</td>" in page and "<figcaption>adr, seed 0: boundary</figcaption>" in page


def test_missing_inputs(tmp_path, capsys):
    assert report.summary(report.load(str(tmp_path))) == "no results found"
    _write(str(tmp_path / "t.json"), {"task": "digits", "metric": "target_acc", "results": {
        "dta": {"per_seed": [70.0], "mean": 70.0, "std": 0.0}}})
    report.main([str(tmp_path), "--no-html"])
    out = capsys.readouterr().out
    assert "digits: target accuracy (%)" in out and "dta" in out
    assert not os.path.exists(tmp_path / "report.html")


def test_out_key_overrides_plot_folder(tmp_path):
    _png(str(tmp_path / "elsewhere" / "i2i_s0" / "curves.png"))
    _write(str(tmp_path / "r" / "x.json"), {"task": "digits", "metric": "target_acc",
                                            "out": str(tmp_path / "elsewhere"),
                                            "results": {"i2i": {"per_seed": [1.0], "seeds": [0], "mean": 1.0,
                                                                "std": 0.0}}})
    assert [t for t, _ in report.load(str(tmp_path / "r"))["tasks"][0]["plots"]] == ["i2i, seed 0: curves"]
