"""``gateway.budgets``' pure parts: UTC periods, money in micro-dollars, what a final task's
reservation becomes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.budgets import period_of, to_micros, to_usd, verdict
from gateway.schemas import Attempt, TaskError
from gateway.tasks import TaskRecord
from providers.base import TaskStatus, VideoJob


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())


def test_a_day_runs_from_utc_midnight_to_the_next() -> None:
    day = period_of("day", at(2026, 12, 1, 23, 59, 59))
    assert (day.id, day.start, day.end) == ("d20261201", at(2026, 12, 1), at(2026, 12, 2))


def test_a_month_ends_at_the_first_of_the_next_one_across_a_year_and_a_leap_day() -> None:
    december = period_of("month", at(2026, 12, 31, 12))
    assert (december.id, december.start, december.end) == (
        "m202612", at(2026, 12, 1), at(2027, 1, 1),
    )  # fmt: skip
    assert period_of("month", at(2028, 2, 29, 23)).end == at(2028, 3, 1)
    assert period_of("month", at(2027, 2, 10)).end == at(2027, 3, 1)


@pytest.mark.parametrize("usd", [0.1, 0.3, 0.32, 0.45, 1000.0, 0.000001])
def test_micro_dollars_round_trip_exactly(usd: float) -> None:
    assert to_usd(to_micros(usd)) == usd


def final(status: TaskStatus, code: str | None = None, *outcomes: str) -> TaskRecord:
    task = TaskRecord.new("demo", VideoJob(prompt="p", image="https://x/i.png"),
                          webhook_url=None, metadata={})  # fmt: skip
    task.attempts = [Attempt(provider="runapi", outcome=o) for o in outcomes]
    task.finish(status, error=TaskError(code=code, message="m") if code else None)
    return task


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (final(TaskStatus.COMPLETED, None, "accepted"), "spend"),
        (final(TaskStatus.FAILED, "generation_failed", "accepted"), "release"),
        (final(TaskStatus.FAILED, "content_rejected", "accepted"), "release"),
        (final(TaskStatus.FAILED, "all_providers_failed", "upstream_unavailable"), "release"),
        (final(TaskStatus.FAILED, "upstream_outcome_unknown", "outcome_unknown"), "keep"),
        (
            final(TaskStatus.FAILED, "all_providers_failed", "outcome_unknown", "rate_limited"),
            "keep",
        ),
        (final(TaskStatus.FAILED, "submit_interrupted", "pending"), "keep"),
        (final(TaskStatus.FAILED, "timeout", "accepted"), "keep"),
    ],
)
def test_a_reservation_is_spent_released_or_kept_by_what_may_be_billed(
    task: TaskRecord, expected: str
) -> None:
    assert verdict(task) == expected
