"""JSON values back from pygls, which hands objects of custom messages over as named tuples."""

from __future__ import annotations

from typing import Any


def as_plain(value: Any) -> Any:
    """`value` with every named tuple turned into a dict and every tuple into a list."""
    if hasattr(value, "_asdict"):
        return {key: as_plain(item) for key, item in value._asdict().items()}
    if isinstance(value, dict):
        return {key: as_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [as_plain(item) for item in value]
    return value
