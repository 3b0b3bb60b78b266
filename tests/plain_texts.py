"""The plain greedy texts (one token a pass) that drafting decoders are checked against."""

from __future__ import annotations

from collections.abc import Sequence

from phi3_lsp.engine import ModelEngine
from phi3_lsp.generation import GreedyDecoder
from phi3_lsp.prompt_cache import PromptCache


def plain_decoder(engine: ModelEngine) -> GreedyDecoder:
    """A decoder of the same model that feeds one token per pass."""
    return GreedyDecoder(engine.model, engine.tokenizer, engine.eos_token_ids, PromptCache())


class PlainTexts:
    """Each engine's plain greedy text of each prompt, decoded once for all the tests that
    compare with it (SmolLM2's 50 tokens: 1.5 s in fp32); a shorter one is its start."""

    def __init__(self) -> None:
        self._decoded: dict[tuple[str, tuple[int, ...]], tuple[int, tuple[int, ...]]] = {}
        """(engine name, prompt) -> (new tokens asked for, token ids)"""

    def token_ids(
        self, engine_name: str, engine: ModelEngine, prompt: Sequence[int], max_new_tokens: int
    ) -> tuple[int, ...]:
        """The first `max_new_tokens` of `engine`'s plain greedy text of `prompt`;
        `engine_name` is its fixture's, the same for every engine the fixture loads."""
        key = (engine_name, tuple(prompt))
        asked, token_ids = self._decoded.get(key, (0, ()))
        if asked < max_new_tokens:
            plain = plain_decoder(engine).generate(prompt, max_new_tokens=max_new_tokens)
            assert plain.decode_passes == plain.decoded_tokens, "one token a pass"
            asked, token_ids = max_new_tokens, plain.token_ids
            self._decoded[key] = asked, token_ids
        return token_ids[:max_new_tokens]
