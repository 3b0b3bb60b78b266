"""Baseline "seed": the plainest transformers code, `pipeline("text-generation")`, greedy.

Run as its own process by the benchmark: `python -m bench.seed_baseline --model-dir DIR
--workload W.json --result R.json`. dtype "auto" takes the checkpoint's dtype (bf16 for Phi-3).
`min_new_tokens` keeps EOS from ending an answer early, so every full answer is the same length.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.workload import BaselineResult, Workload, peak_rss_kib, time_workload


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

    def generate(text: str, new_tokens: int) -> tuple[float, int, int]:
        begun = time.perf_counter()
        generator(
            text,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            return_full_text=False,
        )
        seconds = time.perf_counter() - begun
        return seconds, len(tokenizer(text)["input_ids"]), new_tokens

    timings = time_workload(workload, generate)

    BaselineResult(load_seconds=load_seconds, prompts=timings, peak_rss_kib=peak_rss_kib()).save(
        args.result
    )


if __name__ == "__main__":
    main()
