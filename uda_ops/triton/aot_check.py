"""Compile every Triton kernel of uda_ops ahead of time for a CUDA target, without a GPU (Triton's own
ptxas): catches what the CPU interpreter cannot see (type errors of the real code generator, bfloat16,
register pressure). Usage: ``TRITON_INTERPRET=0 python -m uda_ops.triton.aot_check [--arch 90]
[--dtypes fp32,fp16,bf16,fp64]``; prints one line per kernel and exits non-zero on any failure."""
from __future__ import annotations

import argparse
import os
import sys


def _specs(dt: str):
    """(name, kernel, signature, constexprs, options) for every kernel launch configuration in dtype `dt`."""
    from . import adversarial_dropout_mask as M
    from . import clan_adversarial, cosine_discrepancy, entropy, kl_div, self_information, sym_kl

    f64 = dt == "fp64"
    T, A = f"*{dt}", "*fp64" if f64 else "*fp32"
    pix = {"P": "i32", "C": "i32", "inner": "i32"}
    blk = {"F64": f64, "BLOCK": 1024}
    ce = {k: "constexpr" for k in ("F64", "BLOCK")}
    g = {"g_ptr": A, "g_stride": "i32"}
    clan = {"target": "fp32", "lam": "fp32", "eps": "fp32"}
    out = [
        ("sym_kl_fwd", sym_kl._sym_kl_fwd, {"a_ptr": T, "b_ptr": T, "out_ptr": A, **pix, **ce}, blk),
        ("kl_div_fwd", kl_div._kl_div_fwd, {"x_ptr": T, "y_ptr": T, "out_ptr": A, **pix, **ce}, blk),
        ("kl_div_bwd", kl_div._kl_div_bwd, {"x_ptr": T, "y_ptr": T, **g, "gx_ptr": T, "gy_ptr": T, **pix,
                                            "NEED_TARGET": "constexpr", **ce}, {"NEED_TARGET": True, **blk}),
        ("entropy_fwd", entropy._entropy_fwd, {"z_ptr": T, "out_ptr": A, **pix, "neg_inv_log_c": "fp32", **ce}, blk),
        ("entropy_bwd", entropy._entropy_bwd, {"z_ptr": T, **g, "gz_ptr": T, **pix, "neg_inv_log_c": "fp32", **ce},
         blk),
        ("self_information_fwd", self_information._self_information_fwd,
         {"z_ptr": T, "out_ptr": T, **pix, "neg_inv_log_c": "fp32", **ce}, blk),
        ("self_information_bwd", self_information._self_information_bwd,
         {"z_ptr": T, "g_ptr": T, "g_so": "i32", "g_sc": "i32", "g_si": "i32", "gz_ptr": T, **pix, "neg_inv_log_c": "fp32", **ce}, blk),
        ("cosine_fwd", cosine_discrepancy._cosine_fwd, {"z1_ptr": T, "z2_ptr": T, "out_ptr": A, **pix, **ce}, blk),
        ("cosine_bwd", cosine_discrepancy._cosine_bwd,
         {"z1_ptr": T, "z2_ptr": T, **g, "g1_ptr": T, "g2_ptr": T, **pix, **ce}, blk),
        ("clan_fwd", clan_adversarial._clan_fwd, {"d_ptr": A, "z1_ptr": T, "z2_ptr": T, "out_ptr": A, **pix, **clan,
                                                  **ce}, blk),
        ("clan_bwd", clan_adversarial._clan_bwd,
         {"d_ptr": A, "z1_ptr": T, "z2_ptr": T, **g, "gd_ptr": A, "g1_ptr": T, "g2_ptr": T, **pix, **clan,
          "NEED_LOGITS": "constexpr", **ce}, {"NEED_LOGITS": True, **blk}),
        ("channel_impact", M._channel_impact,
         {"g_ptr": T, "h_ptr": T, "out_ptr": A, "C": "i32", "HW": "i32", "c_stride": "i32", "p_stride": "i32",
          "F64": "constexpr", "BLOCK_C": "constexpr", "BLOCK_P": "constexpr"},
         {"F64": f64, "BLOCK_C": 16, "BLOCK_P": 128}),
    ]
    for detach in (False, True):
        out.append((f"sym_kl_bwd[detach={detach}]", sym_kl._sym_kl_bwd,
                    {"a_ptr": T, "b_ptr": T, **g, "ga_ptr": T, "gb_ptr": T, **pix, "DETACH": "constexpr", **ce},
                    {"DETACH": detach, **blk}))
    for one in (True, False):
        for m0 in (True, False):
            out.append((f"search_rows[one_chunk={one},base={m0}]", M._search_rows,
                        {"j_ptr": A, "m_ptr": A, "out_ptr": T, "U": "i32", "L": "i32",
                         **{k: "constexpr" for k in ("HAS_M0", "RESCALE", "F64", "ONE_CHUNK", "BLOCK_U")}},
                        {"HAS_M0": m0, "RESCALE": True, "F64": f64, "ONE_CHUNK": one,
                         "BLOCK_U": M.ROW_BLOCK if one else 1024}))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--dtypes", default="fp32,fp16,bf16,fp64")
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
        for name, fn, sig, const, in _specs(dt):
            warps = 8 if const.get("BLOCK_U", 0) >= 2048 else 4
            try:
                triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const), target=target,
                               options={"num_warps": warps})
                print(f"ok   {dt:5s} {name}")
            except Exception as exc:  # report every failure, then exit non-zero
                failed += 1
                print(f"FAIL {dt:5s} {name}: {type(exc).__name__}: {str(exc)[:2000]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
