"""Which settings problems the user has been shown: each once while it stays.

A bad value stays in the client's settings while the user changes others, and every change
brings it again; so do settings sent outside the `phi3` section, while the client sends them so.
A problem is shown again only after a change without it.
"""

from __future__ import annotations

from collections.abc import Sequence


class ShownWarnings:
    """The problems shown of the settings in force, kept apart by where they were found: in the
    values of the `phi3` section, or in a payload's keys outside it (see `unwrapped_settings`).
    A change that brings no section says nothing of the values' problems: they stand."""

    def __init__(self) -> None:
        self._of_values: frozenset[str] = frozenset()
        self._of_keys: frozenset[str] = frozenset()

    def not_shown(self, of_values: Sequence[str] | None, of_keys: Sequence[str]) -> list[str]:
        """The problems of a change that were not shown before it, in their order; from now on
        those of the change are the ones shown. `of_values` is None when the change brought no
        `phi3` section (the settings stay, and so do their problems)."""
        shown = self._of_values | self._of_keys
        if of_values is not None:
            self._of_values = frozenset(of_values)
        self._of_keys = frozenset(of_keys)
        return [problem for problem in [*(of_values or ()), *of_keys] if problem not in shown]
