"""The GPU benchmark method (benchmarks/gpu_summary.py, gpu_common.py) on CPU tensors with tiny shapes: the
rotation of input sets, the rows and derived columns, the table. The timings themselves mean nothing here."""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import gpu_common as G  # noqa: E402
import gpu_summary as S  # noqa: E402

CPU = torch.device("cpu")


@pytest.mark.parametrize("set_bytes,n", [(80 * 2**20, 2), (30 * 2**20, 2), (7 * 2**20, 9), (1, 16)])
def test_rotation_count_exceeds_l2(set_bytes, n):
    assert G.rotation_count(set_bytes) == n
    assert n * set_bytes >= G.ROTATE_BYTES or n == 16


def test_time_rotated_cycles_through_the_sets():
    calls = []
    steps = [lambda k=k: calls.append(k) for k in range(3)]
    out = G.time_rotated(steps, CPU, reps=7, warmup=2)
    assert calls == [0, 1] + [0, 1, 2, 0, 1, 2, 0]
    assert out["p10_ms"] <= out["ms"] <= out["p90_ms"]


def test_graph_timing_is_none_off_gpu():
    assert G.time_graph([lambda: None], CPU) is None


def test_run_rows_and_table_on_cpu():
    impls = ["cuda", "eager", "official"]
    rows = S.run(["entropy", "clan_adversarial", "channel_mask"], [(2, 5, 4, 6)], ["fp32"], ["nchw", "channels_last"],
                 ["fwdbwd"], impls, CPU, reps=3, graphs=True, log=lambda *_: None)
    assert [(r["op"], r["layout"]) for r in rows] == [("entropy", "nchw"), ("clan_adversarial", "nchw"),
                                                       ("entropy", "channels_last"),
                                                       ("clan_adversarial", "channels_last"),
                                                       ("channel_mask", "nchw")]
    for r in rows:
        assert isinstance(r["cuda_ms"], float) and isinstance(r["eager_ms"], float), r
        assert r["cuda_x_eager"] == pytest.approx(r["eager_ms"] / r["cuda_ms"])
        assert r["cuda_sets"] >= 2 and r["cuda_graph_ms"] is None
        assert r["bytes"] > 0 and r["cuda_frac_copy"] > 0
    ent = rows[0]
    assert ent["grads_mib"] == pytest.approx(2 * 5 * 4 * 6 * 4 / 2**20)
    if S.OFFICIAL:
        assert isinstance(ent["official_ms"], float) and "cuda_x_official" in ent
    text = S.table(rows, markdown=True)
    assert "| cuda xeager |" in text and text.count("\n") == len(rows) + 1
    json.dumps(rows)


def test_two_dim_shapes_run_once_whatever_the_layouts():
    """(N, C) logits have one layout: measured once, not again as "channels_last"."""
    rows = S.run(["entropy"], [(2, 5, 4, 6), (8, 300)], ["fp32"], ["nchw", "channels_last"], ["fwdbwd"], ["eager"],
                 CPU, reps=2, graphs=False, log=lambda *_: None)
    assert [(r["shape"], r["layout"]) for r in rows] == [([2, 5, 4, 6], "nchw"), ([2, 5, 4, 6], "channels_last"),
                                                         ([8, 300], "nchw")]


def test_channels_last_inputs_keep_their_layout_and_grad():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    d = torch.randn(2, 1, 4, 5)
    y, e = S.in_layout([x, d], "channels_last")
    assert y.is_contiguous(memory_format=torch.channels_last) and y.requires_grad and not e.requires_grad


def test_dry_run_cli(tmp_path):
    out = tmp_path / "r.json"
    assert S.main(["--dry-run", "--ops", "sym_kl", "--layouts", "nchw", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["rows"][0]["op"] == "sym_kl" and data["machine"]["copy_gbps"] > 0
