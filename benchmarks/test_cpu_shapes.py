"""benchmarks/cpu_shapes.py runs (make test: one small shape, one short round per op)."""
import cpu_shapes


def test_cpu_shapes_runs_every_op(tmp_path):
    rows = cpu_shapes.main(["--shape", "64,10", "--rounds", "1", "--budget", "0.001",
                            "--json", str(tmp_path / "out.json")])
    assert [r["op"] for r in rows] == list(cpu_shapes.OPS)
    assert all(r["shape"] == [64, 10] and r["uda_ops_ms"] > 0 and r["official_ms"] > 0 and r["one_op_ms"] > 0
               for r in rows)
    assert all(r["ceiling"] == r["official_ms"] / r["one_op_ms"] for r in rows)
    assert (tmp_path / "out.json").exists()
