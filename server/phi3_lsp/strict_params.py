"""Params read as the protocol types them: no string or fraction taken for an integer, and no
string or object for an array.

The protocol's converter takes what Python can turn into the type: `"0"` or `0.5` became line 0
of a position, and an `arguments` of `"xyz"` three arguments, "x", "y" and "z". A client that
sends them has a bug it should hear of, as it hears of any other params that do not fit (see
`request_rules`); guessed, a position or an edit lands where the user did not mean.

What JSON encoders write for the right value is still taken: `2.0` for 2, and `{}` for an empty
array (Lua's encoders cannot tell an empty table's kind). `initialize` is read as before
(`leniently`): the session is already answered for when pygls reads it, and a client's
capabilities decide nothing that a guess could misplace.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

from cattrs import Converter
from cattrs.cols import (
    homogenous_tuple_structure_factory,
    is_mutable_sequence,
    is_sequence,
    list_structure_factory,
)

_LENIENT = contextvars.ContextVar("lenient", default=False)


def read_strictly(converter: Converter) -> None:
    """Make `converter` refuse values of another JSON type for integers and arrays (before it
    reads any message: it makes each type's reader once)."""
    converter.register_structure_hook(int, _integer)  # and its subclasses: see `_integer`
    converter.register_structure_hook_factory(is_sequence, _array_reader)


@contextlib.contextmanager
def leniently() -> Iterator[None]:
    """Within the block, the converter reads integers and arrays as it did before
    `read_strictly`."""
    token = _LENIENT.set(True)
    try:
        yield
    finally:
        _LENIENT.reset(token)


def _integer(value: Any, integer_type: type[int]) -> int:
    """`value` as an `integer_type`: an int, or a subclass of it, which the converter finds this
    reader for too (bool, and the protocol's enumerations of integers)."""
    if integer_type is bool:
        # As the converter reads one: a client's capability given as "yes" still counts.
        return bool(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif not _LENIENT.get() and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"expected an integer, got {value!r}")
    return integer_type(value)


def _array_reader(sequence_type: Any, converter: Converter) -> Callable[[object, Any], Any]:
    """The converter's own reader of `sequence_type`, for JSON arrays only."""
    if is_mutable_sequence(sequence_type):
        items = list_structure_factory(sequence_type, converter)
    else:
        items = homogenous_tuple_structure_factory(sequence_type, converter)

    def array(value: object, _: Any) -> Any:
        if value == {}:
            return items([], sequence_type)
        if not _LENIENT.get() and not isinstance(value, list | tuple):
            raise TypeError(f"expected an array, got {type(value).__name__}")
        return items(value, sequence_type)

    return array
