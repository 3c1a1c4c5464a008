"""The compiled CUDA loss kernels load their inputs 128 bits at a time (issue 10), read off the SASS without a
GPU by benchmarks/kernel_report.py; and that report's parsers, on hand-written SASS and ptxas output.

The width test compiles tests/cuda/compile_check.cu's fp32 and bf16 instantiations once per session to PTX
for sm_90 (where load widths are decided: ptxas keeps an ld.global.v4 one 128-bit LDG, as the SASS in
benchmarks/results/kernel-report-*.md shows; PTX alone takes half the time of a cubin) and, for each of the
six pixel losses, forward and backward, fp32 and bf16, looks at its NCHW kernels (kernel_report.planes_kernels):
those named after the op (``sym_kl_...``) with forward/fwd or backward/bwd in the name, leaving out rows-layout
(channels_last) and finalize/reduce kernels. Each must have 128-bit global loads (ld.global.v4 of 32-bit
words, v2 of 64-bit, cp.async of 16 bytes, or TMA bulk copies): a thread that owns a vector of contiguous
pixels per class. Scalar loads may remain (tails, the per-pixel gradient). Skipped without nvcc.
"""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import kernel_report as KR  # noqa: E402

LOSS_OPS = KR.LOSS_OPS


@pytest.fixture(scope="session")
def cuda_kernels(tmp_path_factory):
    if KR.find_tool("nvcc") is None:
        pytest.skip("needs nvcc")
    return KR.ptx_rows(KR.compile_ptx(str(tmp_path_factory.mktemp("kernel_report")), "sm_90", ("fp32", "bf16")))


def has_128bit_loads(r) -> bool:
    return 128 in r["ld"] or r.get("bulk", 0) > 0


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("direction", ["fwd", "bwd"])
@pytest.mark.parametrize("op", LOSS_OPS)
def test_nchw_loss_kernels_load_128_bits(cuda_kernels, op, direction, dtype):
    found = KR.planes_kernels(cuda_kernels, "cuda", op, direction, dtype)
    assert found, f"no {op} {direction} {dtype} kernel among {sorted({r['kernel'] for r in cuda_kernels})}"
    narrow = [f"{r['kernel']}<{r['template']}> loads {KR.widths(r['ld'])}" for r in found if not has_128bit_loads(r)]
    assert not narrow, "global loads narrower than 128 bits: " + "; ".join(narrow)


# The kernels that write a (N, C, *) tensor: every backward, and self_information's forward.
WRITES_CLASSES = {(op, "bwd") for op in LOSS_OPS} | {("self_information", "fwd")}


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("direction", ["fwd", "bwd"])
@pytest.mark.parametrize("op", LOSS_OPS)
def test_channels_last_loss_kernels_move_128_bits(cuda_kernels, op, direction, dtype):
    """channels_last / (N, C) inputs run the planes kernels' staged-rows instantiation: a block copies its
    contiguous run of rows through shared memory with 128-bit loads (and stores, where it writes a gradient or
    a per-class map), instead of a thread reading its pixels' classes element by element C apart."""
    found = KR.staged_rows_kernels(cuda_kernels, op, direction, dtype)
    assert found, f"no staged-rows {op} {direction} {dtype} kernel"
    narrow = [f"{r['kernel']}<{r['template']}> loads {KR.widths(r['ld'])}" for r in found if not has_128bit_loads(r)]
    assert not narrow, "global loads narrower than 128 bits: " + "; ".join(narrow)
    if (op, direction) in WRITES_CLASSES:
        narrow = [f"{r['kernel']}<{r['template']}> stores {KR.widths(r['st'])}" for r in found if 128 not in r["st"]]
        assert not narrow, "global stores narrower than 128 bits: " + "; ".join(narrow)


def test_ptx_load_widths():
    ptx = """
.visible .entry _ZN7uda_ops4cuda29entropy_forward_planes_kernelIfLi0EEEvNS0_14EntropyForwardIT_EENS0_10PlanesGeomE(
	ld.global.nc.L1::no_allocate.v4.u32 	{%r1, %r2, %r3, %r4}, [%rd5];
	ld.global.nc.f32 	%f1, [%rd6];
	ld.global.nc.u16 	%rs1, [%rd6];
	st.global.v4.f32 	[%rd7], {%f1, %f2, %f3, %f4};
	ld.global.v2.u64 	{%rd1, %rd2}, [%rd3];
	cp.async.cg.shared.global [%r9], [%rd4], 16;
}
.visible .entry _Z1kPf(
	ld.global.u32 	%r1, [%rd1];
}
"""
    rows = KR.ptx_rows(ptx)
    assert [r["ld"] for r in rows] == [{128: 3, 32: 1, 16: 1}, {32: 1}]
    assert rows[0]["st"] == {128: 1}
    if not rows[0]["kernel"].startswith("_Z"):  # demangled (c++filt)
        assert (rows[0]["kernel"], rows[0]["dtype"], rows[0]["op"]) == ("entropy_forward_planes_kernel", "fp32",
                                                                       "entropy")
    assert has_128bit_loads(rows[0]) and not has_128bit_loads(rows[1])


# ---------------------------------------------------------------------------------------------------
# The report's SASS and ptxas parsers (no nvcc needed)
# ---------------------------------------------------------------------------------------------------
PTXAS = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z1kPf' for 'sm_90'
ptxas info    : Function properties for _Z1kPf
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 1056 bytes smem
"""


def test_parse_ptxas():
    assert KR.parse_ptxas(PTXAS) == {"_Z1kPf": {"stack": 8, "spill_stores": 4, "spill_loads": 12, "regs": 40,
                                                "smem": 1056}}


@pytest.mark.parametrize("op,bits", [("LDG.E", 32), ("LDG.E.128.CONSTANT", 128), ("LDG.E.U16.CONSTANT", 16),
                                     ("STG.E.64", 64), ("LDG.E.U8", 8), ("LDGSTS.E.BYPASS.128", 128)])
def test_mem_width(op, bits):
    assert KR.mem_width(op) == bits


def _sass(lines):
    return "\n\t\tFunction : _Z1kPf\n" + "\n".join(f"        /*{a:04x}*/   {t} ;" for a, t in lines) + "\n"


# A grid-stride loop (0x10-0x90) around a class loop stepping by 4 (0x30-0x60) with one LDG.128 per step.
KERNEL = [(0x00, "S2R R0, SR_TID.X"), (0x10, "IMAD R2, R0, 0x4, RZ"), (0x20, "MOV R22, R9"),
          (0x30, "LDG.E.128 R4, desc[UR4][R2.64]"), (0x40, "IADD3 R22, P1, R22, -0x4, RZ"),
          (0x50, "ISETP.NE.U32.AND P1, PT, R22, RZ, PT"), (0x60, "@P1 BRA 0x30"),
          (0x70, "STG.E.128 desc[UR4][R2.64], R4"), (0x80, "ISETP.GE.U32.AND P0, PT, R0, UR6, PT"),
          (0x90, "@!P0 BRA 0x10"), (0xa0, "EXIT"), (0xb0, "BRA 0xb0"), (0xc0, "NOP")]


def test_analyse_loops_and_widths():
    instrs = KR.split_sass(_sass(KERNEL))["_Z1kPf"]
    a = KR.analyse(instrs, elem_bits=32, classes=8, pixels=None)
    assert a["sass"] == 11 and a["ld"] == {128: 1} and a["st"] == {128: 1} and a["local"] == 0
    assert a["grid_stride_loop"] and a["class_loops"] == 1 and a["pixels_per_tile"] == 4
    # tile = 0x10..0x90: 5 instructions once + 4 in the class loop run 8/4 = 2 times = 13, over 4 pixels x 8.
    assert a["instr_per_elem"] == pytest.approx(13 / 32)


def test_loop_step_ignores_a_reused_register():
    """The exit compare's register is last written by a MOV: no immediate step, so not a class loop."""
    body = KR.split_sass(_sass([(0x00, "IADD3 R2, R2, 0x1, RZ"), (0x10, "MOV R2, R7"),
                                (0x20, "ISETP.GE.U32.AND P1, PT, R2, UR6, PT"), (0x30, "@!P1 BRA 0x0")]))["_Z1kPf"]
    assert KR._loop_step(body) is None


def test_cuda_rows_names_and_dtypes():
    sass = _sass(KERNEL).replace("_Z1kPf", "_ZN7uda_ops4cuda22entropy_forward_kernelIfEEvPKT_PfNS0_9PixelGeomE")
    rows = KR.cuda_rows("", sass, classes=8)
    assert len(rows) == 1
    r = rows[0]
    if r["kernel"].startswith("_Z"):
        pytest.skip("no c++filt to demangle with")
    assert (r["kernel"], r["dtype"], r["op"]) == ("entropy_forward_kernel", "fp32", "entropy")
    assert has_128bit_loads(r) and KR.direction(r["kernel"]) == "fwd"
    assert KR.planes_kernels(rows, "cuda", "entropy", "fwd", "fp32") == rows
    assert KR.planes_kernels(rows, "cuda", "entropy", "bwd", "fp32") == []


def test_staged_rows_kernels_are_not_planes_kernels():
    rows = [{"backend": "cuda", "kernel": "entropy_forward_planes_kernel", "template": t, "dtype": "fp32",
             "op": "entropy", "ld": {128: 1}, "st": {}} for t in ("float, 0", "float, 8", "float, -1")]
    assert [r["template"] for r in KR.planes_kernels(rows, "cuda", "entropy", "fwd", "fp32")] == ["float, 0", "float, 8"]
    assert [r["template"] for r in KR.staged_rows_kernels(rows, "entropy", "fwd", "fp32")] == ["float, -1"]


def test_main_kernel_is_the_smallest_bucket_holding_c():
    rows = [{"kernel": "k", "template": f"float, {cb}"} for cb in (0, 8, 32, 16, 64)]
    assert KR.main_kernel(rows, 19)["template"] == "float, 32"
    assert KR.main_kernel(rows, 100)["template"] == "float, 0"  # no bucket holds C: the first (shared memory)
    si = [{"kernel": "k", "template": t} for t in ("float, false, 0", "float, false, 8", "float, true, 0")]
    assert KR.main_kernel(si, 19)["template"] == "float, true, 0"  # the dense-gradient (kFull) instantiation
    assert KR.main_kernel(si, 8)["template"] == "float, false, 8"
