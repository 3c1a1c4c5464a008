"""Run the benchmark suite (or read a saved run) and print uda_ops beside the eager reference, torch.compile of
it, and the official repositories' eager formulas (benchmarks/official.py), all measured in the same run.

    python benchmarks/summary.py                     # run everything, print the table
    python benchmarks/summary.py --save              # also keep the raw run in benchmarks/results/
    python benchmarks/summary.py --json out.json     # also write the summary as JSON
    python benchmarks/summary.py --from raw.json     # summarise an earlier pytest-benchmark JSON
    python benchmarks/summary.py -k entropy --markdown
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

try:
    import resource
except ImportError:  # not on Windows: no busy-machine check there
    resource = None

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def device_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Other processes' CPU use, in cores on average, above which the timings are not worth reading: the kernels run on
# every core (torch's thread pool), so a thread that loses its core holds up each parallel region; on the 2-core
# machine one busy process made entropy's forward 12x slower (4.5 ms against 0.38 ms idle, 2026-12-02) and every
# ratio meaningless.
BUSY_LIMIT = 0.25


def busy_cpu_s() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat; steal counts as busy: a
    hypervisor's other guests hold the cores), or None where it cannot be read."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in (fields[1:9] + ["0"] * 8)[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float | None:
    """CPU seconds of this process and of its children that have been waited for (the suite's subprocess)."""
    if resource is None:
        return None
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                   resource.getrusage(resource.RUSAGE_CHILDREN)))


def other_load(fn):
    """``(fn(), cores)``: the result of ``fn`` and how many cores other processes used on average while it ran
    (the machine's busy time less this process tree's), or None where /proc/stat or `resource` is missing."""
    busy0, own0, t0 = busy_cpu_s(), own_cpu_s(), time.monotonic()
    result = fn()
    busy1, own1, wall = busy_cpu_s(), own_cpu_s(), time.monotonic() - t0
    if None in (busy0, busy1, own0) or wall <= 0:
        return result, None
    return result, max(0.0, (busy1 - busy0) - (own1 - own0)) / wall


def busy_warning(cores: float | None, threads: int) -> str | None:
    """The warning to print beside the table when other processes competed for the cores, else None."""
    if cores is None or cores < BUSY_LIMIT:
        return None
    return (f"warning: other processes used {cores:.2f} of {os.cpu_count()} cores on average while the benchmarks ran "
            f"with {threads} threads; these timings and ratios are not reliable: rerun on an idle machine")


def run_suite(keyword: str | None, test_file: str = "test_bench_ops.py") -> dict:
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [sys.executable, "-m", "pytest", os.path.join(HERE, test_file), "-q", "-p",
           "no:cacheprovider", f"--benchmark-json={path}", "--benchmark-sort=name"]
    if keyword:
        cmd += ["-k", keyword]
    proc = subprocess.run(cmd, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"benchmark run failed (exit {proc.returncode})")
    with open(path) as f:
        raw = json.load(f)
    os.remove(path)
    return raw


def summarise(raw: dict) -> list:
    by = {}
    for b in raw["benchmarks"]:
        e = b["extra_info"]
        by[(e["case"], e["mode"], e["impl"])] = dict(e, median_ms=b["stats"]["median"] * 1e3,
                                                     iqr_ms=b["stats"]["iqr"] * 1e3)
    rows = []
    for case, mode in sorted({(c, m) for c, m, _ in by}, key=lambda k: (k[0], k[1])):
        u, e, c, o = (by.get((case, mode, i)) for i in ("uda_ops", "eager", "compile", "official"))
        if u is None:
            continue
        row = {"op": case, "mode": mode, "shape": u["shape"], "dtype": u["dtype"],
               "uda_ops_ms": u["median_ms"], "uda_ops_gbps": u.get("gbps"),
               "peak_mib": u["peak_bytes"] / 2**20, "own_mib": u["own_bytes"] / 2**20}
        for name, r in (("eager", e), ("compile", c), ("official", o)):
            if r is not None:
                row[f"{name}_ms"] = r["median_ms"]
                row[f"x_{name}"] = r["median_ms"] / u["median_ms"]
                row[f"{name}_peak_mib"] = r["peak_bytes"] / 2**20
        rows.append(row)
    return rows


def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def table(rows: list, markdown: bool) -> str:
    head = ["op", "mode", "uda_ops ms", "eager ms", "compile ms", "official ms", "x eager", "x compile",
            "x official", "GB/s", "peak MiB (uda/eager/compile/official)", "inputs+grads MiB"]
    lines = []
    for r in rows:
        lines.append([r["op"], r["mode"], fmt(r["uda_ops_ms"], ".2f"), fmt(r.get("eager_ms"), ".2f"),
                      fmt(r.get("compile_ms"), ".2f"), fmt(r.get("official_ms"), ".2f"), fmt(r.get("x_eager"), ".1f"),
                      fmt(r.get("x_compile"), ".2f"), fmt(r.get("x_official"), ".2f"), fmt(r.get("uda_ops_gbps"), ".1f"),
                      f"{r['peak_mib']:.1f} / {fmt(r.get('eager_peak_mib'), '.1f')} / "
                      f"{fmt(r.get('compile_peak_mib'), '.1f')} / {fmt(r.get('official_peak_mib'), '.1f')}",
                      f"{r['own_mib']:.1f}"])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(l) + " |" for l in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)] if lines else []
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(l, widths)) for l in lines]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", help="summarise this pytest-benchmark JSON instead of running")
    ap.add_argument("-k", dest="keyword", help="pytest -k expression to select cases")
    ap.add_argument("--json", help="write the summary (rows + machine info) to this file")
    ap.add_argument("--save", action="store_true", help="keep the raw run in benchmarks/results/")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()

    if args.src:
        with open(args.src) as f:
            raw = json.load(f)
        raw = raw.get("raw", raw)  # a saved results/ file holds the raw run beside its summary
    else:
        raw, others = other_load(lambda: run_suite(args.keyword))
    import torch  # after the run: the suite runs in its own process

    info = {"device": device_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "date": dt.date.today().isoformat(), "python": platform.python_version()}
    if not args.src:
        info["other_cores"] = None if others is None else round(others, 3)
        warning = busy_warning(others, info["threads"])
        if warning:
            info["warning"] = warning
    rows = summarise(raw)
    print(f"\n{info['device']}, {info['threads']} threads, torch {info['torch']}, {info['date']}")
    print(table(rows, args.markdown))
    if info.get("warning"):
        print(info["warning"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)
    if args.save and not args.src:
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        path = os.path.join(HERE, "results", f"cpu-{info['date']}.json")
        with open(path, "w") as f:
            json.dump({"machine": info, "rows": rows, "raw": raw}, f, indent=1)
        print(f"saved {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
