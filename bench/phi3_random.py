"""Phi-3-mini's full architecture with random weights, built once into the cache.

Decoding speed depends on tensor shapes, not on weight values, so this folder times
Phi-3-mini-sized generation without the real checkpoint (the model hub is out of reach here).
One exception: int4 checks tokens drafted from text that repeats, and random weights write
text that never does, so these timings are of one token per pass (real code would draft).
Built in fp32 on the CPU from the offline pack's Phi-3-mini config, then stored in bf16 with
`dtype: bfloat16`, as the published checkpoint is: loading it is the same work as loading the
real model. Run as its own process (`python -m bench.phi3_random --out DIR`) so that its ~15 GB
are given back before anything is timed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

FOLDER_NAME = "phi3-mini-random"
# fp32 weights of 3.82 B parameters plus room for the interpreter and the bf16 copy of one tensor.
BUILD_MEMORY_KIB = 16 * 1024 * 1024
FIRST_SPECIAL_TOKEN = 32000  # Phi-3's added tokens: <|endoftext|>, <|assistant|>, <|end|>, ...
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def random_phi3_dir(cache: Path) -> Path:
    """Where the random-weight Phi-3-mini folder lives."""
    return cache / "bench" / FOLDER_NAME


def is_built(folder: Path) -> bool:
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


def available_memory_kib() -> int:
    """MemAvailable from /proc/meminfo."""
    for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


def ensure_random_phi3(cache: Path) -> Path:
    """The folder, built by a child process the first time."""
    folder = random_phi3_dir(cache)
    if is_built(folder):
        copy_tokenizer_files(folder)
        return folder
    available = available_memory_kib()
    if available < BUILD_MEMORY_KIB:
        raise RuntimeError(
            f"building Phi-3-mini with random weights needs ~16 GiB free, {available // 1024} MiB "
            "are available: stop other model processes and run again"
        )
    command = [sys.executable, "-m", "bench.phi3_random", "--out", str(folder)]
    subprocess.run(command, check=True)
    return folder


def copy_tokenizer_files(folder: Path) -> None:
    """The offline pack's tokenizer files into `folder`, where they differ: hovers are timed
    with the tokenizer the server has now (the pack's can change: its token flags did)."""
    from phi3_lsp.offline_pack import ensure_asset

    pack = ensure_asset("phi3-mini")
    for name in TOKENIZER_FILES:
        source, copy = pack / name, folder / name
        if source.exists() and (not copy.exists() or source.read_bytes() != copy.read_bytes()):
            shutil.copy2(source, copy)


def silence_special_tokens(lm_head: Any) -> None:
    """Zero the output rows of the special tokens (EOS among them).

    Random weights otherwise give every prompt the same greedy answer, which can be EOS at once
    (it was, for this seed): the server would stop after one token and time no decoding. A zero
    logit never beats the maximum of 32,000 random ones, so answers run to the token limit.
    """
    lm_head[FIRST_SPECIAL_TOKEN:] = 0


def build(out: Path) -> None:
    """Build the model from the pack's config, save it with the pack's tokenizer files."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from phi3_lsp.offline_pack import ensure_asset

    pack = ensure_asset("phi3-mini")
    config = AutoConfig.from_pretrained(pack)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    silence_special_tokens(model.lm_head.weight.data)
    model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, max_shard_size="2GB")
    copy_tokenizer_files(staging)
    # Renamed only when complete, so an interrupted build is never taken for a finished one.
    staging.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    build(parser.parse_args().out)


if __name__ == "__main__":
    main()
