"""Pure parts of the OpenAI compatibility: progress figures, form keys, size patterns."""

from __future__ import annotations

import re

import pytest

from gateway.errors import InvalidRequest
from gateway.openai_compat import SIZE_PATTERN, nest, to_canonical
from gateway.openapi_create import LARGE_SIZE, SMALL_SIZE
from gateway.progress import progress
from gateway.status import _apply
from gateway.tasks import TaskRecord
from providers.base import TaskStatus, UpstreamStatus, VideoJob


def test_progress_is_fixed_once_final_and_capped_before() -> None:
    assert progress(TaskStatus.COMPLETED, age_s=1, expected_render_s=90) == 100
    assert progress(TaskStatus.FAILED, age_s=500, expected_render_s=90) == 0
    assert progress(TaskStatus.QUEUED, age_s=500, expected_render_s=90) == 0
    assert progress(TaskStatus.IN_PROGRESS, age_s=45, expected_render_s=90) == 50
    assert progress(TaskStatus.IN_PROGRESS, age_s=0, expected_render_s=90) == 1
    assert progress(TaskStatus.IN_PROGRESS, age_s=900, expected_render_s=90) == 99
    assert progress(TaskStatus.IN_PROGRESS, age_s=45, expected_render_s=None) == 0


def test_the_upstreams_progress_wins_over_the_estimate() -> None:
    assert progress(TaskStatus.IN_PROGRESS, age_s=1, expected_render_s=90, upstream=70) == 70
    assert progress(TaskStatus.IN_PROGRESS, age_s=1, expected_render_s=90, upstream=100) == 99


def test_a_status_read_keeps_the_upstreams_progress_on_the_record() -> None:
    job = VideoJob(prompt="x", image="https://example.com/a.png")
    record = TaskRecord.new("demo", job, webhook_url=None, metadata={}, expected_render_s=90)
    _apply(record, UpstreamStatus(status=TaskStatus.IN_PROGRESS, raw_status="running",
                                  progress=42))  # fmt: skip
    assert record.public().progress == 42


def test_form_keys_nest_as_the_sdk_writes_them() -> None:
    fields = nest([
        ("prompt", "x"), ("metadata[order]", "A-1"), ("routing[providers][]", "runapi"),
        ("routing[providers][]", "apiinone"), ("input_reference[image_url]", "https://a/b.png"),
    ])  # fmt: skip
    assert fields == {
        "prompt": "x",
        "metadata": {"order": "A-1"},
        "routing": {"providers": ["runapi", "apiinone"]},
        "input_reference": {"image_url": "https://a/b.png"},
    }


@pytest.mark.parametrize(
    "items",
    [
        [("prompt", "x"), ("prompt", "y")],
        [("metadata", "x"), ("metadata[a]", "b")],
        [("a[b][c][d]", "x")],
        [("routing[providers]", "x"), ("routing[providers][]", "y")],
    ],
)
def test_ambiguous_form_keys_are_refused(items: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidRequest):
        nest(items)


def test_openai_names_become_ours_and_remember_how_they_were_sent() -> None:
    fields, sent_as = to_canonical(
        {
            "prompt": "x",
            "seconds": "10",
            "size": "1280x720",
            "input_reference": {"image_url": "https://a/b.png"},
        }
    )
    assert fields == {"prompt": "x", "duration": "10", "resolution": "768P",
                      "image": "https://a/b.png"}  # fmt: skip
    assert sent_as == {"duration": "seconds", "resolution": "size",
                       "image": "input_reference.image_url"}  # fmt: skip


@pytest.mark.parametrize(
    "size",
    ["1x1", "1079x99999", "1080x1080", "99999x1080", "1080x1079", "720x1280", "01x5", "0x1",
     "123456x1", "1080X1080", " 1x1"],
)  # fmt: skip
def test_documented_sizes_split_exactly_what_the_gateway_reads(size: str) -> None:
    small, large = re.fullmatch(SMALL_SIZE[1:-1], size), re.fullmatch(LARGE_SIZE[1:-1], size)
    assert (small is not None or large is not None) is (re.fullmatch(SIZE_PATTERN[1:-1], size)
                                                        is not None)  # fmt: skip
    assert not (small and large)
    if large:
        assert min(int(side) for side in size.split("x")) >= 1080
