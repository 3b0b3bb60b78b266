"""Settings reads answered out of order: the newest change wins."""

from __future__ import annotations

from phi3_lsp.settings_reads import SettingsReads


def test_answers_in_order_all_apply() -> None:
    reads = SettingsReads()
    first, second = reads.start(), reads.start()
    assert reads.take(first)
    assert reads.take(second)


def test_an_older_answer_that_comes_last_is_stale() -> None:
    reads = SettingsReads()
    older, newer = reads.start(), reads.start()
    assert reads.take(newer)
    assert not reads.take(older)
    # A read that started after both still applies.
    assert reads.take(reads.start())
