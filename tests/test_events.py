"""The event broadcaster: every subscriber gets each event with the API key blanked out."""

from __future__ import annotations

from batchvid.events import Broadcaster, Collector, JobFinished, JobRetrying, scrubber

KEY = "sk-test-0123456789"


def test_every_text_field_reaches_subscribers_scrubbed_and_other_fields_unchanged() -> None:
    """The key in any text field (and in several) is blanked for each subscriber; numbers and
    None stay as they were."""
    first, second = Collector(), Collector()
    emit = Broadcaster([first, second], scrubber(KEY))
    emit(JobRetrying(f"job-{KEY}", "create", 2, 1.5, f"HTTP 500: {KEY} rejected"))
    emit(JobFinished("j", "failed", None, f"echoed {KEY}"))
    expected = [
        JobRetrying("job-[REDACTED]", "create", 2, 1.5, "HTTP 500: [REDACTED] rejected"),
        JobFinished("j", "failed", None, "echoed [REDACTED]"),
    ]
    assert first.events == expected and second.events == expected


def test_an_event_without_the_key_is_passed_on_as_it_is() -> None:
    """No copy is made of an event whose texts do not hold the key."""
    seen = Collector()
    event = JobFinished("j", "succeeded")
    Broadcaster([seen], scrubber(KEY))(event)
    assert seen.events[0] is event
