"""How far int4 weights keep the greedy text of fp32 weights, on a set of reference prompts.

`python -m bench.agreement --model SPEC --out FILE` loads the model twice (fp32, then int4),
generates 50 greedy tokens for every reference prompt with each, and writes JSON: per prompt,
how many leading tokens are identical, and the top-1 agreement when int4 is fed fp32's tokens
(teacher forcing: one differing token does not make every later one count as a miss).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tokenizers import Tokenizer

from bench.prompts import prompt_windows, read_source_lines, stdlib_file

NOTEBOOK_PROMPT = "The capital of France is"
# Ordinary Python of several kinds (argument parsing, data structures, text, paths).
REFERENCE_SOURCES = ("argparse.py", "dataclasses.py", "textwrap.py", "pathlib.py")
WINDOWS_PER_SOURCE = 4
WINDOW_TOKENS = 120
NEW_TOKENS = 50


@dataclass(frozen=True)
class PromptAgreement:
    prompt_tokens: int
    reference_tokens: int
    identical_prefix: int
    """Leading new tokens that int4 generates exactly as fp32 does."""
    identical: bool
    """int4 generates exactly fp32's tokens (and stops where fp32 stops)."""
    top1_matches: int
    """Steps where int4's most likely token, after fp32's tokens so far, is fp32's token."""


def reference_prompts(tokenizer_file: Path) -> list[str]:
    """The notebook's prompt, then windows of real source code from several stdlib modules."""
    tokenizer = Tokenizer.from_file(str(tokenizer_file))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    prompts = [NOTEBOOK_PROMPT]
    for name in REFERENCE_SOURCES:
        lines = read_source_lines(stdlib_file(name))
        prompts.extend(prompt_windows(lines, WINDOW_TOKENS, WINDOWS_PER_SOURCE, count))
    return prompts


def summarize(results: Sequence[PromptAgreement]) -> str:
    """One table cell: identical texts, the shortest identical prefix, top-1 agreement."""
    identical = sum(r.identical for r in results)
    steps = sum(r.reference_tokens for r in results)
    matches = sum(r.top1_matches for r in results)
    shortest = min((r.identical_prefix for r in results), default=0)
    return (
        f"identical text on {identical}/{len(results)} reference prompts (shortest identical "
        f"prefix {shortest} tokens); top-1 agreement {matches / max(steps, 1):.1%} of {steps} steps"
    )


def measure(model: str) -> list[PromptAgreement]:
    import torch

    from phi3_lsp.engine import ModelEngine
    from phi3_lsp.prefixes import common_prefix_length
    from phi3_lsp.sources import resolve_model

    source = resolve_model(model)
    prompts = reference_prompts(source.tokenizer_dir / "tokenizer.json")
    fp32 = ModelEngine.load(source, weights="fp32")
    prompt_ids = [fp32.tokenizer.encode_prompt(prompt) for prompt in prompts]
    references = [
        list(fp32.generate(ids, max_new_tokens=NEW_TOKENS).token_ids) for ids in prompt_ids
    ]
    del fp32
    int4 = ModelEngine.load(source, weights="int4")
    results = []
    for ids, reference in zip(prompt_ids, references, strict=True):
        generated = int4.generate(ids, max_new_tokens=NEW_TOKENS).token_ids
        with torch.inference_mode():
            logits = int4.model(input_ids=torch.tensor([ids + reference])).logits[0]
        # The logits at position i predict token i + 1.
        predicted = logits[len(ids) - 1 : len(ids) - 1 + len(reference)].argmax(dim=-1).tolist()
        results.append(
            PromptAgreement(
                prompt_tokens=len(ids),
                reference_tokens=len(reference),
                identical_prefix=common_prefix_length(generated, reference),
                identical=list(generated) == reference,
                top1_matches=sum(p == r for p, r in zip(predicted, reference, strict=True)),
            )
        )
    return results


def save(results: Sequence[PromptAgreement], path: Path) -> None:
    path.write_text(json.dumps([asdict(result) for result in results]), encoding="utf-8")


def load(path: Path) -> list[PromptAgreement]:
    return [PromptAgreement(**item) for item in json.loads(path.read_text(encoding="utf-8"))]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agreement", description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = measure(args.model)
    save(results, args.out)
    print(summarize(results))


if __name__ == "__main__":
    main()
