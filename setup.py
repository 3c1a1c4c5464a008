"""Build of uda_ops._C: a CppExtension on CPU-only torch, a CUDAExtension where torch has CUDA and nvcc exists.

The choice is made from the installed torch (``torch.version.cuda``) and the CUDA toolkit (CUDA_HOME), never
from whether a GPU is present, so a CUDA build can be made on a machine without one. Overrides:

    UDA_OPS_CPU_ONLY=1     build the CPU extension even where CUDA is available
    UDA_OPS_FORCE_CUDA=1   build the CUDA extension (fails clearly if torch or nvcc lacks CUDA)
    UDA_OPS_NO_EXTENSION=1 build nothing: uda_ops runs every op through its eager PyTorch path
    TORCH_CUDA_ARCH_LIST   CUDA architectures (default below: Volta (Turing from CUDA 13) to Hopper, plus PTX)
    MAX_JOBS               parallel compile jobs (ninja)
    CUDA_HOME              the toolkit; when unset it is found from the `nvcc` on PATH (find_cuda_home)
"""
import glob
import os
import re
import shutil
import subprocess

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "7.0;7.5;8.0;8.6;8.9;9.0+PTX"
DEFAULT_CUDA_ARCHS_13 = "7.5;8.0;8.6;8.9;9.0+PTX"  # CUDA 13 dropped Volta (sm_70)
# No --use_fast_math: it would flush denormal probabilities to zero (-ftz), make division and sqrt
# approximate, and swap expf/logf for __expf/__logf, whose absolute error near log(1) and for large
# arguments breaks the fp32 tolerances and SPEC section 6 (exact p log p -> 0, NaN never hidden). The
# kernels are memory-bound, so the accurate libm calls cost no measurable time.
NVCC_FLAGS = ["-O3", "-lineinfo"]


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def has_cudart(root):
    """Whether ``root`` looks like a CUDA toolkit torch can link against (libcudart where it looks)."""
    return any(glob.glob(os.path.join(root, lib, "libcudart.so*")) for lib in ("lib64", "lib"))


def _nvcc_top(nvcc, timeout=30):
    """The toolkit root nvcc itself reports: `nvcc -v --dryrun` prints `#$ TOP=<root>/bin/..` (to stderr),
    whatever wrapper scripts stand in front of it."""
    try:
        out = subprocess.run([nvcc, "-v", "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^#\$ TOP=(.+)$", out, re.MULTILINE)
    return os.path.normpath(m.group(1).strip()) if m else None


def find_cuda_home(environ=os.environ):
    """The CUDA toolkit root to build with when CUDA_HOME/CUDA_PATH is unset, or None to leave torch's guess.

    torch takes the parent of the folder of the ``nvcc`` on PATH; where that ``nvcc`` is a wrapper outside the
    toolkit (``/usr/local/bin/nvcc`` running ``exec /usr/local/cuda-13.0/bin/nvcc``) that guess holds no
    libcudart and the link fails with ``cannot find -lcudart``. Tried in order, the first holding libcudart
    wins: torch's guess, the same through symlinks, the ``TOP`` that nvcc reports for itself."""
    if environ.get("CUDA_HOME") or environ.get("CUDA_PATH"):
        return None
    nvcc = shutil.which("nvcc", path=environ.get("PATH", ""))
    if nvcc is None:
        return None
    for guess in (lambda: os.path.dirname(os.path.dirname(nvcc)),
                  lambda: os.path.dirname(os.path.dirname(os.path.realpath(nvcc))),
                  lambda: _nvcc_top(nvcc)):
        root = guess()
        if root and has_cudart(root):
            return root
    return None


def extensions():
    if _flag("UDA_OPS_NO_EXTENSION"):
        return [], {}
    cuda_home = find_cuda_home()
    if cuda_home is not None:
        os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension when first imported
    import torch
    from torch.utils import cpp_extension

    cuda_sources = _sources("csrc/cuda/*.cu") + _sources("csrc/cuda/*.cpp")
    want_cuda = (
        _flag("UDA_OPS_FORCE_CUDA")
        or (torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None)
    ) and not _flag("UDA_OPS_CPU_ONLY")
    if want_cuda and torch.version.cuda is None:
        raise RuntimeError("UDA_OPS_FORCE_CUDA=1 but the installed torch has no CUDA support")
    if want_cuda and not cuda_sources:
        want_cuda = False  # no CUDA kernels in this tree yet: build the CPU extension

    sources = ["csrc/uda_ops.cpp", "csrc/autograd.cpp"] + _sources("csrc/cpu/*.cpp")
    # no-math-errno, no-trapping-math: sqrt and the branch-free exp/log selects vectorise (NaN and inf
    # semantics are kept: this is not -ffast-math); no-tree-loop-distribute-patterns: tile copies stay vector
    # loops instead of memcpy calls.
    cxx = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-fno-tree-loop-distribute-patterns", "-Wall", "-Wno-unknown-pragmas"]
    define_macros = []
    if want_cuda:
        cuda_major = int((torch.version.cuda or "0").split(".")[0])
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS_13 if cuda_major >= 13 else DEFAULT_CUDA_ARCHS)
        ext = cpp_extension.CUDAExtension(
            "uda_ops._C",
            sources + cuda_sources,
            define_macros=define_macros + [("UDA_OPS_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": NVCC_FLAGS},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = cpp_extension.CppExtension(
            "uda_ops._C",
            sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import it for the helpers above
    ext_modules, cmdclass = extensions()
    setup(ext_modules=ext_modules, cmdclass=cmdclass)
