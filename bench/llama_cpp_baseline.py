"""Baseline llama.cpp: `llama-cpp-python` on the original GGUF, 2 threads, greedy.

Run as its own process by the benchmark with the wheel's install folder on PYTHONPATH:
`python -m bench.llama_cpp_baseline --gguf FILE --workload W.json --result R.json`.
EOS gets a -1e9 logit bias so that every full answer runs to `max_new_tokens`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.workload import Answer, BaselineResult, Workload, peak_rss_kib, time_workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=4096)
    args = parser.parse_args()
    workload = Workload.load(args.workload)

    started = time.perf_counter()
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(args.gguf),
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_ctx=args.context,
        verbose=False,
    )
    load_seconds = time.perf_counter() - started
    no_eos = {llm.token_eos(): -1e9}

    def generate(text: str, new_tokens: int) -> Answer:
        # Each window starts with other text, so llama.cpp's own prefix reuse does not apply.
        begun = time.perf_counter()
        # Streamed, so that the first token's time is known (a chunk comes with each token
        # that completes a character). Without EOS, the answer runs to `new_tokens`.
        chunks = llm.create_completion(
            text, max_tokens=new_tokens, temperature=0.0, logit_bias=no_eos, stream=True
        )
        arrivals = [time.perf_counter() for _ in chunks]
        ended = time.perf_counter()
        prompt_tokens = len(llm.tokenize(text.encode("utf-8")))
        decode_seconds = ended - arrivals[0] if arrivals else None
        return Answer(ended - begun, prompt_tokens, new_tokens, decode_seconds)

    timings = time_workload(workload, generate)

    BaselineResult(load_seconds=load_seconds, prompts=timings, peak_rss_kib=peak_rss_kib()).save(
        args.result
    )


if __name__ == "__main__":
    main()
