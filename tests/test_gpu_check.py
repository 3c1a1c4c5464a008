"""`make gpu-check` (benchmarks/gpu_check.py) without a GPU: the plan holds every stage of issue 10 item 6,
and a dry run writes its folder (info, a tiny CPU benchmark, the summary) and copies it to $OUT."""
from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import gpu_check as GC  # noqa: E402


def test_plan_covers_every_stage_and_sanitizer(tmp_path):
    steps = GC.plan(str(tmp_path), "python3")
    assert {s.stage for s in steps} == set(GC.STAGES) - {"info"}
    names = [s.name for s in steps]
    for tool in ("memcheck", "racecheck", "initcheck"):
        assert f"sanitize-{tool}" in names
    build = next(s for s in steps if s.name == "build")
    assert build.cmd[-4:] == ["-e", ".", "--no-build-isolation", "--no-deps"]
    assert build.env["UDA_OPS_FORCE_CUDA"] == "1"
    tests = " ".join(next(s for s in steps if s.name == "tests").cmd)
    assert "tests/test_cuda.py" in tests and "tests/test_triton.py" in tests
    for stage in GC.STAGES:  # each stage fits the device tool's 10-minute command even at its time limits
        assert sum(s.timeout for s in steps if s.stage == stage) < 600, stage


def test_dry_run_writes_the_folder_and_copies_it_to_out(tmp_path, monkeypatch):
    res, dest = tmp_path / "res", tmp_path / "OUT"
    dest.mkdir()
    monkeypatch.setenv("OUT", str(dest))
    assert GC.main(["--dry-run", "--stages", "info,build,bench", "--out", str(res)]) == 0
    summary = json.loads((res / "summary.json").read_text())
    assert summary["steps"]["build"]["status"] == "skipped (dry run)"
    assert summary["steps"]["gpu_summary"]["status"] == "ok", summary["steps"]["gpu_summary"]
    rows = json.loads((res / "bench.json").read_text())["rows"]
    assert {r["op"] for r in rows} == {"entropy", "channel_mask"}
    assert "choices" in json.loads((res / "auto_cuda.json").read_text())
    assert (res / "info.json").exists() and "| gpu_summary | ok |" in (res / "summary.md").read_text()
    assert (dest / "res" / "summary.md").exists()
    # a later call with other stages adds to the same summary
    assert GC.main(["--dry-run", "--stages", "tests", "--out", str(res)]) == 0
    steps = json.loads((res / "summary.json").read_text())["steps"]
    assert {"build", "gpu_summary", "tests"} <= set(steps)


def test_ncu_workload_runs_every_loss_on_the_cpu(tmp_path):
    """gpu_lease.sh's ncu stage profiles gpu_diag.py's "kernels" part; on the CPU it runs the same calls (native
    backend only: 3 configurations x 6 losses) and names each one."""
    import gpu_diag as GD
    assert GD.main(["kernels", "--device", "cpu", "--out", str(tmp_path)]) == 0
    lines = (tmp_path / "diag-kernels.txt").read_text().splitlines()[1:]
    assert len(lines) == 3 * len(GD.KERNEL_OPS)
    assert {tuple(line.split()[2:]) for line in lines} == {("float32", "NCHW"), ("bfloat16", "NCHW"),
                                                           ("float32", "channels_last")}
