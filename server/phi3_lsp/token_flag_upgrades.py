"""Cache entries converted from a GGUF before its added tokens got llama.cpp's flags, upgraded
in place once: the offline pack's cannot be made again without the network."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from phi3_lsp.gguf_convert import llama_cpp_token_flags
from phi3_lsp.paths import built_manifest, rewrite_built_file
from phi3_lsp.token_flags import LLAMA_CPP, TOKEN_FLAGS, with_rstrip

log = logging.getLogger(__name__)


_TRIED: set[Path] = set()
"""Entries this process tried to upgrade: one it could not (a cache it cannot write) is not
tried on every use again, which would parse its GGUF each time (SmolLM2's: ~2.9 s)."""


def upgrade_token_flags(entry: Path, gguf_file: Path) -> None:
    """Give the built `entry`, converted from `gguf_file`, the rstrip flags llama.cpp gives
    its added tokens, and the mark that says so, unless its manifest has the mark. An entry
    whose file cannot be read, or in a cache that cannot be written, is left as it is and
    goes on serving (one line in the log where its tokens would change)."""
    manifest = built_manifest(entry)
    if manifest is None or manifest.get(TOKEN_FLAGS) == LLAMA_CPP or entry in _TRIED:
        return
    _TRIED.add(entry)
    try:
        flags = llama_cpp_token_flags(gguf_file)
    except Exception as error:  # gone, or the reader's numpy errors on a damaged file
        log.warning(
            "Cannot tell whether %s is a Phi-3 tokenizer, as %s cannot be read (%s): "
            "its chat tokens may not strip the whitespace after them",
            entry,
            gguf_file,
            error,
        )
        return
    try:
        upgraded = rewrite_built_file(
            entry, "tokenizer.json", partial(with_rstrip, flags=flags), {TOKEN_FLAGS: LLAMA_CPP}
        )
    except (OSError, ValueError) as error:  # a cache that cannot be written says how
        if flags:  # else only the mark is missing: its tokens are as they should be
            log.warning("Cannot give %s llama.cpp's token flags: %s", entry, error)
        return
    if upgraded and flags:
        log.info("Gave the chat tokens of %s llama.cpp's whitespace stripping", entry)
