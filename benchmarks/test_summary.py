"""benchmarks/summary.py's check for a busy machine: other processes' CPU use while the suite runs."""
import subprocess
import sys
import time

import pytest

import summary

SPIN = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < {s}: pass"


@pytest.mark.skipif(summary.busy_cpu_s() is None, reason="needs Linux /proc/stat")
def test_other_load_counts_other_processes_not_our_own():
    # our own child, waited for: its CPU second is this process tree's, not another's
    _, own_child = summary.other_load(lambda: subprocess.run([sys.executable, "-c", SPIN.format(s=1.0)], check=True))
    # a process outside the measured work (started before, reaped after) spinning for the whole time
    spinner = subprocess.Popen([sys.executable, "-c", SPIN.format(s=30.0)])
    try:
        time.sleep(0.3)  # let it start spinning
        _, other = summary.other_load(lambda: time.sleep(1.0))
    finally:
        spinner.kill()
        spinner.wait()
    # same background load in both; the difference is the spinner's core
    assert other - own_child > 0.6, (own_child, other)
    assert summary.busy_warning(other, 2) is not None


def test_busy_warning_threshold():
    assert summary.busy_warning(None, 2) is None
    assert summary.busy_warning(0.0, 2) is None
    assert summary.busy_warning(summary.BUSY_LIMIT * 0.9, 2) is None
    text = summary.busy_warning(0.97, 2)
    assert "0.97" in text and "2 threads" in text and "not reliable" in text
