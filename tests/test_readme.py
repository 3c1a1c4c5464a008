"""The documented examples run as written: every ```python block of the README, and the example in
``uda_ops.dropout``'s docstring."""
from __future__ import annotations

import pathlib
import re
import textwrap

import pytest

import uda_ops
import uda_ops.dropout

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.fixture(autouse=True)
def _keep_backend():
    backend = uda_ops.get_backend()
    yield
    uda_ops.set_backend(backend)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_example_runs(i):
    exec(compile(BLOCKS[i], f"README.md python block {i}", "exec"), {})


def test_dropout_docstring_example_runs():
    doc = uda_ops.dropout.__doc__
    example = textwrap.dedent(doc.split("Example::", 1)[1])
    exec(compile(example, "uda_ops.dropout docstring example", "exec"), {})
