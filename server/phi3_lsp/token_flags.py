"""The whitespace flags of a GGUF tokenizer's added tokens, set as llama.cpp sets them.

A GGUF does not record whether an added token strips the whitespace to its right, so the
tokenizer transformers makes from one strips none. llama.cpp restores the flags by model name
(`llama-vocab.cpp`, `load`): Phi-3's chat tokens swallow the newline after them, as in the
published Phi-3-mini tokenizer ("<|user|>\\nThe" is <|user|>, ▁The, not <|user|>, ▁, \\n, The).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TOKEN_FLAGS = "token_flags"
"""The manifest field of a cache entry whose tokenizer.json has these flags."""
LLAMA_CPP = "llama.cpp"

PHI3_NAMES = ("phi-3", "phi3")
"""What llama.cpp looks for in the lowercased `general.name`: not the architecture, as
Phi-4-mini GGUFs are `phi3` too and strip nothing."""
SPECIAL_TYPES = frozenset({2, 3, 4})
"""GGUF token types UNKNOWN, CONTROL and USER_DEFINED: llama.cpp's special tokens."""
NAMED_RSTRIP = {"</s>": True, "<unk>": False, "<s>": False, "<|endoftext|>": False}
"""Set after the special tokens', in this order, where the vocabulary has them."""


def llama_cpp_rstrip(reader: Any) -> dict[int, bool]:
    """The rstrip flag llama.cpp gives each token id of the GGUF read by `reader` (a
    `gguf.GGUFReader`) where it sets one: none unless the model is named Phi-3."""
    name_field = reader.fields.get("general.name")
    name = str(name_field.contents()).lower() if name_field is not None else ""
    if not any(phi3 in name for phi3 in PHI3_NAMES):
        return {}
    tokens: Sequence[str] = reader.fields["tokenizer.ggml.tokens"].contents()
    types: Sequence[int] = reader.fields["tokenizer.ggml.token_type"].contents()
    flags = {token_id: True for token_id, kind in enumerate(types) if kind in SPECIAL_TYPES}
    ids = {token: token_id for token_id, token in enumerate(tokens)}
    for token, rstrip in NAMED_RSTRIP.items():
        if token in ids:
            flags[ids[token]] = rstrip
    return flags


def with_rstrip(tokenizer_json: bytes, flags: dict[int, bool]) -> bytes:
    """`tokenizer_json` (a tokenizer.json's bytes) with its added tokens' rstrip set from
    `flags`; unchanged where it already has them."""
    tokenizer = json.loads(tokenizer_json)
    changed = False
    for token in tokenizer.get("added_tokens", []):
        rstrip = flags.get(token["id"], token.get("rstrip", False))
        changed = changed or rstrip != token.get("rstrip", False)
        token["rstrip"] = rstrip
    if not changed:
        return tokenizer_json
    # As `tokenizers` writes it (transformers' save_pretrained): the files stay diff-able.
    return json.dumps(tokenizer, indent=2, ensure_ascii=False).encode()


def set_rstrip(folder: Path, flags: dict[int, bool]) -> None:
    """Give the added tokens of `folder`'s tokenizer.json their rstrip from `flags`."""
    tokenizer_file = folder / "tokenizer.json"
    current = tokenizer_file.read_bytes()
    updated = with_rstrip(current, flags)
    if updated != current:
        tokenizer_file.write_bytes(updated)
