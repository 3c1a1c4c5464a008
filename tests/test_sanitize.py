"""`make sanitize` must be able to fail: the extension it tests is the sanitized build, and the runtime set-up
it uses (LD_PRELOAD of libasan and libstdc++, the options) reports an out-of-bounds write and a signed
overflow in a compiled library and ends the process with an error."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

BUGS = r"""
#include <stdlib.h>
extern "C" int heap_overflow(int n) { int *a = (int *)malloc(n * sizeof(int)); a[n] = 1; int r = a[0]; free(a); return r; }
extern "C" int signed_overflow(int x) { return x + 0x7fffffff; }
"""


def _runtime(name):
    out = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return out if os.path.isabs(out) else None


@pytest.mark.skipif(not os.environ.get("UDA_OPS_EXTENSION"), reason="only under `make sanitize`")
def test_the_sanitized_extension_is_loaded():
    from uda_ops import _ops
    assert _ops._C is not None and os.path.samefile(_ops._C.__file__, os.environ["UDA_OPS_EXTENSION"])
    with open("/proc/self/maps") as f:
        assert "libasan" in f.read()


@pytest.mark.skipif(shutil.which("g++") is None or _runtime("libasan.so") is None, reason="needs g++ with libasan")
@pytest.mark.parametrize("call, report", [("heap_overflow(4)", "heap-buffer-overflow"),
                                          ("signed_overflow(5)", "runtime error: signed integer overflow")])
def test_the_setup_reports_errors(tmp_path, call, report):
    (tmp_path / "bugs.cpp").write_text(BUGS)
    lib = tmp_path / "libbugs.so"
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    subprocess.run(["g++", "-shared", "-fPIC", "-O1", *flags, str(tmp_path / "bugs.cpp"), "-o", str(lib)], check=True)
    env = dict(os.environ, LD_PRELOAD=f"{_runtime('libasan.so')} {_runtime('libstdc++.so')}",
               ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    code = textwrap.dedent(f"""
        import ctypes
        lib = ctypes.CDLL({str(lib)!r})
        print("called", lib.{call})
    """)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and report in p.stderr, p.stderr[-2000:]
