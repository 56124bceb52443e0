from __future__ import annotations

import pytest

from gateway.config import StatusSettings, WebhookSettings
from gateway.status import next_poll_delay
from gateway.webhooks import points_at_self, retry_delay_s, sign, signing_key


def test_signature_matches_the_standard_webhooks_published_vector() -> None:
    # The example from the Standard Webhooks specification.
    key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_default_retry_schedule_gives_eight_tries_within_about_an_hour() -> None:
    settings = WebhookSettings()  # the shipped defaults, not a copy of them
    retries = settings.max_attempts - 1
    waits = [retry_delay_s(n, settings.retry_delays_s) for n in range(1, retries + 1)]
    assert settings.max_attempts == 8
    assert waits[0] <= 10  # the first retry within 10 s (api.md §3)
    assert waits == sorted(waits)  # backing off, never hurrying
    assert 3000 <= sum(waits) <= 4500  # about an hour in all


def test_last_retry_delay_repeats() -> None:
    assert retry_delay_s(9, [1.0, 2.0]) == 2.0


@pytest.mark.parametrize(
    ("age", "expected"),
    [(0, 2.0), (9, 2.0), (30, 30.0), (80, 5.0), (89, 2.0), (100, 2.5), (300, 30.0)],
)
def test_poll_delay_closes_in_on_the_expected_render_time_then_backs_off(
    age: float, expected: float
) -> None:
    settings = StatusSettings(poll_interval_s=2, expected_render_s=90, max_poll_interval_s=30)
    assert next_poll_delay(age, settings) == expected


@pytest.mark.parametrize(
    ("url", "host", "port", "expected"),
    [
        ("http://127.0.0.1:8080/hook", "127.0.0.1", 8080, True),
        ("http://localhost:8080/hook", "127.0.0.1", 8080, True),
        ("http://127.0.0.1:8081/hook", "127.0.0.1", 8080, False),
        ("http://localhost:8080/hook", "0.0.0.0", 8080, True),
        ("http://[::1]:8080/hook", "::1", 8080, True),
        ("http://203.0.113.9:8080/hook", "127.0.0.1", 8080, False),
        ("https://127.0.0.1/hook", "127.0.0.1", 443, True),
    ],
)
async def test_webhook_loop_detection(url: str, host: str, port: int, expected: bool) -> None:
    assert await points_at_self(url, host, port) is expected
