"""The stored-video benchmark's report: its section of RESULTS.md and the verdicts in it."""

from __future__ import annotations

from benchmarks.videos import HEADING, VideoResults, section, with_section

HOST = {"CPU": "test cpu", "cores": "2"}


def results(content: float, peak: float) -> VideoResults:
    return VideoResults(
        video_mb=20, reads=10, content_mb_s=content, direct_mb_s=200, copy_mb_s=30, copies=20,
        copy_mb=50, baseline_mib=90, peak_mib=peak, copy_seconds=8, copy_concurrency=4,
    )  # fmt: skip


def test_section_passes_and_fails_against_the_targets() -> None:
    good = section(results(content=150, peak=120), HOST)
    assert "pass (75%)" in good
    assert "+30 MiB" in good
    bad = section(results(content=50, peak=200), HOST)
    assert "FAIL (25%)" in bad
    assert bad.count("FAIL") == 2


def test_the_section_replaces_only_its_own_part_of_the_results_file() -> None:
    previous = (
        "# Benchmark results\n\nmain table\n\n## Stored videos\n\nstale figures\n\n"
        "## History\n\nkept\n"
    )
    fresh = section(results(content=150, peak=120), HOST)
    merged = with_section(fresh, previous)
    assert merged.startswith("# Benchmark results\n\nmain table\n\n" + HEADING)
    assert "stale figures" not in merged
    assert merged.endswith("## History\n\nkept\n")
    assert with_section(fresh, "# Benchmark results\n").endswith(fresh)
