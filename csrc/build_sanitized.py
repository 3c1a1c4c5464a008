"""Build the CPU extension with AddressSanitizer and UBSan into its own folder (``make sanitize``).

    python csrc/build_sanitized.py [BUILD_DIR]      (default build/sanitize; prints the path of the .so)

The sources, defines and flags are setup.py's (CPU-only), plus ``-fsanitize=address,undefined`` (UB aborts:
``-fno-sanitize-recover=all``), ``-g`` and frame pointers for the reports. Nothing touches the in-place
``uda_ops/_C*.so``: objects go to BUILD_DIR/tmp (ninja recompiles what changed), the library to
BUILD_DIR/uda_ops/. Load it with
``UDA_OPS_EXTENSION=<path>`` and ``LD_PRELOAD`` of libasan (its runtime must come first) and libstdc++
(else ASan's ``__cxa_throw`` interceptor aborts on the first C++ exception): see the Makefile.
"""
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def main(build_dir: str = "build/sanitize") -> str:
    os.chdir(ROOT)
    sys.path.insert(0, ROOT)
    os.environ["UDA_OPS_CPU_ONLY"] = "1"
    os.environ.pop("UDA_OPS_NO_EXTENSION", None)
    import setup as project  # setup.py: the same sources and flags as the shipped build
    from setuptools import setup

    [ext], cmdclass = project.extensions()
    ext.extra_compile_args["cxx"] += SANITIZE + ["-g", "-fno-omit-frame-pointer"]
    ext.extra_link_args += SANITIZE
    setup(name="uda_ops_sanitized", ext_modules=[ext], cmdclass=cmdclass, packages=[], py_modules=[],
          script_args=["-q", "build_ext", "--force", "--build-lib", build_dir, "--build-temp", os.path.join(build_dir, "tmp")])
    [lib] = glob.glob(os.path.join(build_dir, "uda_ops", "_C*.so"))
    return os.path.abspath(lib)


if __name__ == "__main__":
    print(main(*sys.argv[1:]))
