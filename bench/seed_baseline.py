"""Baseline "seed": the plainest transformers code, `pipeline("text-generation")`, greedy.

Run as its own process by the benchmark: `python -m bench.seed_baseline --model-dir DIR
--workload W.json --result R.json`. dtype "auto" takes the checkpoint's dtype (bf16 for Phi-3).
`min_new_tokens` keeps EOS from ending an answer early, so every full answer is the same length.
A streamer notes when the first new token comes, so that each answer's decode time is its own.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.workload import Answer, BaselineResult, Workload, peak_rss_kib, time_workload


class FirstTokenClock:
    """A `generate()` streamer that notes the time of the first new token.

    `generate()` hands a streamer the prompt's ids first, then each new token as it is chosen.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._puts = 0
        self.first_token_at: float | None = None

    def put(self, value: Any) -> None:
        self._puts += 1
        if self._puts == 2:
            self.first_token_at = self._clock()

    def end(self) -> None:
        pass

    def decode_seconds(self, ended: float) -> float | None:
        """From the first new token to `ended`; None when no token came."""
        return None if self.first_token_at is None else ended - self.first_token_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    workload = Workload.load(args.workload)

    started = time.perf_counter()
    from transformers import pipeline

    generator = pipeline("text-generation", model=str(args.model_dir), dtype="auto")
    load_seconds = time.perf_counter() - started
    tokenizer = generator.tokenizer
    assert tokenizer is not None

    def generate(text: str, new_tokens: int) -> Answer:
        first_token = FirstTokenClock()
        begun = time.perf_counter()
        generator(
            text,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            return_full_text=False,
            streamer=first_token,
        )
        ended = time.perf_counter()
        prompt_tokens = len(tokenizer(text)["input_ids"])
        return Answer(ended - begun, prompt_tokens, new_tokens, first_token.decode_seconds(ended))

    timings = time_workload(workload, generate)

    BaselineResult(load_seconds=load_seconds, prompts=timings, peak_rss_kib=peak_rss_kib()).save(
        args.result
    )


if __name__ == "__main__":
    main()
