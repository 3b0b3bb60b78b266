"""`phi3-lsp demo`, the README's first command: a whole session, printed."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


async def test_the_demo_runs_a_real_session_and_prints_each_answer(
    offline_pack: None, hf_home: Path
) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(hf_home))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phi3_lsp",
        "demo",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 900)
    output = stdout.decode()
    assert process.returncode == 0, output
    assert "initialize: phi3-lsp" in output
    assert "ready" in output
    # The continuation, the hovered token, the architecture and the weights' read, each with
    # its latency.
    completion = output.split("inline completion at the end (")[1]
    assert completion.split("\n")[1].strip().startswith("' Paris")
    assert "| `Ġcapital` | 3575 |" in output
    assert "LlamaForCausalLM: 30 layers, hidden 576" in output
    # SmolLM2's 134,515,008 fp32 parameters, its input embeddings being its output layer.
    assert "0.54 GB of weights read in " in output
    assert output.count(" ms)") >= 4
