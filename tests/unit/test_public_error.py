from __future__ import annotations

import pytest

from scheduler_app.reminders.service import public_error


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        (
            "gave up after 8 attempts: SMTPConnectError: Error connecting to mx.internal on "
            "port 2525: [Errno 111] Connect call failed ('10.1.2.3', 2525)",
            "gave up after 8 attempts: SMTPConnectError",
        ),
        (
            "permanent error: SMTPRecipientsRefused: [(550, '5.1.1 unknown', 'a@b.example')]",
            "permanent error: SMTPRecipientsRefused",
        ),
        (
            "came due at 2026-12-01T08:00:00+00:00 and could only be delivered 1h00m00s later, "
            "past the late-delivery window of 0h10m00s; last error: SMTPServerDisconnected: "
            "Connection lost to relay.internal",
            "came due at 2026-12-01T08:00:00+00:00 and could only be delivered 1h00m00s later, "
            "past the late-delivery window of 0h10m00s; last error: SMTPServerDisconnected",
        ),
        (None, None),
    ],
)
def test_a_cancel_token_holder_sees_errors_without_operator_detail(
    stored: str | None, shown: str | None
) -> None:
    assert public_error(stored) == shown
