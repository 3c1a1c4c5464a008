"""What the compiled GPU kernels look like, without a GPU: registers, spills, the widths of their global loads
and stores, and instructions per element, for every CUDA kernel (nvcc alone, sm_90) and every Triton kernel
(compiled ahead of time for sm_90), per dtype.

    python benchmarks/kernel_report.py --label old-abc1234   # benchmarks/results/kernel-report-<label>.json/.md
    python benchmarks/kernel_report.py --no-triton --print      # CUDA only, table on stdout
    python benchmarks/kernel_report.py --no-cuda --label X      # Triton only (any Triton: run it from that venv)
    python benchmarks/kernel_report.py --rows-table A.json B.json   # Triton rows kernels of reports side by side

CUDA: ``tests/cuda/compile_check.cu`` (which instantiates every launcher of ``csrc/cuda/*_kernels.cuh`` for
float, double, __half and __nv_bfloat16) is compiled once to a cubin with the extension's flags (setup.py's
``-O3`` and the half-conversion macros torch defines) plus ``-Xptxas -v``; ptxas' report gives registers,
stack frame and spill bytes per kernel; ``cuobjdump -sass`` gives the machine code.
Triton: each launch configuration of ``uda_ops.triton.aot_check._specs`` is compiled with ``triton.compile``
for ``GPUTarget("cuda", 90, 32)``, with pointers and the pixel counts marked 16-divisible (what the JIT
specialises to at the benchmark shapes, where every pointer is 16-byte aligned and H*W is a multiple of 16);
its PTX goes through ``ptxas -v`` (Triton's own, with Triton's options) for registers and spills, its cubin
through ``cuobjdump -sass``.

Columns (per kernel x dtype; several rows when a kernel has several template instantiations):
  regs, stack, spill   registers per thread; stack frame bytes; spill stores + loads bytes (ptxas -v)
  ld / st              static global loads / stores by width in bits ("128:4 32:2" = four 128-bit, two 32-bit),
                       from LDG/STG, generic LD/ST and cp.async (LDGSTS, also counted as "ldgsts") in the SASS;
                       "bulk" counts TMA copies
  local                LDL + STL instructions (local memory: spills or arrays indexed at run time)
  sass                 static SASS instructions of the kernel (NOPs excluded)
  instr/elem           estimated instructions executed per element, an element being one (pixel, class)
                       position at C = --classes (default 19, Cityscapes); only for the six pixel losses, and
                       not for CUDA's staged-rows instantiations (bucket -1: block copies through shared
                       memory, which the model below does not describe).
How instr/elem is estimated (static, a model, not a measurement): loops are the SASS back edges. A loop whose
exit counter steps by an immediate u (``IADD3 R, R, 0x4``) is a loop over classes, run C/u times per pass (at
least once); a loop without one is (CUDA) the grid-stride loop over pixel tiles, whose body (inner loops
weighted) is the work of one tile, or (Triton, which has none) runs once; without a grid-stride loop the
whole kernel is one tile. Called subroutines (64-bit division) count at each call site. Every path through a
branch is counted (an upper bound for branchy code and for kernels with a separate tail path). A tile holds P
pixels per thread: Triton: BP (or BLOCK) / (32 * num_warps), a fraction where a [CB x BP] tile spreads its
classes over the threads too (padded classes are not elements); CUDA: 128 / element bits when the kernel has
128-bit global loads (4 for fp32, 8 for bf16: one vector of pixels), else 1, or PIXELS_PER_THREAD below
where a kernel owns more than one vector. instr/elem = tile instructions / (P * C).
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COMPILE_CHECK = os.path.join("tests", "cuda", "compile_check.cu")

LOSS_OPS = ("sym_kl", "kl_div", "entropy", "self_information", "cosine_discrepancy", "clan_adversarial")
ELEM_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "fp64": 64}
CUDA_DTYPE = {"float": "fp32", "double": "fp64", "__half": "fp16", "__nv_bfloat16": "bf16"}
# What torch.utils.cpp_extension passes to nvcc, and setup.py's own nvcc flags.
TORCH_DEFINES = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                 "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]
NVCC_FLAGS = ["-O3", "-std=c++17"]
# CUDA kernel-name regex -> pixels one thread owns per tile, where that is not the widest load's vector.
PIXELS_PER_THREAD: Dict[str, int] = {}
# Triton int arguments that are multiples of 16 at the benchmark shapes (pixel counts, plane sizes).
TRITON_DIVISIBLE = {"P", "inner", "HW", "pixels", "n_pixels", "numel", "N_PIX"}


# ---------------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------------
def _triton_bin() -> Optional[str]:
    spec = importlib.util.find_spec("triton")
    if spec is None or not spec.origin:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "backends", "nvidia", "bin")
    return path if os.path.isdir(path) else None


def find_tool(name: str) -> Optional[str]:
    """`name` (nvcc, ptxas, cuobjdump) on PATH, in $CUDA_HOME/bin, beside the real nvcc, or in Triton's
    bundled CUDA binaries (the only cuobjdump on some machines)."""
    dirs = []
    if os.environ.get("CUDA_HOME"):
        dirs.append(os.path.join(os.environ["CUDA_HOME"], "bin"))
    found = shutil.which(name)
    if found:
        return found
    nvcc = shutil.which("nvcc")
    if nvcc:
        dirs.append(os.path.dirname(_real_nvcc(nvcc)))
    dirs += ["/usr/local/cuda/bin"]
    tb = _triton_bin()
    if tb:
        dirs.append(tb)
    for d in dirs:
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def _real_nvcc(nvcc: str) -> str:
    """Follow a wrapper script (`exec /usr/local/cuda-13.0/bin/nvcc "$@"`) to the toolkit's nvcc."""
    nvcc = os.path.realpath(nvcc)
    try:
        with open(nvcc, "rb") as f:
            head = f.read(4096)
    except OSError:
        return nvcc
    if head.startswith(b"#!"):
        m = re.search(rb"(/\S+/bin/nvcc)\b", head)
        if m and os.path.isfile(m.group(1).decode()):
            return m.group(1).decode()
    return nvcc


def tools_missing(triton: bool = False) -> List[str]:
    missing = [t for t in ("nvcc", "cuobjdump") if find_tool(t) is None]
    if triton and importlib.util.find_spec("triton") is None:
        missing.append("triton")
    return missing


# ---------------------------------------------------------------------------------------------------
# Parsing ptxas -v and SASS
# ---------------------------------------------------------------------------------------------------
def parse_ptxas(text: str) -> Dict[str, dict]:
    """ptxas -v output -> {mangled kernel name: {regs, stack, spill_stores, spill_loads, smem}}."""
    out: Dict[str, dict] = {}
    cur = None
    for line in text.splitlines():
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            cur = out.setdefault(m.group(1), {})
            continue
        m = re.search(r"Compiling entry function '(\S+)'", line)
        if m:
            cur = out.setdefault(m.group(1), {})
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["regs"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            cur["smem"] = int(s.group(1)) if s else 0
    return out


@dataclass
class Instr:
    addr: int
    pred: str
    op: str  # opcode with modifiers, e.g. LDG.E.128.CONSTANT
    args: str


_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def split_sass(text: str) -> Dict[str, List[Instr]]:
    """cuobjdump -sass output -> {function name: instructions}."""
    out = {}
    for chunk in re.split(r"\n\s*Function : ", text)[1:]:
        name = chunk.split("\n", 1)[0].strip()
        out[name] = [Instr(int(m.group(1), 16), (m.group(2) or "").strip(), m.group(3), m.group(4).strip())
                     for m in _INSTR.finditer(chunk)]
    return out


def mem_width(op: str) -> Optional[int]:
    """Bits moved by one global/local memory instruction (LDG.E.128 -> 128, LDG.E.U16 -> 16, LDG.E -> 32)."""
    mods = op.split(".")[1:]
    for m in mods:
        if m in ("128", "64"):
            return int(m)
        if m in ("U16", "S16"):
            return 16
        if m in ("U8", "S8"):
            return 8
    return 32


def _kind(op: str) -> Optional[str]:
    base = op.split(".")[0]
    if base in ("LDG", "LD"):
        return "ld"
    if base in ("STG", "ST"):
        return "st"
    if base in ("LDL", "STL"):
        return "local"
    if base == "LDGSTS":
        return "ldgsts"
    if base in ("UBLKCP", "UTMALDG", "UTMASTG", "UBLKRED", "UTMAPF"):
        return "bulk"
    return None


def _target(args: str) -> Optional[int]:
    m = re.search(r"0x([0-9a-f]+)", args)
    return int(m.group(1), 16) if m else None


def _loop_step(body: List[Instr]) -> Optional[int]:
    """The immediate by which a loop's exit counter steps, else None. `body` ends with the back-edge branch;
    the counter is a register of the compare that sets its predicate (``ISETP.NE.U32.AND P1, PT, R22, RZ``;
    the ``.EX`` compare of a 64-bit counter's high word is skipped) whose last write before that compare is
    a step by an immediate (``IADD3 R22, P1, R22, -0x4, RZ``)."""
    pred = body[-1].pred.lstrip("@!")
    if not pred or pred in ("PT", "UPT"):
        return None
    at = None
    for k in range(len(body) - 2, -1, -1):
        i = body[k]
        if i.op.startswith(("ISETP", "UISETP")) and i.args.split(",")[0].strip() == pred:
            at = k
            if ".EX" not in i.op:
                break
    if at is None:
        return None
    compared = [r for r in re.findall(r"\bU?R\d+\b", body[at].args) if r not in ("RZ", "URZ")]
    for reg in compared:
        for i in reversed(body[:at]):
            ops = [a.strip() for a in i.args.split(",")]
            if not ops or ops[0] != reg:
                continue
            if i.op.startswith(("IADD3", "UIADD3", "VIADD", "UIADD")) and ".X" not in i.op:
                regs = [a for a in ops if re.fullmatch(r"U?R\d+", a)]
                imm = [a for a in ops if re.fullmatch(r"-?0x[0-9a-f]+", a)]
                if len(regs) >= 2 and regs[1] == reg and imm and 0 < abs(int(imm[0], 16)) <= 64:
                    return abs(int(imm[0], 16))
            break
    return None


def analyse(instrs: List[Instr], elem_bits: int, classes: int, pixels: Optional[float],
            grid_loops: bool = True) -> dict:
    """Memory widths, static size, and (given pixels per tile, or inferred from the widest load) the estimated
    instructions per (pixel, class) element; see the module docstring for the model."""
    body = [i for i in instrs if i.op != "NOP"]
    # Drop the trailing `BRA self` after the last EXIT.
    body = [i for i in body if not (i.op.startswith("BRA") and _target(i.args) == i.addr)]
    ld: Dict[int, int] = {}
    st: Dict[int, int] = {}
    counts = {"local": 0, "ldgsts": 0, "bulk": 0}
    for i in body:
        k = _kind(i.op)
        if k == "ldgsts":  # cp.async: a global load (into shared memory)
            counts[k] += 1
            k = "ld"
        if k == "ld":
            ld[mem_width(i.op)] = ld.get(mem_width(i.op), 0) + 1
        elif k == "st":
            st[mem_width(i.op)] = st.get(mem_width(i.op), 0) + 1
        elif k:
            counts[k] += 1
    res = {"sass": len(body), "ld": ld, "st": st, **counts}
    vec = 128 // elem_bits if 128 in ld else 1
    p = pixels or vec
    res["pixels_per_tile"] = p
    # Subroutines: [call target, first RET after it].
    subs = {}
    for i in body:
        if i.op.startswith("CALL"):
            t = _target(i.args)
            if t is not None and t not in subs:
                end = next((j.addr for j in body if j.addr >= t and j.op.startswith("RET")), t)
                subs[t] = (t, end)
    in_sub = lambda a: any(s <= a <= e for s, e in subs.values())  # noqa: E731
    sub_len = {t: sum(1 for j in body if s <= j.addr <= e) for t, (s, e) in subs.items()}
    loops = []
    for i in body:
        if i.op.startswith("BRA") and not in_sub(i.addr):
            t = _target(i.args)
            if t is not None and t < i.addr:
                lb = [j for j in body if t <= j.addr <= i.addr]
                loops.append({"start": t, "end": i.addr, "step": _loop_step(lb)})
    # Triton programs have no grid-stride loop (grid_loops=False): a loop without an immediate step runs once
    grid = [lp for lp in loops if lp["step"] is None] if grid_loops else []
    # The tile: the outermost grid-stride loop's body, else the whole kernel.
    if grid:
        outer = max(grid, key=lambda lp: lp["end"] - lp["start"])
        lo, hi = outer["start"], outer["end"]
    else:
        lo, hi = -1, 1 << 62
    total = 0.0
    for i in body:
        if not lo <= i.addr <= hi or in_sub(i.addr):
            continue
        w = 1.0
        for lp in loops:
            if lp["step"] is not None and lp["start"] <= i.addr <= lp["end"]:
                w *= max(classes / lp["step"], 1.0)
        total += w * (1 + (sub_len.get(_target(i.args), 0) if i.op.startswith("CALL") else 0))
    res["class_loops"] = sum(lp["step"] is not None for lp in loops)
    res["loop_steps"] = [lp["step"] for lp in loops]
    res["grid_stride_loop"] = bool(grid)
    res["instr_per_elem"] = total / (p * classes)
    return res


def demangle(names: Iterable[str]) -> Dict[str, str]:
    names = list(names)
    filt = shutil.which("c++filt") or shutil.which("cu++filt")
    if not filt or not names:
        return {n: n for n in names}
    out = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def _split_template(name: str) -> Tuple[str, List[str]]:
    """`void uda_ops::cuda::k<float, 16>(...)` -> ("k", ["float", "16"])."""
    m = re.search(r"(?:\w+::)*(\w+)<(.*?)>\(", name)
    if not m:
        m2 = re.search(r"(\w+)\(", name)
        return (m2.group(1) if m2 else name), []
    args, depth, cur = [], 0, ""
    for ch in m.group(2):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
    args.append(cur.strip())
    return m.group(1), args


def loss_op(kernel: str) -> Optional[str]:
    for op in sorted(LOSS_OPS, key=len, reverse=True):
        if kernel.startswith(op) or kernel.lstrip("_").startswith(op):
            return op
    if kernel.lstrip("_").startswith(("cosine", "clan")):
        return "cosine_discrepancy" if kernel.lstrip("_").startswith("cosine") else "clan_adversarial"
    return None


# The NCHW ("planes") kernels of a loss: named after the op with forward/fwd or backward/bwd in the name;
# rows-layout (channels_last) and finalize/reduce kernels left out.
NOT_PLANES = re.compile(r"rows|finali[sz]e|reduce|partials")


def direction(kernel: str) -> Optional[str]:
    if re.search(r"backward|bwd", kernel):
        return "bwd"
    if re.search(r"forward|fwd", kernel):
        return "fwd"
    return None


def is_staged_rows(r: dict) -> bool:
    """A CUDA planes kernel instantiated for the rows layout (bucket kStagedRows = -1, common.cuh)."""
    return r.get("backend") == "cuda" and r.get("template", "").split(", ")[-1] == "-1"


def _loss_kernels(rows: List[dict], backend: str, op: str, direction_: str, dtype: str) -> List[dict]:
    return [r for r in rows if r.get("backend") == backend and r.get("op") == op and r.get("dtype") == dtype
            and "error" not in r and direction(r["kernel"]) == direction_ and not NOT_PLANES.search(r["kernel"])]


def planes_kernels(rows: List[dict], backend: str, op: str, direction_: str, dtype: str) -> List[dict]:
    return [r for r in _loss_kernels(rows, backend, op, direction_, dtype) if not is_staged_rows(r)]


def staged_rows_kernels(rows: List[dict], op: str, direction_: str, dtype: str) -> List[dict]:
    """The CUDA kernels of a loss that run channels_last and (N, C) inputs (staged through shared memory)."""
    return [r for r in _loss_kernels(rows, "cuda", op, direction_, dtype) if is_staged_rows(r)]


def main_kernel(rows: List[dict], classes: int) -> Optional[dict]:
    """The instantiation that runs at C = classes: the smallest integer template argument (class bucket) that
    holds C (CUDA: the last template argument; Triton: the variant, ``@planes19``), else the first (CUDA's
    bucket 0, the shared-memory slab for any C). Among equals a ``true`` flag wins: CUDA self_information
    backward's kFull, the dense upstream gradient that the Triton kernel reads too."""
    def bucket(r):
        ints = [int(a) for a in re.findall(r"(?<![\d.])(\d+)(?![\d.])", r.get("template", "") + " " + r["kernel"])]
        return ints[-1] if ints else None
    def flag(r):
        return "true" not in r.get("template", "")
    fits = [r for r in rows if bucket(r) is not None and bucket(r) >= classes]
    if fits:
        return min(fits, key=lambda r: (bucket(r), flag(r)))
    return min(rows, key=flag) if rows else None  # min keeps the first of equals


def compare(old: dict, new: dict, dtypes=("fp32", "bf16")) -> str:
    """Markdown: per backend, loss, direction and dtype, the old and new main NCHW kernel side by side."""
    classes = new["info"].get("classes", 19)
    head = ["backend", "op", "dir", "dtype", "kernel old -> new", "regs", "spill B", "ld bits:count",
            "instr/elem"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for backend in ("cuda", "triton"):
        for op in LOSS_OPS:
            for d in ("fwd", "bwd"):
                for dt_ in dtypes:
                    a = main_kernel(planes_kernels(old["rows"], backend, op, d, dt_), classes)
                    b = main_kernel(planes_kernels(new["rows"], backend, op, d, dt_), classes)
                    if a is None and b is None:
                        continue

                    def cell(r, f):
                        return "-" if r is None else f(r)
                    pair = lambda f: f"{cell(a, f)} -> {cell(b, f)}"  # noqa: E731
                    out.append("| " + " | ".join([
                        backend, op, d, dt_,
                        pair(lambda r: f"{r['kernel']}<{r.get('template', '')}>" if backend == "cuda" else r["kernel"]),
                        pair(lambda r: str(r.get("regs", "?"))),
                        pair(lambda r: str(r.get("spill_stores", 0) + r.get("spill_loads", 0))),
                        pair(lambda r: widths(r["ld"])),
                        pair(lambda r: "-" if r.get("instr_per_elem") is None else f"{r['instr_per_elem']:.0f}"),
                    ]) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------------------------
def only_dtypes(source: str, dtypes: Iterable[str], workdir: str, root: str = ROOT) -> str:
    """A copy of compile_check.cu (in `workdir`) that instantiates only `dtypes` ("fp32", "bf16", ...): its
    ``UDA_INSTANTIATE*(T)`` lines for other T dropped, its relative includes made absolute. Half the
    compile time for a test that looks at fp32 and bf16 only."""
    keep = {t for t, d in CUDA_DTYPE.items() if d in set(dtypes)}
    text = open(os.path.join(root, source)).read()
    base = os.path.dirname(os.path.join(root, source))
    text = re.sub(r'#include "(\.\./[^"]+)"',
                  lambda m: f'#include "{os.path.normpath(os.path.join(base, m.group(1)))}"', text)
    text = "\n".join(line for line in text.splitlines()
                     if not (re.match(r"UDA_INSTANTIATE\w*\((\w+)\)\s*$", line)
                             and re.match(r"UDA_INSTANTIATE\w*\((\w+)\)", line).group(1) not in keep))
    path = os.path.join(workdir, "kernels_subset.cu")
    with open(path, "w") as f:
        f.write(text + "\n")
    return path


def compile_cuda(workdir: str, arch: str = "sm_90", source: str = COMPILE_CHECK,
                 dtypes: Optional[Iterable[str]] = None, root: str = ROOT) -> Tuple[str, str]:
    """(ptxas -v text, cuobjdump -sass text) of `source` compiled to a cubin for `arch` (only `dtypes`'
    instantiations when given)."""
    nvcc, cuobjdump = find_tool("nvcc"), find_tool("cuobjdump")
    if not nvcc or not cuobjdump:
        raise RuntimeError(f"kernel_report: missing {tools_missing()}")
    if dtypes is not None:
        source = only_dtypes(source, dtypes, workdir, root)
    cubin = os.path.join(workdir, f"kernels_{arch}.cubin")
    cmd = [nvcc, *NVCC_FLAGS, f"-arch={arch}", "-cubin", *TORCH_DEFINES, "-Xptxas", "-v", source, "-o", cubin]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, check=True).stdout
    return proc.stdout + proc.stderr, sass


def compile_ptx(workdir: str, arch: str = "sm_90", dtypes: Optional[Iterable[str]] = None,
                root: str = ROOT) -> str:
    """The PTX of compile_check.cu (only `dtypes`' instantiations when given): no ptxas, about half the time of
    a cubin. Load widths are decided at this level (ptxas keeps an ld.global.v4 one 128-bit load)."""
    nvcc = find_tool("nvcc")
    if not nvcc:
        raise RuntimeError("kernel_report: nvcc not found")
    source = only_dtypes(COMPILE_CHECK, dtypes, workdir, root) if dtypes is not None else COMPILE_CHECK
    out = os.path.join(workdir, f"kernels_{arch}.ptx")
    cmd = [nvcc, *NVCC_FLAGS, f"-arch={arch}", "-ptx", *TORCH_DEFINES, source, "-o", out]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    with open(out) as f:
        return f.read()


_PTX_BITS = {"8": 8, "16": 16, "32": 32, "64": 64}


def ptx_rows(ptx: str) -> List[dict]:
    """Per kernel entry of a PTX file: kernel, template, dtype, op and global load/store widths in bits
    (``ld.global.nc.v4.u32`` -> 128, ``ld.global.nc.u16`` -> 16)."""
    parts = re.split(r"\.visible \.entry (\w+)\(", ptx)[1:]
    names = demangle(parts[0::2])
    rows = []
    for mangled, body in zip(parts[0::2], parts[1::2]):
        widths_: Dict[str, Dict[int, int]] = {"ld": {}, "st": {}}
        for kind, vec, bits in re.findall(r"\b(ld|st)\.global(?:\.[\w:]+)*?(?:\.v(\d))?\.[a-z]+(\d+)\s",
                                          body):
            w = int(vec or 1) * _PTX_BITS.get(bits, 32)
            widths_[kind][w] = widths_[kind].get(w, 0) + 1
        for nbytes in re.findall(r"\bcp\.async\.c[ag]\.shared(?:::\w+)?\.global(?:\.[\w:]+)*\s[^;]*,\s*(\d+)\s*;",
                                 body):  # cp.async: a global load of 4, 8 or 16 bytes
            w = 8 * int(nbytes)
            widths_["ld"][w] = widths_["ld"].get(w, 0) + 1
        bulk = len(re.findall(r"\bcp\.async\.bulk", body))
        kernel, targs = _split_template(names[mangled])
        dtype = CUDA_DTYPE.get(targs[0], targs[0]) if targs else "-"
        rows.append({"backend": "cuda", "kernel": kernel, "template": ", ".join(targs), "dtype": dtype,
                     "op": loss_op(kernel), "bulk": bulk, **widths_})
    return rows


def cuda_rows(ptxas: str, sass: str, classes: int = 19) -> List[dict]:
    res = parse_ptxas(ptxas)
    funcs = split_sass(sass)
    names = demangle(funcs)
    rows = []
    for mangled, instrs in funcs.items():
        kernel, targs = _split_template(names[mangled])
        dtype = CUDA_DTYPE.get(targs[0], targs[0]) if targs else "-"
        op = loss_op(kernel)
        pix = next((v for k, v in PIXELS_PER_THREAD.items() if re.search(k, kernel)), None)
        a = analyse(instrs, ELEM_BITS.get(dtype, 32), classes, pix)
        row = {"backend": "cuda", "kernel": kernel, "template": ", ".join(targs), "dtype": dtype, "op": op}
        # the model knows no staged rows (block copies, shared memory) and no warp per pixel (classes over lanes)
        if op is None or is_staged_rows(row) or "WarpLanes" in row["template"]:
            a["instr_per_elem"] = None
        rows.append({**row, **res.get(mangled, {}), **a})
    return sorted(rows, key=lambda r: (r["kernel"], r["dtype"], r["template"]))


# ---------------------------------------------------------------------------------------------------
# Triton
# ---------------------------------------------------------------------------------------------------
def triton_rows(dtypes: Iterable[str] = ("fp32", "bf16"), arch: int = 90, classes: int = 19,
                workdir: Optional[str] = None, root: str = ROOT) -> List[dict]:
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("kernel_report: unset TRITON_INTERPRET (the interpreter compiles nothing)")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sys.path.insert(0, root)
    from uda_ops.triton import aot_check

    if not os.path.realpath(aot_check.__file__).startswith(os.path.realpath(root)):
        raise RuntimeError(f"kernel_report: uda_ops.triton came from {aot_check.__file__}, not {root}")

    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    ptxas, cuobjdump = get_ptxas(arch).path, find_tool("cuobjdump")  # the ptxas Triton itself runs
    workdir = workdir or tempfile.mkdtemp(prefix="kernel_report_")
    target = GPUTarget("cuda", arch, 32)
    rows = []
    for dt_ in dtypes:
        for spec in aot_check._specs(dt_):
            name, fn, sig, const = spec[:4]
            warps = getattr(aot_check, "num_warps", None)
            warps = warps(name, const) if callable(warps) else (8 if const.get("BLOCK_U", 0) >= 2048 else 4)
            if hasattr(aot_check, "_attrs"):  # the Triton backend's own choice of 16-divisible arguments
                attrs = aot_check._attrs(fn, sig)
            else:
                attrs = {(fn.arg_names.index(arg),): [["tt.divisibility", 16]] for arg, ty in sig.items()
                         if ty.startswith("*") or (arg in TRITON_DIVISIBLE and ty.startswith("i"))}
            try:
                ck = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs), target=target,
                                    options={"num_warps": warps})
            except Exception as exc:  # report, keep going
                rows.append({"backend": "triton", "kernel": name, "dtype": dt_, "error": str(exc)[:500]})
                continue
            stem = os.path.join(workdir, re.sub(r"[^A-Za-z0-9_]+", "_", f"{name}_{dt_}"))
            with open(stem + ".ptx", "w") as f:
                f.write(ck.asm["ptx"])
            with open(stem + ".cubin", "wb") as f:
                f.write(ck.asm["cubin"])
            pv = subprocess.run([ptxas, "-lineinfo", "-v", "--regAllocOptLevel=2",
                                 f"--gpu-name={sm_arch_from_capability(arch)}", stem + ".ptx", "-o", stem + ".o"],
                                capture_output=True, text=True)
            res = next(iter(parse_ptxas(pv.stdout + pv.stderr).values()), {})
            sass = subprocess.run([cuobjdump, "-sass", stem + ".cubin"], capture_output=True, text=True).stdout
            instrs = next(iter(split_sass(sass).values()), [])
            block = const.get("BP", const.get("BLOCK_P", const.get("BLOCK")))
            # pixels per thread (a fraction where a [CB x BP] tile spreads its classes over the threads too)
            pix = block / (32 * warps) if isinstance(block, int) and not isinstance(block, bool) else None
            op = loss_op(name)
            a = analyse(instrs, ELEM_BITS[dt_], classes, pix, grid_loops=False)
            if op is None:
                a["instr_per_elem"] = None
            ptx = ck.asm["ptx"]
            a["ptx_ld"] = {w: len(re.findall(rf"ld\.global[.\w]*\.{w}\b", ptx)) for w in ("v4", "v2")}
            rows.append({"backend": "triton", "kernel": name, "template": f"num_warps={warps}", "dtype": dt_,
                         "op": op, **res, **a})
    return rows


# ---------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------
def widths(d: Dict[int, int]) -> str:
    return " ".join(f"{w}:{n}" for w, n in sorted(d.items(), key=lambda kv: -int(kv[0]))) or "-"


def markdown(rows: List[dict], dtypes: Iterable[str] = ("fp32", "bf16")) -> str:
    head = ["backend", "kernel", "template", "dtype", "regs", "stack", "spill", "ld bits:count", "st bits:count",
            "local", "sass", "instr/elem"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("dtype") not in dtypes:
            continue
        if "error" in r:
            out.append(f"| {r['backend']} | {r['kernel']} | | {r['dtype']} | compile error: {r['error'][:80]} |")
            continue
        ipe = r.get("instr_per_elem")
        extra = f" (ldgsts:{r['ldgsts']})" if r.get("ldgsts") else ""
        extra += f" +bulk:{r['bulk']}" if r.get("bulk") else ""
        out.append("| " + " | ".join([
            r["backend"], r["kernel"], r.get("template", ""), r["dtype"], str(r.get("regs", "?")),
            str(r.get("stack", "?")), str(r.get("spill_stores", 0) + r.get("spill_loads", 0)),
            widths(r["ld"]) + extra, widths(r["st"]), str(r["local"]), str(r["sass"]),
            "-" if ipe is None else f"{ipe:.0f}"]) + " |")
    return "\n".join(out)


def write_md(path: str, report: dict, baseline: Optional[dict] = None) -> str:
    """The report's markdown (with the comparison against `baseline` first, if given); returns the kernel table.
    ``python -c "...write_md(...)"`` rewrites the .md of a saved JSON."""
    info, rows = report["info"], report["rows"]
    table = markdown(rows)
    head = ""
    if baseline:
        head = (f"## Against {baseline['info']['label']}: the main NCHW kernel per loss, direction and dtype at "
                f"C = {info['classes']}\n\n{compare(baseline, report)}\n\n## Every kernel\n\n")
    with open(path, "w") as f:
        f.write(f"# Kernel report {info['label']}\n\n{info['nvcc']}, triton {info['triton']}, {info['arch']}, "
                f"instr/elem at C = {info['classes']} (see benchmarks/kernel_report.py for the model), {info['date']}."
                f"\nfp32 and bf16 rows; the JSON also has fp16 and fp64 (CUDA).\n\n{head}{table}\n")
    return table


def rows_table(reports: List[dict], dtypes=("fp32", "bf16")) -> str:
    """Markdown: the Triton rows-layout loss kernels (``@rows19``) of several reports side by side (e.g. staged vs
    in place, Triton 3.6 vs 3.9): per report, registers, spilled bytes, global load and store widths and
    instructions per element."""
    def key(r):
        return r["kernel"], r["dtype"]
    cols = [{key(r): r for r in rep["rows"] if r.get("backend") == "triton" and "@rows" in r["kernel"]}
            for rep in reports]
    names = [f"{rep['info']['label']} (triton {rep['info'].get('triton')})" for rep in reports]
    out = ["| kernel | dtype | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(reports),
           "| | | " + " | ".join("regs / spill B / ld / st / instr/elem" for _ in reports) + " |"]
    for k in sorted({k for c in cols for k in c if k[1] in dtypes}, key=lambda k: (k[0].split("@")[0], k[1])):
        cells = []
        for c in cols:
            r = c.get(k)
            if r is None or "error" in r:
                cells.append("-" if r is None else "compile error")
                continue
            ipe = r.get("instr_per_elem")
            cells.append(f"{r.get('regs', '?')} / {r.get('spill_stores', 0) + r.get('spill_loads', 0)} / "
                         f"{widths(r['ld'])} / {widths(r['st'])} / {'-' if ipe is None else f'{ipe:.0f}'}")
        out.append(f"| {k[0]} | {k[1]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def git_label(prefix: str, rev: str = "HEAD") -> str:
    try:
        h = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        h = "nogit"
    return f"{prefix}-{h}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", help="name of this report (default: kernels-<short git hash>)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="folder for the .json and .md")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--classes", type=int, default=19, help="C for instructions per element (default 19)")
    ap.add_argument("--no-triton", action="store_true")
    ap.add_argument("--no-cuda", action="store_true", help="Triton kernels only (e.g. under another Triton)")
    ap.add_argument("--rows-table", nargs="+", metavar="JSON",
                    help="print the Triton rows-layout kernels of these reports side by side; no compile")
    ap.add_argument("--triton-dtypes", default="fp32,bf16")
    ap.add_argument("--print", action="store_true", help="print the markdown table")
    ap.add_argument("--rev", help="report the kernels of this git revision (csrc/, tests/cuda, uda_ops/ of that "
                                  "commit, not the working tree); the default label then names it")
    ap.add_argument("--compare", nargs=2, metavar=("OLD_JSON", "NEW_JSON"),
                    help="print (and with --out-md write) old vs new main NCHW kernels of two reports; no compile")
    ap.add_argument("--out-md", help="with --compare: write the comparison here")
    ap.add_argument("--baseline", help="an earlier report's JSON: its comparison with this one heads the .md")
    args = ap.parse_args(argv)
    if args.compare:
        old, new = (json.load(open(p)) for p in args.compare)
        text = (f"Old {old['info']['label']} vs new {new['info']['label']}: main NCHW kernel per loss, direction "
                f"and dtype at C = {new['info'].get('classes')} (benchmarks/kernel_report.py).\n\n"
                + compare(old, new) + "\n")
        print(text)
        if args.out_md:
            with open(args.out_md, "w") as f:
                f.write(text)
        return 0
    if args.rows_table:
        print(rows_table([json.load(open(p)) for p in args.rows_table]))
        return 0
    missing = tools_missing(triton=not args.no_triton)
    if missing:
        print(f"kernel_report: missing tools {missing}; nothing written", file=sys.stderr)
        return 2
    label = args.label or git_label("kernels", args.rev or "HEAD")
    work = tempfile.mkdtemp(prefix="kernel_report_")
    root = ROOT
    try:
        if args.rev:
            root = os.path.join(work, "src")
            os.makedirs(root)
            archive = subprocess.run(["git", "archive", args.rev, "csrc", "tests/cuda", "uda_ops"], cwd=ROOT,
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", root], input=archive, check=True)
        rows = []
        if not args.no_cuda:
            ptxas, sass = compile_cuda(work, args.arch, root=root)
            rows = cuda_rows(ptxas, sass, args.classes)
        if not args.no_triton:
            rows += triton_rows(args.triton_dtypes.split(","), int(args.arch.split("_")[1]), args.classes, work,
                                root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rev = "working tree"
    if args.rev:  # the commit itself, not a name like HEAD that moves
        rev = subprocess.run(["git", "rev-parse", args.rev], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
    info = {"label": label, "rev": rev, "arch": args.arch, "classes": args.classes,
            "env": {k: v for k, v in os.environ.items() if k.startswith("UDA_OPS_TRITON_")},
            "date": dt.date.today().isoformat(),
            "nvcc": subprocess.run([find_tool("nvcc"), "--version"], capture_output=True,
                                   text=True).stdout.strip().splitlines()[-1],
            "nvcc_flags": NVCC_FLAGS + TORCH_DEFINES}
    try:
        from importlib.metadata import version
        info["triton"] = version("triton")
    except Exception:  # noqa: BLE001
        info["triton"] = None
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"kernel-report-{label}")
    with open(base + ".json", "w") as f:
        json.dump({"info": info, "rows": rows}, f, indent=1, default=str)
    table = write_md(base + ".md", {"info": info, "rows": rows}, json.load(open(args.baseline)) if args.baseline else None)
    if args.print:
        print(table)
    print(f"wrote {os.path.relpath(base, ROOT)}.json and .md ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
