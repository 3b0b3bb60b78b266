"""`phi3-lsp demo`, the README's first command: a whole session, printed."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


async def run_demo(hf_home: Path, *options: str) -> tuple[int | None, str, str]:
    """`phi3-lsp demo` offline: its exit code, its output and its error output."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(hf_home))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phi3_lsp",
        "demo",
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 900)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_the_demo_runs_a_real_session_and_prints_each_answer(
    offline_pack: None, hf_home: Path
) -> None:
    returncode, output, _ = await run_demo(hf_home)
    assert returncode == 0, output
    assert "initialize: phi3-lsp" in output
    assert "ready" in output
    # The continuation, the hovered token, the architecture and the weights' read, each with
    # its latency.
    completion = output.split("inline completion at the end (")[1]
    assert completion.split("\n")[1].strip().startswith("' Paris")
    assert "| `Ġcapital` | 3575 |" in output
    assert "LlamaForCausalLM: 30 layers, hidden 576" in output
    # What a pass of SmolLM2 reads: its linear layers as the Q4_1 blocks they are held as
    # (0.08 GB) and its input embeddings, which are its output layer, as Q8_0 ones (0.03 GB).
    assert "0.11 GB of weights read in " in output
    assert output.count(" ms)") >= 4


async def test_the_demo_of_a_model_without_weights_shows_what_works_and_ends_cleanly(
    offline_pack: None, hf_home: Path
) -> None:
    # Offline, Phi-3-mini has its tokenizer and architecture but no weights.
    returncode, output, errors = await run_demo(
        hf_home, "--model", "microsoft/Phi-3-mini-4k-instruct"
    )
    assert returncode == 0, output + errors
    assert "Traceback" not in errors, errors
    assert "completions need weights" in output
    assert "| `␣capital` | `▁capital` | 7483 |" in output
    assert "Phi3ForCausalLM: 32 layers, hidden 3072, vocabulary 32064" in output
    assert "phi3.measureWeightReads: skipped, no weights are loaded" in output
