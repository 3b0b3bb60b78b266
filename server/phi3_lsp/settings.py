"""The server's settings: one typed object, parsed from the client's `phi3` section.

Values arrive as JSON (initializationOptions, didChangeConfiguration, workspace/configuration).
Parsing never fails: an invalid value is reported and the value in force is kept; unknown keys are
ignored, so clients may send settings meant for other tools.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from phi3_lsp.scheduling import logical_cpus, torch_thread_count

SECTION = "phi3"
# Here, not in `sources`: the server needs it at start, and `sources` imports what resolves a
# model (the offline pack, the hub's cache, GGUF conversion), which `initialize` need not wait for.
DEFAULT_MODEL = "microsoft/Phi-3-mini-4k-instruct"

_WHOLE_DIGITS = 15
"""Integers of up to this many digits are shown whole; longer ones (1e300 in a settings file is
an integer to JSON) in scientific notation."""

WeightFormat = Literal["fp32", "int4"]
WEIGHT_FORMATS: tuple[WeightFormat, ...] = ("fp32", "int4")


@dataclass(frozen=True)
class Settings:
    """What a user can set; field names are the camelCase keys in snake_case."""

    model: str = DEFAULT_MODEL
    """Hub id, local folder, .gguf file, or `smollm2-135m` (the offline pack)."""
    max_new_tokens: int = 50
    """Longest continuation, in tokens."""
    context_tokens: int = 1024
    """Prompt budget in tokens; the text before the cursor is cut from the left to fit."""
    threads: int = 0
    """Torch threads; 0 means one per physical core."""
    weights: WeightFormat = "fp32"
    """fp32 keeps the model's own greedy text; int4 decodes 2-4x faster, its text can differ."""
    int4_drafts: bool = True
    """fp32: the model's 4-bit copy drafts tokens its passes check (the same text, faster)."""
    inline_completions: bool = True
    """False: inline and classic completion requests return nothing."""
    read_at_cursor: bool = True
    """Read the prompt at a resting cursor when the client asks (`phi3/readAtCursor`)."""
    answer_budget_ms: int = 600
    """Answer with what is generated after this long and go on in the background; 0 waits."""
    trust_remote_code: bool = False
    """Passed to transformers for hub models that need custom code."""

    def shapes_suggestions_unlike(self, other: Settings) -> bool:
        """True when a suggestion made under `self` may not be what `other` makes: its length
        limit, its prompt budget or the thread count differs (an fp32 prompt's bits depend on
        the count)."""
        return (self.max_new_tokens, self.context_tokens, torch_thread_count(self.threads)) != (
            other.max_new_tokens,
            other.context_tokens,
            torch_thread_count(other.threads),
        )


@dataclass(frozen=True)
class _Field:
    attribute: str
    kind: type
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()


_FIELDS: dict[str, _Field] = {
    "model": _Field("model", str),
    "maxNewTokens": _Field("max_new_tokens", int, 1, 512),
    "contextTokens": _Field("context_tokens", int, 16, 32768),
    # More threads than CPUs only make them wait on each other (4,096 on 2 CPUs: a 66 s answer).
    "threads": _Field("threads", int, 0, logical_cpus()),
    "weights": _Field("weights", str, choices=WEIGHT_FORMATS),
    "int4Drafts": _Field("int4_drafts", bool),
    "inlineCompletions": _Field("inline_completions", bool),
    "readAtCursor": _Field("read_at_cursor", bool),
    "answerBudgetMs": _Field("answer_budget_ms", int, 0, 60000),
    "trustRemoteCode": _Field("trust_remote_code", bool),
}


def parse_settings(
    raw: object, defaults: Settings, *, current: Settings | None = None
) -> tuple[Settings, list[str]]:
    """Read a `phi3` section into Settings; returns the settings and one problem per bad value.

    The section is the whole of the settings: keys missing from `raw` take their value from
    `defaults`. An invalid value keeps the one in force (`current`, else the default), so that
    a typo in one setting does not reload the model with another.
    """
    if current is None:
        current = defaults
    if raw is None:
        return defaults, []
    if not isinstance(raw, Mapping):
        return current, [
            f"The {SECTION} settings must be an object, got {_describe(raw)}. "
            "Keeping the settings in force."
        ]
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, field in _FIELDS.items():
        if key not in raw or raw[key] is None:
            continue
        value, problem = _parse_value(key, field, raw[key])
        if problem is None:
            values[field.attribute] = value
        else:
            kept = getattr(current, field.attribute)
            values[field.attribute] = kept
            problems.append(f"{problem} Keeping {_describe(kept)}.")
    return replace(defaults, **values), problems


def describe_changes(before: Settings, after: Settings) -> list[str]:
    """One "phi3.key: old → new" line per setting that differs, in the order of the keys."""
    changes = []
    for key, field in _FIELDS.items():
        old, new = getattr(before, field.attribute), getattr(after, field.attribute)
        if old != new:
            changes.append(f"{SECTION}.{key}: {_describe(old)} → {_describe(new)}")
    return changes


def _parse_value(key: str, field: _Field, value: object) -> tuple[object, str | None]:
    name = f"{SECTION}.{key}"
    if field.kind is bool:
        if isinstance(value, bool):
            return value, None
        return None, f"{name} must be true or false, got {_describe(value)}."
    if field.kind is str and field.choices:
        if value in field.choices:
            return value, None
        allowed = " or ".join(repr(choice) for choice in field.choices)
        return None, f"{name} must be {allowed}, got {_describe(value)}."
    if field.kind is str:
        if isinstance(value, str) and value.strip():
            return value.strip(), None
        return None, f"{name} must be a non-empty string, got {_describe(value)}."
    # Integers: JSON has one number type, so 50.0 is 50; true is not a number.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return None, f"{name} must be an integer, got {_describe(value)}."
    if field.minimum is not None and value < field.minimum:
        return None, f"{name} must be at least {field.minimum}, got {_describe(value)}."
    if field.maximum is not None and value > field.maximum:
        return None, f"{name} must be at most {field.maximum}, got {_describe(value)}."
    return value, None


def _describe(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) >= 10**_WHOLE_DIGITS:
        from decimal import Context  # any integer, where float() overflows past 1e308

        return f"{Context(prec=4).create_decimal(value).normalize():g}"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def section_of(options: object) -> object:
    """The `phi3` section of an initializationOptions or didChangeConfiguration payload."""
    if isinstance(options, Mapping):
        return options.get(SECTION)
    return None


def unwrapped_settings(options: object) -> list[str]:
    """The problem with an initializationOptions or didChangeConfiguration payload that has no
    `phi3` section but holds its settings by name (`model`) or dotted (`phi3.model`, as in
    VS Code's settings.json): they are not read there. No problem otherwise (a payload may hold
    other tools' sections)."""
    if not isinstance(options, Mapping) or SECTION in options:
        return []
    keys = [key for key in options if isinstance(key, str) and _setting_name(key) in _FIELDS]
    if not keys:
        return []
    wrapped = ", ".join(f'"{_setting_name(key)}": …' for key in keys)
    return [
        f'Not read, as not inside a "{SECTION}" section: {", ".join(keys)}. '
        f'Send them as {{"{SECTION}": {{{wrapped}}}}}.'
    ]


def _setting_name(key: str) -> str:
    """A payload's key as a key of the section: "phi3.model" is "model"."""
    return key.removeprefix(f"{SECTION}.")
