"""The CUDA kernels compile, and their per-pixel math is right, on a machine without a GPU.

* ``tests/cuda/compile_check.cu`` includes every ``csrc/cuda/*_kernels.cuh`` (torch-free device code) and
  instantiates every launcher for float, double, __half and __nv_bfloat16: compiled with nvcc alone for two
  architectures and both C++ standards torch builds with, warnings as errors, and with the macros the torch
  build defines (no implicit half/bfloat16 conversions).
* ``tests/cuda/host_check.cu`` runs the kernels' ``__host__ __device__`` per-pixel functions on the CPU
  against float64 formulas, finite differences, SPEC section 6 extremes and the mask search vectors.
* Opt-in (``UDA_CHECK_LAUNCHERS=1``, ~1 min per file): the torch-facing launchers ``csrc/cuda/*.cu``
  compiled (not linked) against the installed torch headers, even from a CPU-only torch.

Skipped where nvcc is missing.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_DIR = os.path.join(ROOT, "csrc", "cuda")
NVCC = shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
                                if os.environ.get("CUDA_HOME") else None)
if NVCC and not os.path.exists(NVCC):
    NVCC = None

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found")

# What torch.utils.cpp_extension passes to nvcc (the half types without implicit conversions).
TORCH_DEFINES = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                 "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]
STRICT = ["-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror"]
# (arch, C++ standard): Hopper with C++17, Ampere with C++20 (what torch >= 2.10 builds extensions with)
TARGETS = [("sm_90", "c++17"), ("sm_80", "c++20")]


def _run(cmd, timeout=240):
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_kernel_headers_are_torch_free():
    for path in glob.glob(os.path.join(CUDA_DIR, "*.cuh")):
        includes = [l for l in open(path) if l.lstrip().startswith("#include")]
        for banned in ("torch/", "ATen/", "c10/", "layout.h", "launch_utils.h"):
            assert not any(banned in l for l in includes), \
                f"{os.path.basename(path)} includes {banned}: kernels must stay torch-free"


def test_every_kernel_header_is_compile_checked():
    check = open(os.path.join(ROOT, "tests", "cuda", "compile_check.cu")).read()
    for path in glob.glob(os.path.join(CUDA_DIR, "*_kernels.cuh")):
        assert os.path.basename(path) in check, f"{os.path.basename(path)} missing from compile_check.cu"


def ptxas_entries(text):
    """{mangled kernel: (registers, stack frame bytes, spill store bytes)} from `ptxas -v` output."""
    res, name, stack, spill = {}, None, 0, 0
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\S+)'", line)
        if m:
            name, stack, spill = m.group(1), 0, 0
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores", line)
        if m:
            stack, spill = int(m.group(1)), int(m.group(2))
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            res[name] = (int(m.group(1)), stack, spill)
            name = None
    return res


def test_ptxas_entries_parser():
    text = ("ptxas info    : Compiling entry function '_Z1kPf' for 'sm_90'\n"
            "ptxas info    : Function properties for _Z1kPf\n"
            "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
            "ptxas info    : Used 40 registers, used 0 barriers\n")
    assert ptxas_entries(text) == {"_Z1kPf": (40, 8, 4)}


def test_nvcc_compile_check(tmp_path):
    """compile_check.cu for both targets, compiled concurrently (~4 min for both on 2 idle cores); every planes
    (NCHW) kernel without spills and without a stack frame (no local memory) on both, every per-pixel kernel without
    spills."""
    src = os.path.join("tests", "cuda", "compile_check.cu")
    procs = []
    for arch, std in TARGETS:
        out = str(tmp_path / f"compile_check_{arch}.o")
        cmd = [NVCC, f"-std={std}", "-O2", f"-arch={arch}", *TORCH_DEFINES, *STRICT, "-Xptxas", "-v", "-c", src,
               "-o", out]
        procs.append((cmd, subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            text=True)))
    for cmd, p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, f"{' '.join(cmd)}\n{out}"
        assert "warning" not in out.lower(), out
        planes = {k: v for k, v in ptxas_entries(out).items() if "_planes_kernel" in k}
        assert len(planes) >= 6 * 2 * 4, sorted(planes)  # six losses, forward and backward, four dtypes
        spilling = {k: v for k, v in planes.items() if v[1] or v[2]}
        assert not spilling, f"planes kernels with local memory (registers, stack, spill): {spilling}"
        # the per-pixel loss kernels (a warp or a thread per pixel, UDA_ROWS_BOUNDS): no spills either
        rows = {k: v for k, v in ptxas_entries(out).items() if "_rows_kernel" in k and "channel_impact" not in k}
        assert len(rows) >= 6 * 2 * 4 * 2, sorted(rows)  # ... for a thread (OneLane) and a warp (WarpLanes)
        assert not {k: v for k, v in rows.items() if v[2]}, f"per-pixel kernels that spill: {rows}"


def test_host_per_pixel_math(tmp_path):
    exe = str(tmp_path / "host_check")
    _run([NVCC, "-std=c++17", "-O2", "-arch=sm_90", *TORCH_DEFINES, *STRICT,
          os.path.join("tests", "cuda", "host_check.cu"), "-o", exe], timeout=600)  # ~165 s on 2 idle cores
    proc = _run([exe], timeout=60)
    assert "0 failures" in proc.stdout, proc.stdout


def _torch_include_dirs(tmp_path):
    import torch
    from torch.utils import cpp_extension

    dirs = cpp_extension.include_paths()
    inc = os.path.join(os.path.dirname(torch.__file__), "include")
    # A CPU-only torch ships the c10/cuda headers but not the one its CMake generates: stub it.
    if not os.path.exists(os.path.join(inc, "c10", "cuda", "impl", "cuda_cmake_macros.h")):
        stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
        stub.mkdir(parents=True)
        (stub / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        dirs = [str(tmp_path / "stub")] + dirs
    return dirs


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("UDA_CHECK_LAUNCHERS", "") in ("", "0"),
                    reason="opt-in: UDA_CHECK_LAUNCHERS=1 (about a minute per launcher)")
@pytest.mark.parametrize("launcher", sorted(os.path.basename(p) for p in glob.glob(os.path.join(CUDA_DIR, "*.cu"))))
def test_launcher_compiles_against_torch_headers(launcher, tmp_path):
    incs = [f"-I{d}" for d in _torch_include_dirs(tmp_path)]
    _run([NVCC, "-std=c++20", "-O0", "-arch=sm_90", *incs, *TORCH_DEFINES, "--expt-relaxed-constexpr",
          "-DTORCH_EXTENSION_NAME=_C", "-DTORCH_API_INCLUDE_EXTENSION_H", "-Xcompiler", "-Wall",
          "-c", os.path.join("csrc", "cuda", launcher), "-o", str(tmp_path / "launcher.o")], timeout=600)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
