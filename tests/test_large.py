"""Tensors past 2^31 elements (issue 13 item 3).

* CPU: ``entropy`` on a bf16 ``(1, 2, 2**30 + 5)`` tensor (2^31 + 10 elements: class 1 of the last pixels lies
  past int32) matches the reference on every pixel, forward and backward. The input repeats a random
  pattern of prime period P, so the expected map and gradient are the reference's on one period, and every
  chunk of P pixels of the result is compared with it (a wrapped 32-bit offset reads another phase of the
  pattern, or crashes).
* Triton: every ``tt.addptr`` of every compiled kernel (the aot_check list) takes int64 offsets.
"""
from __future__ import annotations


import pytest
import torch

import uda_ops
from uda_ops import reference

from conftest import TOL, assert_close, requires_ext

pytestmark = pytest.mark.slow

N = 2**30 + 5  # pixels; x (1, 2, N) has 2^31 + 10 elements
P = 1_000_003  # the pattern's period (prime: 2^32 is no multiple of it)
NEED_GIB = 13  # measured peak RSS 10.4 GiB: x and its gradient (4 GiB each), the map (2 GiB), compare buffers


def _available_gib() -> float:
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) / 2**20


def _chunks(n):
    for s in range(0, n, P):
        yield s, min(P, n - s)


def assert_periodic(t, expect, what, scale=1.0, periods=8):
    """``t[..., q] * scale`` matches ``expect[..., q % P]`` (float64) for every q within the bf16 tolerance.
    Compared in float32, a few periods at a time, in preallocated buffers (no page faults per block)."""
    rtol, atol = TOL[torch.bfloat16]
    e = expect.float().unsqueeze(-2)
    lim = atol + rtol * e.abs()
    buf = torch.empty(*t.shape[:-1], periods, P)
    ok = torch.empty(buf.shape, dtype=torch.bool)
    n = t.shape[-1]
    full, rest = divmod(n, P)

    def check(start, blk, want, lim):
        b, o = buf[..., :blk.shape[-2], :blk.shape[-1]], ok[..., :blk.shape[-2], :blk.shape[-1]]
        b.copy_(blk).mul_(scale).sub_(want).abs_()
        torch.le(b, lim, out=o)  # False for NaN
        if not bool(o.all()):
            idx = (~o).nonzero()[0].tolist()
            raise AssertionError(f"{what}: mismatch at pixel {start + idx[-2] * P + idx[-1]} of {n}")

    for s in range(0, full, periods):
        k = min(periods, full - s)
        check(s * P, t[..., s * P:(s + k) * P].unflatten(-1, (k, P)), e, lim)
    if rest:
        check(full * P, t[..., full * P:].unsqueeze(-2), e[..., :rest], lim[..., :rest])


def test_assert_periodic_sees_a_wrapped_read():
    """What a 32-bit wrap does: the last pixels read another phase of the pattern (offset - 2^32)."""
    base = torch.randn(2, P, dtype=torch.float64)
    t = torch.cat([base, base, base[:, :7]], 1).bfloat16()
    assert_periodic(t, base, "identity")
    n = t.shape[1]
    q = torch.arange(n - 3, n)
    t[1, n - 3:] = base[1, (q - 2**32) % P].bfloat16()
    with pytest.raises(AssertionError, match=f"identity: mismatch at pixel {n - 3} of {n}"):
        assert_periodic(t, base, "identity")


@requires_ext
@pytest.mark.skipif(_available_gib() < NEED_GIB,
                    reason=f"needs {NEED_GIB} GiB of available memory, {_available_gib():.1f} GiB available")
def test_entropy_past_2_to_31_elements_cpu():
    gen = torch.Generator().manual_seed(0)
    base = (torch.rand(1, 2, P, generator=gen, dtype=torch.float64) * 16 - 8).bfloat16()
    x = torch.empty(1, 2, N, dtype=torch.bfloat16)
    assert x.numel() > 2**31 and x.stride(1) + N - 1 > 2**31 - 1  # the last offset
    for s, n in _chunks(N):
        x[:, :, s:s + n] = base[:, :, :n]
    # the expected per-pixel entropy and gradient of the mean, on one period, in float64
    b64 = base.double().requires_grad_(True)
    e = reference.entropy(b64, 1, "none")[0]
    e.sum().backward()
    e, de = e.detach(), b64.grad[0]  # d(sum)/dz = N * d(mean)/dz

    backend = uda_ops.get_backend()
    uda_ops.set_backend("native")  # the compiled CPU kernel, never the reference
    try:
        with torch.no_grad():
            emap = uda_ops.entropy(x, 1, "none")
        assert emap.shape == (1, N) and emap.dtype == torch.bfloat16
        assert_periodic(emap[0], e, "entropy map")
        del emap
        xg = x.requires_grad_(True)
        loss = uda_ops.entropy(xg, 1, "mean")
        loss.backward()
    finally:
        uda_ops.set_backend(backend)
    full, rest = divmod(N, P)
    assert_close(loss.detach(), (e.sum() * full + e[:rest].sum()) / N, torch.bfloat16, msg="mean entropy")
    assert_periodic(xg.grad[0], de, "gradient", scale=N)


# ---------------------------------------------------------------------------------------------------------
# Triton: int64 offsets in every kernel (a static check of the compiled TTIR; no GPU needed)
# ---------------------------------------------------------------------------------------------------------
# The check runs in a fresh interpreter with TRITON_INTERPRET=0: a suite that imported uda_ops.triton under
# TRITON_INTERPRET=1 (the interpreter tests) holds InterpretedFunction objects, which triton.compile rejects.
_WIDTHS = r"""
import json, re, sys
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
ADDPTR = re.compile(r"tt\.addptr [^:\n]+: (?:tensor<[^\n]*?!tt\.ptr<\w+>>|!tt\.ptr<\w+>), (?:tensor<[\dx]*)?(i\d+)")

def widths(fn, sig, const, attrs=None):
    k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs or {}),
                       target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    ttir = k.asm["ttir"]
    w = ADDPTR.findall(ttir)
    assert len(w) == ttir.count("tt.addptr"), "an addptr the pattern does not parse"
    return w

@triton.jit
def int32_offsets(x_ptr, out_ptr, N, BP: tl.constexpr):
    offs = tl.program_id(0) * N + tl.arange(0, BP)  # int32: wraps past 2^31
    tl.store(out_ptr + offs, tl.load(x_ptr + offs))

@triton.jit
def int64_offsets(x_ptr, out_ptr, N, BP: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * N + tl.arange(0, BP)
    tl.store(out_ptr + offs, tl.load(x_ptr + offs))

toy = {"x_ptr": "*fp32", "out_ptr": "*fp32", "N": "i32", "BP": "constexpr"}
out = {"toy:int32_offsets": widths(int32_offsets, toy, {"BP": 16}),
       "toy:int64_offsets": widths(int64_offsets, toy, {"BP": 16})}
from uda_ops.triton import aot_check
for name, fn, sig, const in aot_check._specs("bf16"):  # bf16: the dtype of the large CPU test
    out[name] = widths(fn, sig, const, aot_check._attrs(fn, sig))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def offset_widths(tmp_path_factory):
    """{kernel name: the integer width of each tt.addptr offset in its TTIR}, compiled for sm_90 (no GPU)."""
    import json
    import os
    import subprocess
    import sys
    pytest.importorskip("triton")
    tmp = tmp_path_factory.mktemp("triton")
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp / "cache")}
    (tmp / "widths.py").write_text(_WIDTHS)  # @triton.jit reads its source from a file
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, str(tmp / "widths.py")], capture_output=True, text=True, cwd=root,
                       env={**env, "PYTHONPATH": root + os.pathsep + env.get("PYTHONPATH", "")}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.splitlines()[-1])


def test_the_offset_check_sees_int32(offset_widths):
    assert offset_widths["toy:int32_offsets"] == ["i32", "i32"]
    assert offset_widths["toy:int64_offsets"] == ["i64", "i64"]


def _narrow_offsets(widths, keep):
    names = [n for n in widths if not n.startswith("toy:") and keep(n)]
    assert names, "no kernel checked"
    return {n: widths[n] for n in names if not widths[n] or set(widths[n]) != {"i64"}}


def test_triton_loss_kernels_use_int64_offsets(offset_widths):
    """Every loss kernel (both layouts, one-tile and chunked classes) and channel_impact."""
    bad = _narrow_offsets(offset_widths, lambda name: not name.startswith("search_rows"))
    assert not bad, f"kernels with 32-bit pointer offsets: {bad}"


def test_triton_mask_search_uses_int64_offsets(offset_widths):
    bad = _narrow_offsets(offset_widths, lambda name: name.startswith("search_rows"))
    assert not bad, f"kernels with 32-bit pointer offsets: {bad}"
