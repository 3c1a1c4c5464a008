"""pytest-benchmark suite: every op beside the eager reference, torch.compile of it and the official
repositories' eager formula (benchmarks/official.py), in one run.

    pytest benchmarks/ --benchmark-json=out.json      # or: python benchmarks/summary.py
Each benchmark records extra_info: bytes that must move, achieved GB/s, peak extra memory and the
inputs'+gradients' own size, so the summary can put them side by side.
"""
import pytest
import torch

from cases import CASES, MODES, bytes_moved, peak_bytes, step

DEVICE = torch.device("cpu")

PARAMS = [(c, i, m) for c in CASES for m in MODES for i in CASES[c].impls
          if m == "fwd" or CASES[c].differentiable]


@pytest.mark.parametrize("case,impl,mode", PARAMS, ids=["-".join(p) for p in PARAMS])
def test_op(benchmark, case, impl, mode):
    c = CASES[case]
    benchmark.group = f"{case}-{mode}"
    inputs = c.make(DEVICE)
    run = step(c.fn(impl), inputs, mode)
    for _ in range(3):  # warm-up (and compilation)
        run()
    moved = bytes_moved(c, inputs, mode)
    own = sum(x.numel() * x.element_size() * (2 if (x.requires_grad and mode == "fwdbwd") else 1)
              for x in inputs)
    benchmark.extra_info.update(case=case, impl=impl, mode=mode, bytes=moved, peak_bytes=peak_bytes(run),
                                own_bytes=own, shape=list(inputs[0].shape), dtype=str(inputs[0].dtype),
                                threads=torch.get_num_threads())
    benchmark.pedantic(run, rounds=15, iterations=1, warmup_rounds=2)
    if benchmark.stats is not None:  # None under --benchmark-disable (smoke runs)
        benchmark.extra_info["gbps"] = moved / benchmark.stats.stats.median / 1e9
