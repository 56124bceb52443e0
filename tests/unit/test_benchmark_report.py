"""Pieces of ``python -m benchmarks`` that can be checked without running the load."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.processes import tree_memory
from benchmarks.report import HISTORY_HEADING, with_history


def test_a_new_run_keeps_the_tuning_history_of_the_previous_results() -> None:
    previous = f"# Benchmark results\n\nold table\n\n{HISTORY_HEADING}\n\nbefore | after\n"
    written = with_history("# Benchmark results\n\nnew table\n", previous)
    assert "new table" in written
    assert "old table" not in written
    assert written.endswith(f"{HISTORY_HEADING}\n\nbefore | after\n")


def test_a_first_run_writes_only_its_results() -> None:
    assert with_history("fresh\n", None) == "fresh\n"
    assert with_history("fresh\n", "no history here") == "fresh\n"


def test_tree_memory_counts_the_children_of_a_process() -> None:
    alone = tree_memory(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with_child = tree_memory(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert alone.processes >= 1
    assert with_child.processes == alone.processes + 1
    assert 0 < alone.pss_kib <= alone.rss_kib
    assert with_child.rss_kib > alone.rss_kib
    assert with_child.largest_peak_kib >= alone.largest_peak_kib
