"""The AUTO_CUDA table the loader reads (uda_ops/_ops.py AUTO_CUDA_FILE) is declared as package data, so a built
wheel or sdist ships it when `make gpu-check` has written it (without the declaration setuptools leaves it out)."""
import os

import pytest

from uda_ops import _ops

tomllib = pytest.importorskip("tomllib")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_auto_cuda_table_is_package_data():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        data = tomllib.load(f)["tool"]["setuptools"].get("package-data", {})
    assert os.path.basename(os.path.dirname(_ops.AUTO_CUDA_FILE)) == "uda_ops"  # in the package itself
    assert os.path.basename(_ops.AUTO_CUDA_FILE) in data.get("uda_ops", [])
