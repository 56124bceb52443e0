"""A task's ``progress`` (0–100), as the OpenAI Videos API reports it (api.md §6).

Resellers mostly say only "queued" or "running", so the figure is the upstream's own where it
reports one, else an estimate from the time since creation against ``status.expected_render_s``
(the render time the background poller plans around). It never reaches 100 before the task is
``completed``, and a final task's figure is fixed (100 completed, 0 failed), so a final task's
answer never changes.
"""

from __future__ import annotations

from providers.base import TaskStatus

RUNNING_CAP = 99
"""The most an unfinished task reports: 100 means the video is there."""


def progress(
    status: TaskStatus,
    *,
    age_s: float,
    expected_render_s: float | None,
    upstream: int | None = None,
) -> int:
    """``age_s``: seconds since the task was created. ``expected_render_s`` None (a task
    recorded before this figure existed) reports 0 until the task ends."""
    if status is TaskStatus.COMPLETED:
        return 100
    if status is TaskStatus.FAILED or status is TaskStatus.QUEUED:
        return 0
    if upstream is not None:
        return max(0, min(RUNNING_CAP, upstream))
    if not expected_render_s:
        return 0
    return max(1, min(RUNNING_CAP, int(100 * max(0.0, age_s) / expected_render_s)))
