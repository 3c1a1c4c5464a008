"""One command for a lent GPU (issue 10 item 6): build the CUDA extension, run the GPU tests, compute-sanitizer
(memcheck, racecheck, initcheck), the GPU benchmarks and the kernel report, and keep everything under
benchmarks/results/<device>-<date>/ (logs, JUnit XML, benchmark JSON/markdown, the AUTO_CUDA table, versions).

    make gpu-check                                  # all stages (about 15 minutes of device time)
    make gpu-check GPU_CHECK_STAGES=info,build      # the same in pieces, each under 10 minutes (the device
    make gpu-check GPU_CHECK_STAGES=tests           #   tool's per-command limit) even when every step runs
    make gpu-check GPU_CHECK_STAGES=sanitize        #   to its time limit; later calls on the warm machine
    make gpu-check GPU_CHECK_STAGES=bench           #   reuse the build (a fresh machine builds it first)
    make gpu-check GPU_CHECK_STAGES=report          #   and write into the same folder
    python benchmarks/gpu_check.py --dry-run --out /tmp/x   # CPU: the plan, the info and a tiny benchmark

Stages: info (versions, nvidia-smi, git), build (pip install -e . --no-build-isolation --no-deps with
UDA_OPS_FORCE_CUDA=1, CUDA_HOME from nvcc, TORCH_CUDA_ARCH_LIST = this GPU only), tests (tests/test_cuda.py,
tests/test_triton.py, tests/test_cuda_compile.py, tests/test_kernel_report.py: every op, both backends, every
dtype, both layouts), sanitize, bench (benchmarks/gpu_summary.py, bounded: --reps 30, torch.compile impls
skipped past --budget-s; benchmarks/train_step.py), report (benchmarks/kernel_report.py). Each step has a
time limit and a log; a failed step does not stop the others; summary.md/summary.json say what ran, how
long and with what result; the exit status is non-zero when a step failed. Where $OUT is set (the device
tool), the folder is copied there at the end so that it comes back.
"""
from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from kernel_report import _real_nvcc, find_tool  # noqa: E402

STAGES = ("info", "build", "tests", "sanitize", "bench", "report")
TRITON_TESTS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tests", "test_triton*.py")))
GPU_TESTS = ["tests/test_cuda.py", *TRITON_TESTS, "tests/test_cuda_compile.py", "tests/test_kernel_report.py"]
# What runs under each sanitizer (tests/test_cuda.py -k): every op, dtype and layout against the reference, the
# planes tiles (buckets, the shared-memory slab at C = 150, tails, misaligned views) and the mask searches;
# racecheck (slow) on the kernels with shared memory: the masks' selects and the slab.
SANITIZED = "planes_tiles or matches_reference"
INITCHECKED = "planes_tiles"
RACECHECKED = "mask or (planes_tiles and 150)"


@dataclass
class Step:
    name: str
    stage: str
    cmd: List[str]
    timeout: int
    env: Dict[str, str] = field(default_factory=dict)
    needs_gpu: bool = True


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def device_name() -> Optional[str]:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        return None


def cuda_home() -> Optional[str]:
    """$CUDA_HOME, else the toolkit of the nvcc on PATH (through a wrapper script, as on the lent machines)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(_real_nvcc(nvcc))) if nvcc else None


def arch_list() -> Optional[str]:
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return f"{major}.{minor}"
    except Exception:  # noqa: BLE001
        pass
    return None


def plan(out: str, py: str, dry_run: bool = False) -> List[Step]:
    """Every step of every stage, in order."""
    pytest = [py, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs"]
    build_env = {"UDA_OPS_FORCE_CUDA": "1", "MAX_JOBS": str(os.cpu_count() or 4)}
    if cuda_home():
        build_env["CUDA_HOME"] = cuda_home()
    if arch_list() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        build_env["TORCH_CUDA_ARCH_LIST"] = arch_list()
    san = find_tool("compute-sanitizer") or "compute-sanitizer"
    no_cache = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}  # each tensor its own allocation: exact bounds

    def sanitize(tool: str, keyword: str, timeout: int) -> Step:
        return Step(f"sanitize-{tool}", "sanitize",
                    [san, "--tool", tool, "--error-exitcode", "1", *pytest, "-x", "tests/test_cuda.py", "-k", keyword],
                    timeout, no_cache if tool != "racecheck" else {})

    label = f"{slug(device_name() or 'cpu')}-{git_hash()}"
    baseline = sorted(glob.glob(os.path.join(HERE, "results", "kernel-report-old-*.json")))
    bench = [py, "benchmarks/gpu_summary.py", "--json", f"{out}/bench.json", "--markdown-out", f"{out}/bench.md",
             "--auto-cuda-out", f"{out}/auto_cuda.json"]
    bench += ["--dry-run", "--ops", "entropy,channel_mask", "--layouts", "nchw"] if dry_run else \
        ["--reps", "30", "--budget-s", "200"]
    return [
        Step("build", "build", [py, "-m", "pip", "install", "-v", "-e", ".", "--no-build-isolation", "--no-deps"],
             360, build_env),
        Step("extension", "build", [py, "-c", "import json, uda_ops; i = uda_ops.backend_info(); "
                                    "print(json.dumps(i, indent=1, default=str)); assert i['cuda_available'] "
                                    "and (i['build'] or {}).get('cuda'), 'no CUDA extension'"], 60),
        Step("tests", "tests", [*pytest, *GPU_TESTS, f"--junitxml={out}/tests.xml"], 420),
        sanitize("memcheck", SANITIZED, 200),
        sanitize("racecheck", RACECHECKED, 150),
        sanitize("initcheck", INITCHECKED, 200),
        Step("gpu_summary", "bench", bench, 420, needs_gpu=not dry_run),
        Step("train_step", "bench", [py, "benchmarks/train_step.py"], 150),
        Step("kernel_report", "report", [py, "benchmarks/kernel_report.py", "--label", label, "--out", out,
                                         *(["--baseline", baseline[0]] if baseline else [])], 240,
             needs_gpu=False),
    ]


def git_hash() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "nogit"


def _cmd_out(cmd: List[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def info() -> dict:
    """Versions and the device, as this run saw them."""
    out: Dict[str, object] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "git": git_hash(), "python": sys.version.split()[0], "cuda_home": cuda_home()}
    try:
        import torch

        out.update(torch=torch.__version__, torch_cuda=torch.version.cuda, device=device_name())
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            out.update(capability=f"{p.major}.{p.minor}", sm_count=p.multi_processor_count,
                       memory_gib=round(p.total_memory / 2**30, 1), l2_mib=getattr(p, "L2_cache_size", 0) / 2**20)
    except Exception as exc:  # noqa: BLE001
        out["torch_error"] = str(exc)
    try:
        from importlib.metadata import version

        out["triton"] = version("triton")
    except Exception:  # noqa: BLE001
        out["triton"] = None
    nvcc = shutil.which("nvcc")
    out["nvcc"] = _cmd_out([nvcc, "--version"]).splitlines()[-1:] if nvcc else None
    out["nvidia_smi"] = _cmd_out(["nvidia-smi"]) if shutil.which("nvidia-smi") else None
    out["compute_sanitizer"] = find_tool("compute-sanitizer")
    return out


def run_step(step: Step, out: str, gpu: bool, dry_run: bool) -> dict:
    rec = {"name": step.name, "stage": step.stage, "cmd": " ".join(step.cmd), "env": step.env}
    if dry_run and step.needs_gpu or (step.needs_gpu and not gpu):
        return {**rec, "status": "skipped (no GPU)" if not dry_run else "skipped (dry run)"}
    log = os.path.join(out, f"{step.name}.log")
    t0 = time.time()
    with open(log, "w") as f:
        f.write(f"$ {rec['cmd']}\n# env {step.env}\n")
        f.flush()
        try:
            proc = subprocess.run(step.cmd, cwd=ROOT, env={**os.environ, **step.env}, stdout=f,
                                  stderr=subprocess.STDOUT, timeout=step.timeout)
            rc = proc.returncode
            status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        except subprocess.TimeoutExpired:
            rc, status = None, f"TIMEOUT ({step.timeout} s)"
        except OSError as exc:
            rc, status = None, f"FAILED ({exc})"
    tail = open(log, errors="replace").read().strip().splitlines()[-3:]
    return {**rec, "status": status, "rc": rc, "seconds": round(time.time() - t0, 1),
            "log": os.path.basename(log), "tail": tail}


def summary_md(summary: dict) -> str:
    i = summary.get("info", {})
    lines = [f"# gpu-check {i.get('device')} {i.get('date')}", "",
             f"git {i.get('git')}, torch {i.get('torch')} (CUDA {i.get('torch_cuda')}), triton {i.get('triton')}, "
             f"nvcc {' '.join(i.get('nvcc') or [])}", "", "| step | status | s | last line |", "|---|---|---|---|"]
    for s in summary["steps"].values():
        last = (s.get("tail") or [""])[-1].replace("|", "/")[:100]
        lines.append(f"| {s['name']} | {s['status']} | {s.get('seconds', '')} | {last} |")
    if os.path.exists(os.path.join(summary["dir"], "bench.md")):
        lines += ["", "Benchmarks: bench.md; AUTO_CUDA table: auto_cuda.json (to use it, copy it to "
                  "uda_ops/auto_cuda.json)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--out", help="results folder (default benchmarks/results/<device>-<date>)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--dry-run", action="store_true", help="no GPU: run only what works on a CPU")
    args = ap.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        ap.error(f"unknown stages {bad}; choose from {STAGES}")
    gpu = device_name() is not None
    if not gpu and not args.dry_run:
        print("gpu_check: no CUDA device visible; use --dry-run on a CPU machine", file=sys.stderr)
        return 2
    out = os.path.abspath(args.out or os.path.join(
        HERE, "results", f"{slug(device_name() or 'cpu')}-{dt.date.today().isoformat()}"))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "summary.json")
    summary = json.load(open(path)) if os.path.exists(path) else {"steps": {}}
    summary["dir"] = out
    if "info" in stages or "info" not in summary:
        summary["info"] = info()
        with open(os.path.join(out, "info.json"), "w") as f:
            json.dump(summary["info"], f, indent=1)
    steps = plan(out, args.python, args.dry_run)
    if "build" not in stages and {"tests", "sanitize", "bench"} & set(stages) and not args.dry_run:
        check = next(s for s in steps if s.name == "extension")
        if subprocess.run(check.cmd, cwd=ROOT, capture_output=True).returncode != 0:
            print("gpu_check: no CUDA extension here (a fresh machine?): building it first", flush=True)
            stages = ["build"] + stages
    failed = False
    for step in steps:
        if step.stage not in stages:
            continue
        print(f"gpu_check: {step.name} ...", flush=True)
        rec = run_step(step, out, gpu, args.dry_run)
        summary["steps"][step.name] = rec
        failed |= not rec["status"].startswith(("ok", "skipped"))
        print(f"gpu_check: {step.name}: {rec['status']} {rec.get('seconds', '')}", flush=True)
        with open(path, "w") as f:
            json.dump(summary, f, indent=1)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary_md(summary))
    print(summary_md(summary))
    if os.environ.get("OUT") and os.path.isdir(os.environ["OUT"]):
        dest = os.path.join(os.environ["OUT"], os.path.basename(out))
        shutil.copytree(out, dest, dirs_exist_ok=True)
        print(f"gpu_check: copied to {dest}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
