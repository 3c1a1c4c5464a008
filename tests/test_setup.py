"""setup.py's CUDA toolkit lookup when CUDA_HOME is unset: torch guesses the parent of the folder of the
``nvcc`` on PATH, which is wrong where that ``nvcc`` is a wrapper script outside the toolkit (the link then
fails with ``cannot find -lcudart``); setup.py finds the real root. Checked with fake toolkits and wrappers."""
import importlib.util
import os
import shutil
import stat

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup_py():
    spec = importlib.util.spec_from_file_location("uda_ops_setup", os.path.join(ROOT, "setup.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # not __main__: defines the helpers, runs no build
    return mod


def _script(path, body):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _toolkit(root, lib="lib64"):
    """A fake toolkit: bin/nvcc that answers `-v --dryrun` as the real one does, and libcudart."""
    _script(os.path.join(root, "bin", "nvcc"),
            f'for a in "$@"; do [ "$a" = --dryrun ] && echo "#\\$ TOP={root}/bin/.." >&2; done; exit 0')
    os.makedirs(os.path.join(root, lib))
    open(os.path.join(root, lib, "libcudart.so"), "w").close()
    os.makedirs(os.path.join(root, "include"))
    open(os.path.join(root, "include", "cuda_runtime.h"), "w").close()
    return root


def _env(*path):
    return {"PATH": os.pathsep.join(path)}


def test_wrapper_script_outside_the_toolkit(setup_py, tmp_path):
    """As on our machines: /usr/local/bin/nvcc is `exec /usr/local/cuda-13.0/bin/nvcc "$@"`."""
    kit = _toolkit(str(tmp_path / "cuda-13.0"))
    _script(str(tmp_path / "local" / "bin" / "nvcc"), f'exec {kit}/bin/nvcc "$@"')
    os.makedirs(tmp_path / "local" / "lib64")  # what torch guesses: exists, but holds no libcudart
    assert setup_py.find_cuda_home(_env(str(tmp_path / "local" / "bin"))) == kit


def test_symlink_to_the_toolkit(setup_py, tmp_path):
    kit = _toolkit(str(tmp_path / "cuda"), lib="lib")
    os.makedirs(tmp_path / "bin")
    os.symlink(os.path.join(kit, "bin", "nvcc"), tmp_path / "bin" / "nvcc")
    assert setup_py.find_cuda_home(_env(str(tmp_path / "bin"))) == kit


def test_nvcc_inside_the_toolkit(setup_py, tmp_path):
    kit = _toolkit(str(tmp_path / "cuda"))
    assert setup_py.find_cuda_home(_env(os.path.join(kit, "bin"))) == kit


def test_cuda_home_set_or_no_nvcc_leaves_torch_alone(setup_py, tmp_path):
    kit = _toolkit(str(tmp_path / "cuda"))
    assert setup_py.find_cuda_home(dict(_env(os.path.join(kit, "bin")), CUDA_HOME="/elsewhere")) is None
    assert setup_py.find_cuda_home(dict(_env(os.path.join(kit, "bin")), CUDA_PATH="/elsewhere")) is None
    assert setup_py.find_cuda_home(_env(str(tmp_path / "empty"))) is None


def test_wrapper_that_says_nothing_gives_none(setup_py, tmp_path):
    """No toolkit can be found: None, and torch's own guess (and its error) stands."""
    _script(str(tmp_path / "bin" / "nvcc"), "echo hello; exit 1")
    assert setup_py.find_cuda_home(_env(str(tmp_path / "bin"))) is None


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on PATH")
def test_this_machines_nvcc(setup_py):
    home = setup_py.find_cuda_home({"PATH": os.environ["PATH"]})
    home = home or os.path.dirname(os.path.dirname(shutil.which("nvcc")))
    assert setup_py.has_cudart(home), home
