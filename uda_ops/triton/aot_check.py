"""Compile every Triton kernel of uda_ops ahead of time for a CUDA target, without a GPU (Triton's own
ptxas): catches what the CPU interpreter cannot see (type errors of the real code generator, bfloat16,
register pressure). Usage: ``TRITON_INTERPRET=0 python -m uda_ops.triton.aot_check [--arch 90]
[--dtypes fp32,fp16,bf16,fp64] [--reduce] [--only NAME]``; prints one line per kernel and exits non-zero on any
failure. The forward loss kernels compile as the map path (REDUCE = False); --reduce adds their fused "mean"/"sum"
variants (REDUCE = True, named ``<kernel>[reduce]@<variant>``) and the partials' finishing kernel."""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile


# Arguments assumed multiples of 16 (elements) in the compiled variants, as Triton's runtime specialisation
# finds them for realistic shapes (H*W, C*H*W, aligned allocations): every pointer and these integers.
ALIGNED_INTS = ("Q", "o_stride", "c_stride", "g_o", "g_c", "inner")

# Loss kernel variants: the layout and class bucket of the tile table (uda_ops.triton._common.tile_config)
# at a (2, C, 512, 1024) input: planes (NCHW) with C = 19 in one tile, planes with C = 150 in chunks, and rows
# (channels_last) with C = 19. A stride equal to 1 is a compile-time constant, as Triton specialises it.
VARIANTS = {"planes19": (2, 19, 512 * 1024), "planes150": (2, 150, 512 * 1024), "rows19": (2 * 512 * 1024, 19, 1)}


def _attrs(fn, sig):
    return {(i,): [["tt.divisibility", 16]] for i, (k, v) in enumerate(sig.items())
            if (v.startswith("*") or k in ALIGNED_INTS) and v != "constexpr"}


def _tile(variant: str, inputs: int, f64: bool):
    """(signature, constexprs) of the tile arguments Q, NQ, C, q_stride, c_stride, o_stride, CB, BP, ONE."""
    from . import _common as K

    outer, C, inner = VARIANTS[variant]
    import torch
    T = K.tile_config(K.Layout(outer, C, inner, inner == 1), torch.float64 if f64 else torch.float32, inputs)
    sig = {"Q": "i32", "NQ": "i32", "C": "i32", "q_stride": "i32", "c_stride": "i32", "o_stride": "i32"}
    const = {k: T.meta[k] for k in ("CB", "CB2", "BP", "ONE", "FULL")}
    const["SC"] = T.meta.get("SC", 0)  # staged rows: C at compile time
    unit = "c_stride" if inner == 1 else "q_stride"
    sig[unit] = "constexpr"
    const[unit] = 1
    return sig, const


def _specs(dt: str, variants=tuple(VARIANTS), reduce: bool = False):
    """(name, kernel, signature, constexprs) for every kernel launch configuration in dtype `dt`; `reduce`: also
    the forward loss kernels with the fused reduction (REDUCE) and the partials' finishing kernel."""
    from . import _common as K
    from . import adversarial_dropout_mask as M
    from . import clan_adversarial, cosine_discrepancy, entropy, kl_div, self_information, sym_kl

    f64 = dt == "fp64"
    exact = dt in ("fp32", "fp64")  # K.cosine_exact
    T, A = f"*{dt}", "*fp64" if f64 else "*fp32"
    ce = {k: "constexpr" for k in ("F64", "CB", "CB2", "BP", "ONE", "FULL", "SC")}
    g = {"g_ptr": A, "g_stride": "i32"}
    clan = {k: "fp32" for k in ("t_hi", "t_lo", "lam_hi", "lam_lo", "eps_hi", "eps_lo")}  # K.f64_args
    nlc = {"nlc_hi": "fp32", "nlc_lo": "fp32"}
    # (name, kernel, pointer args, scalar args after the tile args, extra constexprs, tiles read at once)
    losses = [
        ("sym_kl_fwd", sym_kl._sym_kl_fwd, {"a_ptr": T, "b_ptr": T, "out_ptr": A}, {}, {}, 2),
        ("sym_kl_bwd[detach=False]", sym_kl._sym_kl_bwd, {"a_ptr": T, "b_ptr": T, **g, "ga_ptr": T, "gb_ptr": T},
         {}, {"DETACH": False}, 2),
        ("sym_kl_bwd[detach=True]", sym_kl._sym_kl_bwd, {"a_ptr": T, "b_ptr": T, **g, "ga_ptr": T, "gb_ptr": T},
         {}, {"DETACH": True}, 2),
        ("kl_div_fwd", kl_div._kl_div_fwd, {"x_ptr": T, "y_ptr": T, "out_ptr": A}, {}, {}, 2),
        ("kl_div_bwd", kl_div._kl_div_bwd, {"x_ptr": T, "y_ptr": T, **g, "gx_ptr": T, "gy_ptr": T}, {},
         {"NEED_TARGET": True}, 2),
        ("entropy_fwd", entropy._entropy_fwd, {"z_ptr": T, "out_ptr": A}, nlc, {}, 1),
        ("entropy_bwd", entropy._entropy_bwd, {"z_ptr": T, **g, "gz_ptr": T}, nlc, {}, 1),
        ("self_information_fwd", self_information._self_information_fwd, {"z_ptr": T, "out_ptr": T}, nlc, {}, 1),
        ("self_information_bwd", self_information._self_information_bwd,
         {"z_ptr": T, "g_ptr": T, "g_o": "i32", "g_q": "i32", "g_c": "i32", "gz_ptr": T}, nlc, {}, 2),
        ("cosine_fwd", cosine_discrepancy._cosine_fwd, {"z1_ptr": T, "z2_ptr": T, "out_ptr": A}, {}, {}, 2),
        ("cosine_bwd", cosine_discrepancy._cosine_bwd, {"z1_ptr": T, "z2_ptr": T, **g, "g1_ptr": T, "g2_ptr": T},
         {}, {"EXACT": exact}, 2),
        # d in the logits' dtype, as a discriminator under autocast gives it (read as it is); its gradient float32
        ("clan_fwd", clan_adversarial._clan_fwd, {"d_ptr": T, "z1_ptr": T, "z2_ptr": T, "out_ptr": A}, clan, {}, 2),
        ("clan_bwd", clan_adversarial._clan_bwd,
         {"d_ptr": T, "z1_ptr": T, "z2_ptr": T, **g, "gd_ptr": A, "g1_ptr": T, "g2_ptr": T}, clan,
         {"NEED_LOGITS": True, "EXACT": exact}, 2),
    ]
    out = []
    for variant in variants:
        for name, fn, ptrs, scalars, extra, inputs in losses:
            tsig, tconst = _tile(variant, inputs, f64)
            sig = {**ptrs, **tsig, **scalars, **{k: "constexpr" for k in extra}, **ce}
            if "g_q" in sig:  # a dense upstream gradient: unit pixel (planes) or class (rows) stride
                unit = "g_c" if variant.startswith("rows") else "g_q"
                sig[unit] = "constexpr"
                sig["G_ROWS"] = "constexpr"  # rows: dense in z's layout, staged like z
                extra = {**extra, unit: 1, "G_ROWS": variant.startswith("rows")}
            reduces = [False]
            if "REDUCE" in fn.arg_names:  # a forward loss kernel: the map path, and with --reduce the fused one
                sig["REDUCE"] = "constexpr"
                reduces += [True] if reduce else []
            sig = {k: sig[k] for k in fn.arg_names}  # the kernel's argument order
            for red in reduces:
                const = {**tconst, **extra, "F64": f64, **({"REDUCE": red} if "REDUCE" in sig else {})}
                out.append((f"{name}{'[reduce]' if red else ''}@{variant}", fn, sig, const))
    if reduce:
        out.append(("reduce_partials[mean]", K._reduce_partials,
                    {"part_ptr": A, "res_ptr": A, "n": "i32", "pixels": "i64", "MEAN": "constexpr",
                     "BLOCK": "constexpr"}, {"MEAN": True, "BLOCK": K.REDUCE_BLOCK}))
    out.append(("channel_impact", M._channel_impact,
                {"g_ptr": T, "h_ptr": T, "out_ptr": A, "C": "i32", "HW": "i32", "c_stride": "i32", "p_stride": "i32",
                 "F64": "constexpr", "BLOCK_C": "constexpr", "BLOCK_P": "constexpr"},
                {"F64": f64, "BLOCK_C": 16, "BLOCK_P": 128}))
    for one in (True, False):
        for m0 in (True, False):
            out.append((f"search_rows[one_chunk={one},base={m0}]", M._search_rows,
                        {"j_ptr": A, "m_ptr": A, "out_ptr": T, "U": "i32", "L": "i32",
                         **{k: "constexpr" for k in ("HAS_M0", "RESCALE", "F64", "ONE_CHUNK", "BLOCK_U")}},
                        {"HAS_M0": m0, "RESCALE": True, "F64": f64, "ONE_CHUNK": one,
                         "BLOCK_U": M.ROW_BLOCK if one else 1024}))
    return out


def num_warps(name: str, const: dict) -> int:
    """The launch's warps, as the ops choose them (uda_ops.triton._common.tile_warps for the loss kernels)."""
    from . import _common as K

    if "FULL" in const:
        return K.tile_warps(const["FULL"])
    return 8 if const.get("BLOCK_U", 0) >= 2048 else K.NUM_WARPS


def ptx_summary(ptx: str, arch: int) -> str:
    """Registers and spills (Triton's ptxas -v) and the global load/store widths of one kernel's PTX."""
    loads = collections.Counter(re.findall(r"\bld\.global(?:\.\w+)*?\.((?:v[248]\.)?[bfu]\d+)", ptx))
    stores = collections.Counter(re.findall(r"\bst\.global(?:\.\w+)*?\.((?:v[248]\.)?[bfu]\d+)", ptx))
    from triton.backends.nvidia.compiler import get_ptxas
    regs = spills = "?"
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "k.ptx")
        with open(f, "w") as fh:
            fh.write(ptx)
        r = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name=sm_{arch}a", "-o", os.devnull, f],
                           capture_output=True, text=True)
        m = re.search(r"Used (\d+) registers", r.stderr)
        regs = m.group(1) if m else "?"
        m = re.search(r"(\d+) bytes spill stores", r.stderr)
        spills = m.group(1) if m else "?"
    fmt = lambda c: ",".join(f"{k}x{v}" for k, v in sorted(c.items())) or "-"  # noqa: E731
    ftz = len(re.findall(r"\bex2\.approx\.ftz\.f32\b", ptx))  # K.exp's one-MUFU exponential
    return f"regs={regs} spill_stores={spills} ld.global[{fmt(loads)}] st.global[{fmt(stores)}] ex2.ftz={ftz}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--dtypes", default="fp32,fp16,bf16,fp64")
    ap.add_argument("--report", action="store_true", help="print registers, spills and PTX load/store widths")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="loss kernel variants: " + ", ".join(VARIANTS))
    ap.add_argument("--reduce", action="store_true",
                    help="also the forward loss kernels' fused mean/sum variants and the partials' finishing kernel")
    ap.add_argument("--only", default="", help="only the kernels whose name contains this string")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("aot_check: unset TRITON_INTERPRET (the interpreter compiles nothing)", file=sys.stderr)
        return 2
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", args.arch, 32)
    failed = 0
    for dt in args.dtypes.split(","):
        for name, fn, sig, const, in _specs(dt, tuple(args.variants.split(",")), args.reduce):
            if args.only not in name:
                continue
            warps = num_warps(name, const)
            try:
                k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const, attrs=_attrs(fn, sig)),
                                   target=target, options={"num_warps": warps})
                print(f"ok   {dt:5s} {name}" + (f"  {ptx_summary(k.asm['ptx'], args.arch)}" if args.report else ""))
            except Exception as exc:  # report every failure, then exit non-zero
                failed += 1
                print(f"FAIL {dt:5s} {name}: {type(exc).__name__}: {str(exc)[:2000]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
