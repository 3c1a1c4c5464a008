"""AUTO_CUDA: the measured (op, dtype[, layout]) -> "cuda" | "triton" table of the "auto" backend on CUDA tensors, loaded
from JSON (written by benchmarks/gpu_summary.py --auto-cuda-out), and read without a graph break."""
from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

import pytest
import torch

from uda_ops import _ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(tmp_path, data):
    path = tmp_path / "auto_cuda.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_load_keys_by_op_and_dtype_and_drops_junk(tmp_path):
    path = _write(tmp_path, {"choices": {"entropy": {"bfloat16": "triton", "float32": "cuda"},
                                         "sym_kl": {"float16": "tpu", "notadtype": "cuda"},
                                         "no_such_op": {"float32": "triton"}}})
    assert _ops.load_auto_cuda(path) == {("entropy", torch.bfloat16): "triton", ("entropy", torch.float32): "cuda"}


def test_load_keys_by_layout(tmp_path):
    path = _write(tmp_path, {"choices": {"entropy": {"float32": {"planes": "triton", "rows": "cuda", "diag": "cuda"},
                                                     "bfloat16": {"rows": "gpu"}}}})
    assert _ops.load_auto_cuda(path) == {("entropy", torch.float32, "planes"): "triton",
                                         ("entropy", torch.float32, "rows"): "cuda"}


def test_missing_table_is_empty_and_a_broken_one_warns(tmp_path):
    assert _ops.load_auto_cuda(str(tmp_path / "none.json")) == {}
    with pytest.warns(RuntimeWarning, match="AUTO_CUDA"):
        assert _ops.load_auto_cuda(_write(tmp_path, "{not json")) == {}


def test_environment_variable_names_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("UDA_OPS_AUTO_CUDA", _write(tmp_path, {"choices": {"kl_div": {"float32": "triton"}}}))
    assert _ops.load_auto_cuda() == {("kl_div", torch.float32): "triton"}


@pytest.fixture
def cuda_and_triton(monkeypatch):
    """Pretend both a compiled CUDA kernel and Triton exist, so that the table alone decides."""
    monkeypatch.setitem(_ops._KERNELS, ("entropy", "cuda"), True)
    monkeypatch.setattr(_ops, "_TRITON_FOUND", True)
    monkeypatch.setattr(_ops, "_TRITON_ERROR", None)
    monkeypatch.setattr(_ops, "AUTO_CUDA", {("entropy", torch.bfloat16): "triton"})


def test_choice_per_dtype(cuda_and_triton, monkeypatch):
    assert _ops._auto_cuda("entropy", torch.bfloat16) == "triton"
    assert _ops._auto_cuda("entropy", torch.float32) == "native"
    monkeypatch.setattr(_ops, "_triton_ops", lambda op, x: "TRITON")
    monkeypatch.setattr(_ops, "_backend", "auto")
    cuda = torch.device("cuda")
    assert _ops.kernels("entropy", SimpleNamespace(device=cuda, is_cpu=False, dtype=torch.bfloat16)) == "TRITON"
    assert _ops.kernels("entropy", SimpleNamespace(device=cuda, is_cpu=False, dtype=torch.float32)) is _ops.NATIVE


def test_op_wide_entry_applies_to_every_dtype(cuda_and_triton, monkeypatch):
    monkeypatch.setattr(_ops, "AUTO_CUDA", {"entropy": "triton", ("entropy", torch.float32): "cuda"})
    assert _ops._auto_cuda("entropy", torch.float16) == "triton"
    assert _ops._auto_cuda("entropy", torch.float32) == "native"


def test_layout_entry_before_dtype_entry(cuda_and_triton, monkeypatch):
    monkeypatch.setattr(_ops, "AUTO_CUDA", {("entropy", torch.float32, "rows"): "cuda",
                                            ("entropy", torch.float32): "triton"})
    assert _ops._auto_cuda("entropy", torch.float32, "rows") == "native"
    assert _ops._auto_cuda("entropy", torch.float32, "planes") == "triton"
    assert _ops._auto_cuda("entropy", torch.float32) == "triton"
    monkeypatch.setattr(_ops, "_triton_ops", lambda op, x: "TRITON")
    monkeypatch.setattr(_ops, "_backend", "auto")
    nchw = torch.empty(2, 19, 4, 4)
    cuda = torch.device("cuda")
    as_cuda = lambda t: SimpleNamespace(device=cuda, is_cpu=False, dtype=t.dtype, stride=t.stride)  # noqa: E731
    assert _ops.kernels("entropy", as_cuda(nchw), 1) == "TRITON"
    assert _ops.kernels("entropy", as_cuda(nchw.contiguous(memory_format=torch.channels_last)), 1) \
        is _ops.NATIVE
    assert _ops.kernels("entropy", as_cuda(torch.empty(64, 1000)), 1) is _ops.NATIVE
    assert _ops.kernels("entropy", as_cuda(nchw), None) == "TRITON"


def test_class_layout():
    z = torch.empty(2, 19, 4, 4)
    assert _ops.class_layout(z, 1) == "planes"
    assert _ops.class_layout(z.contiguous(memory_format=torch.channels_last), 1) == "rows"
    assert _ops.class_layout(torch.empty(8, 5), 1) == "rows" and _ops.class_layout(torch.empty(8, 5), 0) == "planes"


def test_lookup_traces_without_graph_break(cuda_and_triton):
    def f(x):
        return x + 1 if _ops._auto_cuda("entropy", x.dtype) == "triton" else x - 1

    g = torch.compile(f, fullgraph=True, backend="eager")
    assert torch.equal(g(torch.zeros(3, dtype=torch.bfloat16)), torch.ones(3, dtype=torch.bfloat16))
    assert torch.equal(g(torch.zeros(3)), -torch.ones(3))


def test_gpu_summary_writes_a_table_uda_ops_reads(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import gpu_summary as S

    rows = [{"op": "entropy", "dtype": "bf16", "mode": "fwdbwd", "cuda_ms": 2.0, "triton_ms": 1.0},
            {"op": "entropy", "dtype": "bf16", "mode": "fwdbwd", "cuda_ms": 2.0, "triton_ms": 3.0},
            {"op": "entropy", "dtype": "fp32", "mode": "fwdbwd", "cuda_ms": 1.0, "triton_ms": 1.5},
            {"op": "entropy", "dtype": "fp32", "mode": "fwd", "cuda_ms": 9.0, "triton_ms": 1.0},
            {"op": "channel_mask", "dtype": "fp32", "mode": "fwd", "cuda_ms": 2.0, "triton_ms": 1.0},
            {"op": "sym_kl", "dtype": "fp32", "mode": "fwdbwd", "cuda_ms": 1.0}]
    table = S.auto_cuda_table(rows)
    assert table["triton_over_cuda_ms"]["entropy"]["bfloat16"] == pytest.approx((0.5 * 1.5) ** 0.5)
    path = _write(tmp_path, table)
    assert _ops.load_auto_cuda(path) == {("entropy", torch.bfloat16): "triton", ("entropy", torch.float32): "cuda",
                                         ("channel_adversarial_dropout_mask", torch.float32): "triton"}
    # graph replays (device time) decide where a row has them for both backends
    rows[2].update(cuda_graph_ms=0.5, triton_graph_ms=0.25)
    assert S.auto_cuda_table(rows)["choices"]["entropy"]["float32"] == "triton"
    # both layouts measured: a choice per layout (channels_last and 2-D shapes are "rows")
    rows += [{"op": "entropy", "dtype": "fp32", "layout": "channels_last", "mode": "fwdbwd", "cuda_ms": 1.0,
              "triton_ms": 2.0},
             {"op": "entropy", "dtype": "fp32", "shape": [64, 1000], "mode": "fwdbwd", "cuda_ms": 1.0,
              "triton_ms": 8.0}]
    table = S.auto_cuda_table(rows)
    assert table["choices"]["entropy"]["float32"] == {"planes": "triton", "rows": "cuda"}
    assert table["triton_over_cuda_ms_by_layout"]["entropy"]["float32"]["rows"] == pytest.approx(4.0)
    assert table["choices"]["entropy"]["bfloat16"] == "triton"  # one layout measured: one choice
    assert _ops.load_auto_cuda(_write(tmp_path, table))[("entropy", torch.float32, "rows")] == "cuda"
