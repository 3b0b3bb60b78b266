"""A hover's Markdown: the tokens of a word, one table row per token."""

from __future__ import annotations

from phi3_lsp.tokens import TokenSpan, Word


def token_table(word: Word, spans: list[TokenSpan], text: str) -> str:
    """Markdown: the word, then one `text | piece | id` row per token.

    `text` is what the token covers in the document, spaces shown as "␣"; `piece` is the
    vocabulary entry itself (e.g. "▁capital" or "Ġcapital", whose first character marks a space).
    """
    count = f"{len(spans)} token" + ("" if len(spans) == 1 else "s")
    rows = "\n".join(
        f"| {_code(text[span.start : span.end].replace(' ', '␣'))} | {_code(span.piece)} "
        f"| {span.id} |"
        for span in spans
    )
    header = "| text | piece | id |\n|---|---|---:|"
    return f"{_code(word.text)} — {count}\n\n{header}\n{rows}\n"


def _code(text: str) -> str:
    """`text` as inline code that survives Markdown tables (pipes, backticks, newlines)."""
    visible = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    visible = visible.replace("|", "\\|")
    fence = "``" if "`" in visible else "`"
    return f"{fence} {visible} {fence}" if fence == "``" else f"`{visible}`"
