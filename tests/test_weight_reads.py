"""Timing reads of a loaded model's weights: every weight a decode pass multiplies, once."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from model_sources import checkpoint_bytes, folder_source, tiny_sliding_window_phi3
from phi3_lsp.engine import ModelEngine
from phi3_lsp.quantize import Int4Linear

EMBEDDINGS = "model.embed_tokens.weight"
BUFFERS_AT_MOST = 1024
"""Bytes of buffers a model holds beside its checkpoint's tensors (rotary frequencies)."""


def test_the_reads_cover_every_weight_but_the_input_embeddings(tiny_phi3_dir: Path) -> None:
    engine = ModelEngine.load(folder_source(tiny_phi3_dir, weights=True))
    reads = engine.read_weights()
    expected = checkpoint_bytes(tiny_phi3_dir, without=EMBEDDINGS)
    assert expected <= reads.bytes_read <= expected + BUFFERS_AT_MOST
    assert reads.seconds > 0
    assert reads.bytes_per_second == reads.bytes_read / reads.seconds


def test_tied_embeddings_are_read_once_as_the_vocabulary_projection(
    tmp_path: Path, tiny_phi3_dir: Path
) -> None:
    tiny_sliding_window_phi3(window=64, tied_embeddings=True).save_pretrained(tmp_path)
    shutil.copy2(tiny_phi3_dir / "tokenizer.json", tmp_path)
    engine = ModelEngine.load(folder_source(tmp_path, weights=True))
    reads = engine.read_weights()
    expected = checkpoint_bytes(tmp_path)  # the checkpoint stores the shared matrix once
    assert expected <= reads.bytes_read <= expected + BUFFERS_AT_MOST


def test_4bit_layers_are_read_as_their_codes(tiny_phi3_dir: Path) -> None:
    fp32 = ModelEngine.load(folder_source(tiny_phi3_dir, weights=True)).read_weights()
    int4_engine = ModelEngine.load(folder_source(tiny_phi3_dir, weights=True), weights="int4")
    int4 = int4_engine.read_weights()
    weights = [
        math.prod((layer.in_features, layer.out_features))
        for layer in int4_engine.model.modules()
        if isinstance(layer, Int4Linear)
    ]
    assert weights
    # Each fp32 weight's 4 bytes became half a byte of code (and a share of a group's scales).
    without_codes = fp32.bytes_read - 4 * sum(weights)
    assert without_codes + sum(weights) // 2 <= int4.bytes_read < fp32.bytes_read
