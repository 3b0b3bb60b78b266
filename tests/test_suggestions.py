"""Suggestions that grow in the background, and typing through them without the model."""

from __future__ import annotations

import asyncio
import threading

from phi3_lsp.suggestions import LiveSuggestion, SuggestionCache

URI = "file:///notes.txt"
BEFORE = "The capital of France is"


def cache_with(suggestion: LiveSuggestion) -> SuggestionCache:
    cache = SuggestionCache()
    cache.remember(URI, BEFORE, suggestion)
    return cache


async def rest_after(cache: SuggestionCache, text_before_cursor: str) -> str | None:
    through = cache.typed_through(URI, text_before_cursor)
    return None if through is None else await through.rest(budget=0.05)


class TestTypingThrough:
    def cache(self) -> SuggestionCache:
        return cache_with(LiveSuggestion.complete(" Paris. It is"))

    async def test_typing_a_prefix_of_the_suggestion_leaves_the_rest(self) -> None:
        assert await rest_after(self.cache(), BEFORE + " Pa") == "ris. It is"
        assert await rest_after(self.cache(), BEFORE + " Paris.") == " It is"

    async def test_asking_again_at_the_same_place_gives_the_same_suggestion(self) -> None:
        assert await rest_after(self.cache(), BEFORE) == " Paris. It is"

    async def test_typing_something_else_misses(self) -> None:
        assert self.cache().typed_through(URI, BEFORE + " Lyon") is None

    async def test_another_document_misses(self) -> None:
        assert self.cache().typed_through("file:///other.txt", BEFORE + " P") is None

    async def test_an_edit_before_the_old_cursor_misses(self) -> None:
        assert self.cache().typed_through(URI, "The capital of Spain is P") is None

    async def test_moving_the_cursor_back_misses(self) -> None:
        assert self.cache().typed_through(URI, BEFORE[:-1]) is None

    async def test_typing_the_whole_suggestion_leaves_nothing_to_show(self) -> None:
        assert await rest_after(self.cache(), BEFORE + " Paris. It is") is None

    async def test_text_that_begins_elsewhere_in_the_document_misses(self) -> None:
        # A completion keeps the end of the text before the cursor, from `start` on: the same
        # characters from another start are another text.
        cache = SuggestionCache()
        cache.remember(URI, BEFORE, LiveSuggestion.complete(" Paris"), start=32_800)
        assert cache.typed_through(URI, BEFORE + " P", start=32_800) is not None
        assert cache.typed_through(URI, BEFORE + " P", start=65_600) is None

    async def test_typing_through_goes_on_when_the_text_kept_begins_later(self) -> None:
        # Typing moves the start of the part kept on by a grid step now and then; the new text
        # still holds the old one's end and what was typed.
        cache = SuggestionCache()
        kept = "x" * 100 + BEFORE
        cache.remember(URI, kept, LiveSuggestion.complete(" Paris"), start=32_700)
        through = cache.typed_through(URI, BEFORE + " P", start=32_800)
        assert through is not None
        assert await through.rest(None) == "aris"
        assert cache.typed_through(URI, BEFORE + " X", start=32_800) is None
        assert cache.typed_through(URI, "x" * 120 + BEFORE + " P", start=32_680) is None

    async def test_a_newer_suggestion_replaces_the_current_one(self) -> None:
        first, second = LiveSuggestion(), LiveSuggestion()
        cache = cache_with(first)
        assert cache.is_current(first)
        cache.remember(URI, BEFORE + " P", second)
        assert not cache.is_current(first)
        assert cache.is_current(second)

    async def test_a_forgotten_suggestion_is_not_used(self) -> None:
        cache = self.cache()
        cache.forget()
        assert cache.typed_through(URI, BEFORE) is None

    async def test_closing_its_document_drops_it_and_the_text_it_holds(self) -> None:
        cache = self.cache()
        cache.forget_document("file:///other.txt")
        assert cache.typed_through(URI, BEFORE) is not None
        cache.forget_document(URI)  # a closed document: its text may be megabytes
        assert cache.typed_through(URI, BEFORE) is None

    async def test_what_is_left_after_accepting_it_all_is_no_answer(self) -> None:
        # " Paris.\n" was cut after its line break and shown as " Paris.": accepting that
        # leaves only the break, which is nothing to show; the model must be asked anew.
        suggestion = LiveSuggestion.complete(" Paris.\n")
        assert await rest_after(cache_with(suggestion), BEFORE + " Paris.") is None
        indented = LiveSuggestion.complete(" Paris.\n    ")
        assert await rest_after(cache_with(indented), BEFORE + " Paris.") is None
        assert await rest_after(cache_with(indented), BEFORE + " Paris.\n") is None

    async def test_asked_again_where_the_model_ended_with_only_whitespace_it_answers_nothing(
        self,
    ) -> None:
        # No new generation each time: the model's answer there is known, and shows nothing.
        assert await rest_after(cache_with(LiveSuggestion.complete("\n")), BEFORE) == ""

    async def test_a_one_line_suggestion_answers_only_in_the_middle_of_a_line(self) -> None:
        # Made before the rest of a line: it stopped at its first line break.
        cache = SuggestionCache()
        cache.remember(URI, BEFORE, LiveSuggestion.complete(" Paris"), one_line=True)
        assert cache.typed_through(URI, BEFORE + " P", one_line=True) is not None
        assert cache.typed_through(URI, BEFORE + " P", one_line=False) is None
        # A whole continuation answers both: the middle of a line shows its first line.
        cache.remember(URI, BEFORE, LiveSuggestion.complete(" Paris.\nIt"), one_line=False)
        assert cache.typed_through(URI, BEFORE + " P", one_line=True) is not None


class TestGrowingSuggestion:
    async def test_typing_through_sees_text_generated_after_the_answer(self) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        cache = cache_with(suggestion)
        suggestion.append(" Paris")
        through = cache.typed_through(URI, BEFORE + " Paris")
        assert through is not None
        # The user caught up with the model: the rest arrives while the request waits.
        waiting = asyncio.ensure_future(through.rest(budget=0.01))
        await asyncio.sleep(0)
        assert not waiting.done()
        suggestion.append(". It is")
        assert await waiting == ". It is"

    async def test_while_it_grows_only_its_complete_lines_are_shown(self) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        cache = cache_with(suggestion)
        suggestion.append(" Paris.\nThe answer is: 2")
        assert suggestion.shown() == " Paris.\n"
        assert await rest_after(cache, BEFORE + " P") == "aris.\n"
        suggestion.finish()
        assert suggestion.shown() == " Paris.\nThe answer is: 2"
        assert await rest_after(cache, BEFORE + " P") == "aris.\nThe answer is: 2"

    async def test_a_stopped_generation_shows_only_its_complete_lines(self) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        cache = cache_with(suggestion)
        suggestion.append(" Paris.\nThe ans")
        suggestion.finish(stopped=True)  # cancelled while the model was inside a word
        assert suggestion.shown() == " Paris.\n"
        assert await rest_after(cache, BEFORE + " P") == "aris.\n"

    async def test_a_stopped_generation_with_no_complete_line_left_answers_nothing(
        self,
    ) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        cache = cache_with(suggestion)
        suggestion.append(" Paris.\nThe ans")
        suggestion.finish(stopped=True)
        # The caller generates anew instead of showing "The ans" or "aris." cut short.
        assert await rest_after(cache, BEFORE + " Paris.\n") is None
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        cache = cache_with(suggestion)
        suggestion.append(" Par")
        suggestion.finish(stopped=True)
        assert await rest_after(cache, BEFORE + " P") is None

    async def test_a_generation_that_ended_is_shown_whole(self) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        cache = cache_with(suggestion)
        suggestion.append(" Paris.\nThe ans")
        suggestion.finish()  # the token limit ends a continuation anywhere too: that is its end
        assert await rest_after(cache, BEFORE + " Paris.\n") == "The ans"

    async def test_the_first_finish_holds_and_waiters_wake_on_finish(self) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        suggestion.append(" Paris.\nThe ans")
        waiting = asyncio.ensure_future(suggestion.wait(lambda _: False, None))
        await asyncio.sleep(0)
        # The model thread, at the generation's end: whole at once, but nothing is woken yet.
        suggestion.mark_finished(" Paris.\nThe answer is: 2")
        assert suggestion.finished
        await asyncio.sleep(0.01)
        assert not waiting.done()
        suggestion.finish(None, stopped=True)  # its request's own end, e.g. cancelled meanwhile
        await asyncio.wait_for(waiting, 1)
        assert (suggestion.stopped, suggestion.shown()) == (False, " Paris.\nThe answer is: 2")

    async def test_text_appended_from_another_thread_wakes_the_waiter(self) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        model_thread = threading.Thread(target=lambda: suggestion.append(" Paris"))
        waiting = asyncio.ensure_future(suggestion.wait(lambda text: bool(text), timeout=5))
        model_thread.start()
        await waiting
        model_thread.join()
        assert suggestion.text == " Paris"

    async def test_a_wait_ends_when_the_budget_is_spent(self) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        suggestion.append(" Par")
        await suggestion.wait(lambda text: False, timeout=0.01)
        assert not suggestion.finished
        assert suggestion.text == " Par"

    async def test_finishing_with_the_final_text_wakes_every_waiter(self) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        waiting = asyncio.ensure_future(suggestion.wait(lambda text: False, timeout=None))
        await asyncio.sleep(0)
        suggestion.finish(" Paris.")
        await waiting
        assert (suggestion.finished, suggestion.text) == (True, " Paris.")

    async def test_a_suggestion_that_turns_away_from_what_was_typed_misses(self) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        cache = cache_with(suggestion)
        suggestion.append(" P")
        through = cache.typed_through(URI, BEFORE + " P")
        assert through is not None
        suggestion.finish(" Lyon")  # the final text, decoded whole, differs from the pieces
        assert await through.rest(budget=1) is None


class TestSettling:
    async def test_without_a_budget_the_whole_continuation_is_awaited(self) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        suggestion.append(" Paris")
        settling = asyncio.ensure_future(suggestion.settle(0, None))
        await asyncio.sleep(0.01)
        assert not settling.done()
        suggestion.finish(" Paris. It is")
        await settling

    async def test_visible_text_past_what_was_shown_answers_at_once(self) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        suggestion.append(" Paris. It is")
        settling = asyncio.ensure_future(suggestion.settle(len(" Paris"), 60))
        await asyncio.sleep(0)  # one turn of the loop: the settling runs, waiting for nothing
        assert settling.done()

    async def test_a_finished_first_line_answers_before_the_budget(self) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        settling = asyncio.ensure_future(suggestion.settle(0, 60))
        await asyncio.sleep(0.01)  # settling from before the model's first piece, as a request does
        suggestion.append(" Rome.")
        await asyncio.sleep(0.01)
        assert not settling.done(), "the first line may still grow"
        suggestion.append("\nThe")
        await asyncio.wait_for(settling, timeout=1)
        assert suggestion.text.startswith(" Rome.\n")

    async def test_after_the_budget_the_first_visible_text_is_awaited(self) -> None:
        suggestion = LiveSuggestion(asyncio.get_running_loop())
        suggestion.append("\n")
        settling = asyncio.ensure_future(suggestion.settle(0, 0.001))
        await asyncio.sleep(0.01)
        assert not settling.done(), "a newline alone is nothing to show"
        suggestion.append("Paris")
        await asyncio.wait_for(settling, timeout=1)
