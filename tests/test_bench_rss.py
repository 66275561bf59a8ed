"""The bench's memory readings are this process's own, not inherited from whoever started it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import bench.worker
from bench.rss import current_rss_bytes, peak_rss_bytes, reset_peak_rss
from core.config import PROJECT_ROOT

MIB = 2**20


def test_a_childs_peak_is_not_its_parents_rss() -> None:
    held = torch.ones(400 * MIB // 4)  # touched: resident in this (parent) process
    assert current_rss_bytes() > 400 * MIB
    child = subprocess.run(
        [sys.executable, "-c", "from bench.rss import peak_rss_bytes; print(peak_rss_bytes())"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    # ru_maxrss would read the parent's RSS at the fork (>400 MiB); a bare interpreter is ~10 MiB.
    assert int(child.stdout) < 100 * MIB
    del held


def test_peak_follows_an_allocation_and_its_reset() -> None:
    if not reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs here")
    before = peak_rss_bytes()
    block = torch.ones(200 * MIB // 4)
    assert peak_rss_bytes() >= before + 190 * MIB
    del block
    assert reset_peak_rss()
    assert peak_rss_bytes() < current_rss_bytes() + 50 * MIB  # back to what is held now


def test_the_workers_peak_is_this_reading() -> None:
    assert bench.worker.peak_rss_bytes is peak_rss_bytes
