"""Reports of a prompt being read: none for a quick prompt, few for a long one, always closed."""

from __future__ import annotations

from phi3_lsp.prompt_reading import (
    SHOWN_AFTER_SECONDS,
    SHOWN_EVERY_SECONDS,
    PromptReading,
    PromptReadReports,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reports_with_clock() -> tuple[PromptReadReports, list[PromptReading], Clock]:
    sent: list[PromptReading] = []
    clock = Clock()
    return PromptReadReports(sent.append, clock), sent, clock


def test_a_prompt_read_quickly_is_not_reported() -> None:
    reports, sent, clock = reports_with_clock()
    for read in range(100, 1001, 100):
        clock.now += SHOWN_AFTER_SECONDS / 20
        reports(read, 1000)
    reports.end()
    assert sent == []


def test_a_long_prompt_is_reported_at_most_every_interval_and_ends_read_in_full() -> None:
    reports, sent, clock = reports_with_clock()
    step = SHOWN_EVERY_SECONDS / 4
    for read in range(10, 1001, 10):  # 100 layer reports, 25 intervals
        clock.now += step
        reports(read, 1000)
    reports.end()  # the generation ends after the prompt: nothing more to close
    shown = [reading for reading in sent if not reading.ended]
    assert shown[0].read >= 10 * SHOWN_AFTER_SECONDS / step
    assert len(shown) <= (clock.now - SHOWN_AFTER_SECONDS) / SHOWN_EVERY_SECONDS + 1
    assert [reading.read for reading in shown] == sorted(reading.read for reading in shown)
    assert sent[-1] == PromptReading(1000, 1000, ended=True)
    assert sum(reading.ended for reading in sent) == 1


def test_a_stopped_prompt_ends_its_reports_where_it_stopped() -> None:
    reports, sent, clock = reports_with_clock()
    clock.now = SHOWN_AFTER_SECONDS
    reports(300, 1000)
    reports(320, 1000)
    reports.end()
    reports.end()
    assert sent == [PromptReading(300, 1000), PromptReading(320, 1000, ended=True)]
