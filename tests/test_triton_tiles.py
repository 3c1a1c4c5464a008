"""The tiled Triton loss kernels (issue 10 item 2): one [CB x BP] tile per program, chunks of classes with an
online max/sum when C > CB, both layouts. Every op against the float64 reference on CPU tensors under
TRITON_INTERPRET=1: class buckets (C = 2, 19, 150 planes: chunked; 1000 rows), tail pixels, odd pixel counts,
chunk boundaries that split -inf / NaN / large logits, and the tile table itself."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")

from conftest import OP_IDS, OPS, check_op  # noqa: E402

TT = pytest.importorskip("uda_ops.triton")
from uda_ops.triton import _common as K  # noqa: E402

pytestmark = [pytest.mark.skipif(not TT.INTERPRET, reason="CPU tensors need TRITON_INTERPRET=1"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]


@pytest.fixture
def triton_backend(backend):
    backend("triton")
    yield


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("shape,dim,layout", [
    ((2, 150, 3, 5), 1, "contiguous"),       # planes, C > MAX_CB: 3 chunks, the last one partial
    ((2, 150, 3, 5), 1, "channels_last"),    # rows, one tile of 256 classes
    ((3, 1000), 1, "contiguous"),            # classification logits: rows, C = 1000 in one tile
    ((2, 2, 7, 9), 1, "contiguous"),         # C = 2, 63 pixels: tail
    ((2, 19, 131), 1, "contiguous"),         # odd plane, several pixel tiles
    ((37, 19), 1, "contiguous"),             # rows, odd row count
])
def test_class_buckets_and_tails(triton_backend, op, shape, dim, layout):
    check_op(op, op.make(shape, torch.float32, layout=layout, dim=dim), dim=dim)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("shape,layout,kind", [
    ((2, 7, 3, 5), "contiguous", "neg_inf"),     # planes 4 + 4: tile 2 has a padded class
    ((2, 33, 2, 3), "contiguous", "random"),     # planes 32 + 1
    ((2, 3, 4, 4), "channels_last", "neg_inf"),  # rows 2 + 1, staged
    ((5, 32), "contiguous", "random"),           # rows, C a power of two: one tile, no tile 2
    ((6, 33), "contiguous", "neg_inf"),          # rows past MAX_SPLIT: one masked tile of 64 along the lanes
])
def test_split_tiles(triton_backend, op, shape, layout, kind):
    """The two class tiles (CB = largest power of two <= C, CB2 = next_pow2(C - CB)) at the C where they differ
    most: a padded class in tile 2, a one-class tile 2, no tile 2, and past the split limit."""
    xs = op.make(shape, torch.float32, layout=layout, kind=kind)
    L = K.class_layout(xs[-1], 1)
    T = K.tile_config(L, torch.float32)
    assert T.FULL == (0 if L.inner == 1 and L.classes > K.MAX_SPLIT["rows"] else 3 if L.inner == 1 else 1)
    check_op(op, xs, dim=1)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
def test_chunked_dtypes(triton_backend, op, dtype, monkeypatch):
    """Chunks of 4 classes over C = 19 (5 chunks) in fp64 and fp16, planes and rows."""
    monkeypatch.setitem(K.MAX_CB, "planes", 4)
    monkeypatch.setitem(K.MAX_CB, "rows", 4)
    for layout in ("contiguous", "channels_last"):
        check_op(op, op.make((2, 19, 3, 5), dtype, layout=layout), dim=1)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("kind", ["large", "neg_inf", "one_hot", "nan", "all_neg_inf"])
def test_chunked_extremes(triton_backend, op, kind, monkeypatch):
    """The online max across chunks with 1e4 logits, -inf classes (whole chunks -inf), NaN and all -inf pixels."""
    monkeypatch.setitem(K.MAX_CB, "planes", 2)
    xs = op.make((2, 7, 4, 9), torch.float32, kind=kind)
    out = op.fn(xs, 1)
    if kind in ("nan", "all_neg_inf"):
        nan = out.isnan()
        assert nan.any() and nan.float().mean() < 0.2
    else:
        assert torch.isfinite(out).all()
    check_op(op, xs, dim=1)


def test_neg_inf_leading_chunk_then_finite(triton_backend, monkeypatch):
    """A pixel whose first chunk is all -inf and later chunks finite is finite (not NaN), value and gradient."""
    import uda_ops
    from uda_ops import reference
    monkeypatch.setitem(K.MAX_CB, "planes", 4)
    z = torch.randn(1, 8, 2, 3)
    z[:, :4] = float("-inf")
    x, y = z.clone().requires_grad_(True), z.double().requires_grad_(True)
    out, ref = uda_ops.entropy(x, reduction="none"), reference.entropy(y, reduction="none")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, rtol=2e-5, atol=2e-5)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(x.grad.double(), y.grad, rtol=2e-5, atol=2e-5)


def test_tile_table():
    planes = K.tile_config(K.Layout(2, 19, 512 * 1024, False), torch.float32)
    assert (planes.CB, planes.q_stride, planes.c_stride, planes.o_stride) == (16, 1, 512 * 1024, 19 * 512 * 1024)
    assert planes.meta == {"CB": 16, "CB2": 4, "BP": 128, "ONE": True, "FULL": True, "num_warps": 1}
    assert planes.grid == (2 * (512 * 1024 // planes.BP),)
    assert K.tile_config(K.Layout(2, 19, 512 * 1024, False), torch.bfloat16, inputs=2).BP == 64
    assert K.tile_config(K.Layout(2, 19, 512 * 1024, False), torch.float64, inputs=2).BP == 16
    small = K.tile_config(K.Layout(2, 19, 15, False), torch.float32)
    assert small.BP == 16 and small.grid == (2,)
    for rows, layout in ((False, K.Layout(2, 0, 4096, False)), (True, K.Layout(8192, 0, 1, True))):
        for C in range(2, K.MAX_SPLIT["rows" if rows else "planes"] + 1):  # tile 1 all real classes, tile 2 the rest
            for inputs in (1, 2):
                T = K.tile_config(K.Layout(layout.outer, C, layout.inner, rows), torch.float32, inputs=inputs)
                warps = K.NUM_WARPS if rows else 1
                assert T.ONE and T.FULL == (3 if rows else 1) and T.meta["num_warps"] == warps
                assert T.CB <= C <= T.CB + T.CB2 and (T.CB2 == 0) == (T.CB == C), (C, T)
                assert T.CB & (T.CB - 1) == 0 and T.CB2 & (T.CB2 - 1) == 0 and T.CB2 <= T.CB
                budget = K.ONE_ELEMENTS * warps
                assert (T.CB + T.CB2) * T.BP * inputs <= budget
                if rows:  # the flat block: the least power of two >= BP * C, within STAGE_ELEMENTS
                    flat = T.BP * T.CB * (2 if T.CB2 else 1)
                    assert flat == K.pow2_ceil(T.BP * C) and T.meta["SC"] == C
                    assert flat <= K.STAGE_ELEMENTS < 2 * flat or budget < 2 * (T.CB + T.CB2) * T.BP * inputs
                else:
                    assert budget < 2 * (T.CB + T.CB2) * T.BP * inputs
    rows19 = K.tile_config(K.Layout(2 * 512 * 1024, 19, 1, True), torch.float32, inputs=2)
    assert rows19.meta == {"CB": 16, "CB2": 4, "BP": 128, "ONE": True, "FULL": 3, "num_warps": 4, "SC": 19}
    big = K.tile_config(K.Layout(2, 150, 4096, False), torch.float16, inputs=2)
    assert big.CB == K.MAX_CB["planes"] and not big.meta["ONE"] and big.CB * big.BP == K.TILE_ELEMENTS["planes"] // 2
    assert big.meta["num_warps"] == K.NUM_WARPS and big.CB2 == 0 and not big.FULL
    rows = K.tile_config(K.Layout(64, 1000, 1, False), torch.bfloat16)
    assert (rows.CB, rows.q_stride, rows.c_stride, rows.o_stride, rows.G) == (1024, 1000, 1, 0, 1)
    assert rows.meta["ONE"] and rows.BP == K.TILE_ELEMENTS["rows"] // 1024 and rows.CB2 == 0 and not rows.FULL
    assert K.tile_config(K.Layout(64, 33, 1, False), torch.float32).FULL == 0  # past MAX_SPLIT: one masked tile
    f64 = K.tile_config(K.Layout(2, 150, 512 * 1024, False), torch.float64)
    assert f64.CB * f64.BP == K.TILE_ELEMENTS["planes"] // 2


def _aot_report(tmp_path, pixel_vec: str, *args: str, timeout: int = 900):
    """The --report lines of the loss kernels from `python -m uda_ops.triton.aot_check` (fp32 and bf16, sm_90,
    no GPU) with UDA_OPS_TRITON_PIXEL_VEC=pixel_vec; asserts that every kernel compiled."""
    import subprocess
    import sys
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path),
           "UDA_OPS_TRITON_PIXEL_VEC": pixel_vec}
    r = subprocess.run([sys.executable, "-m", "uda_ops.triton.aot_check", "--dtypes", "fp32,bf16", "--report", *args],
                       capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return [ln for ln in r.stdout.splitlines() if "@planes" in ln or "@rows" in ln]


def test_nchw_loss_kernels_load_128_bits(tmp_path):
    """Compiled ahead of time for sm_90 (no GPU): every NCHW (planes) loss kernel loads its class tiles with
    128-bit vectors in fp32 and bf16 (ld.global.v4.b32; the only narrower loads are per-pixel map values such
    as the upstream gradient), with no spills, and exponentiates with ex2.approx.ftz (K.exp, which the
    interpreter tests cannot reach)."""
    import re
    lines = _aot_report(tmp_path, "0", "--variants", "planes19,planes150")
    assert len(lines) == 2 * 2 * 13, lines
    for ln in lines:
        loads = dict((k, int(v)) for k, v in re.findall(r"([\w.]+)x(\d+)", ln.split("ld.global[")[1].split("]")[0]))
        vec = loads.pop("v4.b32", 0)
        per_vec = 8 if " bf16 " in ln else 4  # elements per 128-bit load
        # 16-bit loads: none, but for clan's per-pixel d map, read in its own (here bf16) dtype
        assert vec > 0 and loads.get("b16", 0) <= ("clan" in ln) and sum(loads.values()) <= vec * per_vec, ln
        assert "spill_stores=0" in ln, ln
        assert int(re.search(r"ex2\.ftz=(\d+)", ln).group(1)) > 0, ln  # K.exp's fast path, not tl.exp


# The rows kernels that write a per-class tensor (each backward, self_information's forward)
ROWS_WRITERS = ("_bwd", "self_information_fwd")


def test_staged_rows_kernels_move_128_bits(tmp_path):
    """Staged rows (channels_last, C = 19) compiled for sm_90: each input's run is read with 128-bit loads (the
    only scalar loads are per-pixel maps: the upstream gradient, clan's d), each per-class output is written with
    128-bit stores, nothing spills. The in-place rows tiles (FULL = 2) read element by element."""
    import re
    lines = _aot_report(tmp_path, "0", "--variants", "rows19")
    assert len(lines) == 2 * 13, lines
    for ln in lines:
        fields = {k: re.search(k + r"\[([^\]]*)\]", ln).group(1) for k in ("ld.global", "st.global")}
        loads, stores = ({k: int(v) for k, v in re.findall(r"([\w.]+)x(\d+)", f)} for f in fields.values())
        assert loads.pop("v4.b32", 0) > 0 and sum(loads.values()) <= 2, ln
        if any(w in ln for w in ROWS_WRITERS):
            assert stores.pop("v4.b32", 0) > 0 and sum(stores.values()) <= 1, ln
        assert "spill_stores=0" in ln, ln


def test_pixel_vec_experiment_narrows_only_16_bit_split_tiles(tmp_path):
    """UDA_OPS_TRITON_PIXEL_VEC=4 (K.PIXEL_VEC, an experiment for the next GPU run): the split planes tiles of bf16
    load 4 pixels a vector (64-bit, ld.global.v2.b32) instead of 8, fp32 keeps its 128-bit loads, and nothing spills."""
    import re
    lines = _aot_report(tmp_path, "4", "--variants", "planes19", "--only", "sym_kl_fwd", timeout=600)
    assert len(lines) == 2, lines
    for ln in lines:
        loads = re.search(r"ld\.global\[([^\]]*)\]", ln).group(1)
        assert ("v2.b32x" in loads and "v4" not in loads) if " bf16 " in ln else ("v4.b32x" in loads), ln
        assert "spill_stores=0" in ln, ln


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
# the edge inputs only (random and large logits at C = 19 run through the one-tile path in every other test)
@pytest.mark.parametrize("kind", ["neg_inf", "nan", "all_neg_inf"])
def test_one_tile_step_and_chunks_c19(triton_backend, op, kind, monkeypatch):
    """C = 19, forward and backward, planes and rows: the one-tile path (ONE: the statistics in one step, no
    running max and no rescale terms) and the chunked path (chunks of 4 classes, online max/sum) each match the
    float64 reference, and give NaN at the same pixels (a NaN logit, a pixel all -inf)."""
    from conftest import run_with_grad
    results = {}
    for one in (True, False):
        if not one:
            monkeypatch.setitem(K.MAX_CB, "planes", 4)
            monkeypatch.setitem(K.MAX_CB, "rows", 4)
        for layout in ("contiguous", "channels_last"):
            xs = op.make((2, 19, 3, 5), torch.float32, kind=kind, layout=layout)
            L = K.class_layout(xs[-1], 1)
            assert L.inner == (1 if layout == "channels_last" else 15)
            assert K.tile_config(L, torch.float32, inputs=2).meta["ONE"] is one
            assert K.tile_config(L, torch.float32).meta["ONE"] is one
            check_op(op, xs, dim=1)
            out, gs, _ = run_with_grad(op.fn, xs, 1)
            results[one, layout] = [out.isnan()] + [g.isnan() for g in gs]
    for layout in ("contiguous", "channels_last"):
        for a, b in zip(results[True, layout], results[False, layout]):
            assert torch.equal(a, b)
    if kind in ("nan", "all_neg_inf"):
        assert results[True, "contiguous"][0].any()


# Rows of C <= MAX_SPLIT["rows"] classes: staged through a flat block (FULL = 3, the default) and read in place
# (FULL = 2, UDA_OPS_TRITON_ROWS_STAGED=0). Row counts: one partial program, several full programs and a partial
# tail (BP = 128 rows at C = 19 in fp32), and (N, C) logits.
STAGED_SHAPES = [
    ((2, 19, 3, 5), "channels_last"),    # 30 rows: one partial run
    ((1, 19, 13, 23), "channels_last"),  # 299 rows: two full runs and a tail of 43
    ((3, 3, 7, 11), "channels_last"),    # C = 3: tiles of 2 + 1 classes
    ((2, 16, 9, 9), "channels_last"),    # C = 16: one tile, no tile 2
    ((257, 32), "contiguous"),           # (N, C) logits, C = MAX_SPLIT: one tile of 32
    ((5, 2), "contiguous"),              # C = 2
]


@pytest.mark.parametrize("staged", [True, False], ids=["staged", "in_place"])
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("shape,layout", STAGED_SHAPES, ids=[f"{s}-{l}" for s, l in STAGED_SHAPES])
def test_rows_staged_and_in_place(triton_backend, op, shape, layout, staged, monkeypatch):
    """Every op, value and gradients, against the float64 reference through both rows paths."""
    monkeypatch.setattr(K, "ROWS_STAGED", staged)
    xs = op.make(shape, torch.float32, layout=layout)
    T = K.tile_config(K.class_layout(xs[-1], 1), torch.float32)
    assert T.FULL == (3 if staged else 2)
    check_op(op, xs, dim=1)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("kind", ["random", "neg_inf", "nan", "all_neg_inf"])
def test_rows_staged_dtypes_and_extremes(triton_backend, op, dtype, kind):
    """Staged rows in the interpreter's other dtypes (16-bit blocks; float64's smaller runs; bfloat16 runs in the
    GPU tests) and with -inf, NaN and all -inf rows over several programs: NaN exactly where the reference has it."""
    xs = op.make((1, 19, 11, 29), dtype, layout="channels_last", kind=kind)
    assert K.tile_config(K.class_layout(xs[-1], 1), dtype).FULL == 3
    check_op(op, xs, dim=1)


@pytest.mark.parametrize("grad", ["channels_last", "contiguous", "expanded"])
def test_rows_staged_self_information_gradient_layouts(triton_backend, grad):
    """self_information's backward with staged z: an upstream gradient dense in z's rows layout is staged too
    (G_ROWS), any other is read through its strides (an expanded one in place)."""
    import uda_ops
    from uda_ops import reference
    z = torch.randn(1, 19, 13, 23).to(memory_format=torch.channels_last)
    g = torch.randn(z.shape)
    g = {"channels_last": g.to(memory_format=torch.channels_last), "contiguous": g,
         "expanded": torch.tensor(0.7).expand(z.shape)}[grad]
    x, y = z.clone().requires_grad_(True), z.double().requires_grad_(True)
    uda_ops.self_information(x).backward(g)
    reference.self_information(y).backward(g.double())
    torch.testing.assert_close(x.grad.double(), y.grad, rtol=2e-5, atol=2e-6)
