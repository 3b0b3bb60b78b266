"""The memory floor of a decode pass: the bytes it must read over this machine's read bandwidth.

A decode pass reads every weight it multiplies once, and the keys and values of every token in
context; nothing can make it faster than those bytes take to stream from memory.
`python -m bench.memory_floor --weights-dir DIR --weights FORMAT` measures the read bandwidth
now (best of 5 sums over a 1 GiB buffer on every core, as the server runs) and prints JSON:
`MemoryFloor` for that checkpoint in that format.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors import safe_open

_BUFFER_FLOATS = 1 << 28  # 1 GiB of fp32: far beyond any cache
_TRIES = 5
_EMBEDDINGS = "model.embed_tokens.weight"


@dataclass(frozen=True)
class MemoryFloor:
    read_bytes_per_second: float
    weight_bytes: int
    """Bytes of weights one decode pass reads (a pass reads one row of the input embeddings)."""
    kv_bytes_per_token: int
    """Bytes of keys and values a pass reads for each token in context (fp32 cache)."""

    def pass_bytes(self, context_tokens: float) -> float:
        """The bytes a decode pass reads with `context_tokens` in context."""
        return self.weight_bytes + self.kv_bytes_per_token * context_tokens

    def pass_seconds(self, context_tokens: float) -> float:
        """The least time a decode pass can take with `context_tokens` in context."""
        return self.pass_bytes(context_tokens) / self.read_bytes_per_second


def read_bandwidth() -> float:
    """Bytes per second that summing a large fp32 buffer reads, on one thread per core."""
    import torch

    from phi3_lsp.scheduling import physical_cores

    torch.set_num_threads(physical_cores())
    buffer = torch.ones(_BUFFER_FLOATS)
    best = float("inf")
    for _ in range(_TRIES):
        started = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - started)
    return buffer.numel() * buffer.element_size() / best


def fp32_weight_bytes(weights_dir: Path, tied: bool, *, held_in_bf16: bool = False) -> int:
    """Bytes of every tensor in the checkpoint but the input embeddings (unless the vocabulary
    projection is the same matrix): 4 a value, 2 where the server holds a bf16 checkpoint's
    weights in bf16 for the fp32 format (see phi3_lsp.fp32_products)."""
    elements = 0
    for file in sorted(weights_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as tensors:
            # safe_open has keys() but cannot be iterated itself.
            names = [name for name in tensors.keys() if name != _EMBEDDINGS or tied]  # noqa: SIM118
            elements += sum(math.prod(tensors.get_slice(name).get_shape()) for name in names)
    return (2 if held_in_bf16 else 4) * elements


def int4_weight_bytes(weights_dir: Path) -> int:
    """The 4-bit layers and the vocabulary screen, as the server's cache stores them."""
    from phi3_lsp.int4_cache import TENSORS_FILE, int4_entry

    return (int4_entry(weights_dir) / TENSORS_FILE).stat().st_size


def kv_bytes_per_token(config: dict[str, object]) -> int:
    def number(key: str, default: int | None = None) -> int:
        value = config.get(key, default)
        assert isinstance(value, int), f"config.json has no integer {key}"
        return value

    heads = number("num_attention_heads")
    head_dim = number("head_dim", number("hidden_size") // heads)
    kv_heads = number("num_key_value_heads", heads)
    return 2 * number("num_hidden_layers") * kv_heads * head_dim * 4


def measure(weights_dir: Path, weights: str) -> MemoryFloor:
    config = json.loads((weights_dir / "config.json").read_text(encoding="utf-8"))
    if weights == "int4":
        weight_bytes = int4_weight_bytes(weights_dir)
    else:
        from phi3_lsp.cpu_kernels import own_fp32_kernel
        from phi3_lsp.fp32_products import stored_in_bf16

        held_in_bf16 = own_fp32_kernel() is not None and stored_in_bf16(weights_dir)
        tied = bool(config.get("tie_word_embeddings"))
        weight_bytes = fp32_weight_bytes(weights_dir, tied, held_in_bf16=held_in_bf16)
    return MemoryFloor(read_bandwidth(), weight_bytes, kv_bytes_per_token(config))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_floor", description=__doc__)
    parser.add_argument("--weights-dir", type=Path, required=True)
    parser.add_argument("--weights", choices=("fp32", "int4"), required=True)
    args = parser.parse_args()
    print(json.dumps(asdict(measure(args.weights_dir, args.weights))))


if __name__ == "__main__":
    main()
