"""The rows layout's per-row reductions (RowLanes::max and ::sum in csrc/cpu/common.h) in their vector form, at each
x86-64 level the multiversioned CPU kernels are compiled for: tests/cpu/row_combine_check.cpp against the plain
loops of the same tree, bit for bit."""
import os
import platform
import shutil
import subprocess
import sysconfig

import pytest
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# -march level -> a /proc/cpuinfo flag the binary needs to run
LEVELS = {"x86-64-v4": "avx512f", "x86-64-v3": "avx2", "x86-64": "sse2"}


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


@pytest.mark.skipif(platform.machine() != "x86_64" or platform.system() != "Linux" or shutil.which("g++") is None,
                    reason="the vector form is built by GCC on x86-64 Linux only")
@pytest.mark.parametrize("march", sorted(LEVELS))
def test_row_combine_matches_loops(march, tmp_path):
    if LEVELS[march] not in _cpu_flags():
        pytest.skip(f"this CPU cannot run -march={march}")
    includes = [f"-I{p}" for p in cpp_extension.include_paths() + [sysconfig.get_paths()["include"]]]
    exe = tmp_path / "row_combine_check"
    subprocess.run(["g++", "-std=c++20", "-O2", f"-march={march}", "-Wno-psabi", *includes,
                    os.path.join(ROOT, "tests", "cpu", "row_combine_check.cpp"), "-o", str(exe)], check=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0 and "vector form: 0 mismatches" in run.stdout, run.stdout + run.stderr
