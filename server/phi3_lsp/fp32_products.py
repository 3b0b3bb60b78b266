"""The linear layers of an fp32 model read their weights at memory speed in short passes.

A one-token pass of an fp32 model is nearly all matrix-vector products, bound by how fast their
weights are read: torch's kernel reads them at 10-23 GB/s on a 2-core AMD EPYC that delivers
33-54, ours (`fp32_kernel.c`, for any x86-64 CPU with AVX2 and FMA) at 27-40.
`read_at_memory_speed` gives every fp32 `nn.Linear` a forward that takes passes of a few rows (a
decode pass and its drafted tokens) through our kernel, which gives each row the bits it gives
that row alone; longer passes (a prompt) keep torch's, which computes many rows faster. The
products differ from torch's in their last bits (the sums run in another order), as torch's own
one-row and many-row kernels differ from each other.

Most checkpoints hold their weights in bf16 (Phi-3-mini's do), and each bf16 value widens to
fp32 exactly: `keep_bf16_weights` leaves such linear weights in bf16, which our kernel widens as
it reads them, with the bits of their fp32 widening's products, from half the bytes. A longer
pass takes AMX tiles where the CPU has them (`fp32_tiles.c`: the rows' fp32 values as three bf16
parts each, summed to fp32's precision in an order of their own; a Phi-3-mini-sized prompt of
200 or 500 tokens read 2.2x as fast as through torch's products; a prompt's passes of any width
take them in `layer_kernel`), elsewhere torch's products of the weight widened a slice at a time.
The model computes what it computes with fp32 weights, in half the memory.

A checkpoint dequantized from GGUF's Q4_1 (SmolLM2's, here) holds fp32 weights whose every
block of 32 inputs is d * q + m exactly: `hold_as_blocks` keeps those as the blocks (24 bytes a
block against 128), which our kernel rebuilds exactly as it reads them, again with the fp32
weights' bits; and those dequantized from Q8_0 (d * q: SmolLM2's vocabulary projection, tied to
its input embedding) as theirs (36 bytes a block). SmolLM2's linear layers then take 80 MB
instead of 425 and its vocabulary projection 32 MB instead of 113 (their pages of the
checkpoint's mapping go back, see `file_pages`: loaded in-process, 661-664 MB resident after
four answers to ~500-token prompts, 738-751 with the Q4_1 blocks alone). A pass over its linear
layers and fp32 vocabulary projection of 1 / 6 / 16 rows took 14.0 / 22.6 / 39.5 ms with the
Q4_1 blocks instead of 27.3 / 34.3 / 51.5; whole passes of 1 / 16 rows 9.7-10.4 / 35.7-38.8 ms
with the Q8_0 blocks too instead of 14.9-15.5 / 43.4-46.6 (2 threads, Xeon). Longer passes widen
them for torch's products, as bf16-held ones."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional

from phi3_lsp.cpu_kernels import Q4_1, Q8_0, Fp32Kernel, held_blocks
from phi3_lsp.file_pages import FilePages
from phi3_lsp.precision import outputs_in_fp32, to_fp32_except
from phi3_lsp.quantize import input_embedding
from phi3_lsp.weight_files import read_header

ROWS_AT_MOST = 32
"""Passes of up to this many rows take our kernel where a weight is held in fp32: a decode pass
with its drafted tokens, a short prompt. For 16 / 32 / 48 rows, torch's products took 2.7 / 1.6
/ 1.4x our time over Phi-3-mini's layers in fp32, 1.3 / 1.1 / 0.97x over SmolLM2's; held to
AVX2, 1.3-1.8 / 1.0 / 0.85-1.1x (2 threads)."""
BF16_ROWS_AT_MOST = 128
"""The same where a weight is held in bf16, which torch's products must widen first, a read and
a write of the whole weight a pass. Whole passes after a 200-token prompt (2 threads, decoder
layers in one call where ours run, see `layer_kernel`), of 64 / 128 / 192 rows: Phi-3-mini-sized
3.1 / 6.5 / 9.7 s ours against 7.1 / 9.6 / 8.8 s torch's; SmolLM2 from a bf16 copy 112 / 224 /
347 ms against 149 / 231 / 320 ms (from its fp32 weights, at 64 / 128 rows: 162 / 305 ms
against 151 / 236 ms). A bf16 weight's products keep its fp32 widening's bits in the passes of
a bound both take (`read_at_memory_speed` can give fp32 weights this bound too)."""


WIDENED_ROWS = 512
"""A longer pass widens a bf16 weight this many output rows at a time, a slice that stays in
the cache for torch's products: Phi-3-mini's 16384x3072 up projection over 500 rows took 341 ms
this way, against 498 ms widened whole and 462 ms from fp32 weights (2 threads)."""


WIDENED_WHOLE = 1 << 22
"""... but a weight of at most this many values is widened whole: the slices' products, written
into the whole's, cost more than the cache saves. SmolLM2's 210 Q4_1-held weights (at most
1536x576) over 64 / 300 rows: 105.6 / 282.0 ms widened whole, 123.0 / 315.1 ms in slices of
512 rows, against 93.6 / 270.2 ms from fp32 weights (2 threads)."""


def stored_in_bf16(weights_dir: Path) -> bool:
    """True when every tensor of the checkpoint in `weights_dir` is bf16: loaded in bf16, it
    loses nothing. Reads only the files' headers (mapping a file would take its whole size
    in address space before the memory check has said whether it fits)."""
    files = sorted(weights_dir.glob("*.safetensors"))
    try:
        return bool(files) and all(_tensor_dtypes(file) == {"BF16"} for file in files)
    except (OSError, ValueError, KeyError, TypeError):
        return False  # the load itself will say what is wrong with the files


def _tensor_dtypes(file: Path) -> set[str]:
    """The dtypes of the tensors in a safetensors file, from its header."""
    _, tensors = read_header(file)
    return {entry["dtype"] for entry in tensors.values()}


def bytes_held_from_bf16(model: nn.Module) -> int:
    """Bytes the parameters of `model` (in any dtype, or on the meta device: only shapes count)
    take once `keep_bf16_weights` has turned it from a bf16 checkpoint."""
    embedding = input_embedding(model)
    kept = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Linear)}
    if embedding is not None:
        kept[id(embedding.weight)] = embedding.weight  # tied to the projection: held once
    in_bf16 = sum(weight.numel() for weight in kept.values())
    in_fp32 = sum(p.numel() for p in model.parameters() if id(p) not in kept)
    return 2 * in_bf16 + 4 * in_fp32


def keep_bf16_weights(model: nn.Module) -> None:
    """Turn `model`, loaded in its checkpoint's dtypes, to fp32, except the bf16 weights that
    widen as they are read: those of linear layers our kernel reads, and the input
    embedding's (its rows are given in fp32). A model on the meta device turns as it will
    once loaded."""
    embedding = input_embedding(model)
    keep: list[nn.Module] = [
        module
        for module in model.modules()
        if isinstance(module, nn.Linear)
        and module.weight.dtype == torch.bfloat16
        and (module.weight.is_meta or _our_kernel_reads(module.weight))
    ]
    if embedding is not None and embedding.weight.dtype == torch.bfloat16:
        keep.append(embedding)
        outputs_in_fp32(embedding)
    to_fp32_except(model, keep)


def read_at_memory_speed(
    model: nn.Module, kernel: Fp32Kernel, rows_at_most: int | None = None
) -> int:
    """Give the linear layers of `model` whose weights our kernel reads (fp32 or bf16) the short
    passes' forward, for passes of up to `rows_at_most` rows (default: `ROWS_AT_MOST` for an
    fp32 weight, `BF16_ROWS_AT_MOST` for a bf16 one); returns how many."""
    layers = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and _our_kernel_reads(module.weight):
            bound = rows_at_most or (
                BF16_ROWS_AT_MOST if module.weight.dtype == torch.bfloat16 else ROWS_AT_MOST
            )
            module.forward = _ShortPassForward(kernel, bound, module)  # type: ignore[method-assign,assignment]
            layers += 1
    return layers


def hold_as_blocks(model: nn.Module, kernel: Fp32Kernel) -> int:
    """Hold each fp32 weight of `model`'s linear layers with our forward (`read_at_memory_speed`)
    as Q4_1 or Q8_0 blocks where its values are exactly such blocks' (`Fp32Kernel.pack`);
    returns how many. Their products keep their bits; their fp32 values are let go, also where
    they are pages of the checkpoint's mapping (see `file_pages`). An input embedding tied to
    such a weight holds the same blocks and looks up rows rebuilt from them, the same values.
    Before `layer_kernel.run_layers_in_one_call`, whose layers keep the weights they were given."""
    embedding = input_embedding(model)
    pages = FilePages()
    held_weights = 0
    for module in model.modules():
        if not (isinstance(module, nn.Linear) and short_pass_rows(module) is not None):
            continue
        values = module.weight.detach()
        held = kernel.pack(values, Q4_1)
        held = kernel.pack(values, Q8_0) if held is None else held
        if held is None:
            continue
        tied = embedding is not None and embedding.weight is module.weight
        module.weight = nn.Parameter(held, requires_grad=False)
        if tied:
            assert embedding is not None  # (tied)
            embedding.weight = module.weight  # still one parameter, counted and read once
            embedding.forward = _RowsFromBlocks(kernel, embedding)  # type: ignore[method-assign,assignment]
        # At once: one weight's fp32 values at most are resident beside the blocks made so far
        # (SmolLM2's peak while holding: 597 MB; 999 with every weight's pages given back last).
        pages.release(values)
        held_weights += 1
    return held_weights


class _RowsFromBlocks:
    """An input embedding's forward where its weight is held as blocks: the rows looked up,
    rebuilt from their blocks (the fp32 values, exactly)."""

    __slots__ = ("_embedding", "kernel")

    def __init__(self, kernel: Fp32Kernel, embedding: nn.Embedding) -> None:
        self.kernel = kernel
        # Weakly, as `_ShortPassForward` holds its layer.
        self._embedding = weakref.ref(embedding)

    def __call__(self, token_ids: torch.Tensor) -> torch.Tensor:
        embedding = self._embedding()
        assert embedding is not None  # it is calling this
        rows = self.kernel.widen(embedding.weight.index_select(0, token_ids.reshape(-1)))
        return rows.reshape(*token_ids.shape, rows.shape[-1])


def reads_rows_alike(model: nn.Module) -> bool:
    """True when every linear layer of `model` has our forward: short passes then give each row
    the bits a one-row pass gives it (see `ROWS_AT_MOST`)."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    return bool(linears) and all(short_pass_rows(linear) is not None for linear in linears)


def short_pass_rows(module: nn.Module) -> int | None:
    """The most rows of a pass that take our kernel, for a linear layer with our forward; else
    None."""
    forward = module.forward
    return forward.rows_at_most if isinstance(forward, _ShortPassForward) else None


class _ShortPassForward:
    """A linear layer's forward: passes of up to `rows_at_most` rows through our kernel, longer
    ones through our tiles (a bf16-held weight, on a CPU with AMX) or torch's products."""

    __slots__ = ("_layer", "kernel", "rows_at_most")

    def __init__(self, kernel: Fp32Kernel, rows_at_most: int, layer: nn.Linear) -> None:
        self.kernel = kernel
        self.rows_at_most = rows_at_most
        # Weakly: the layer holds this forward, and a cycle would keep a dropped model's
        # weights until a full garbage collection.
        self._layer = weakref.ref(layer)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        layer = self._layer()
        assert layer is not None  # it is calling this
        rows = inputs.numel() // layer.in_features
        ours = (
            inputs.shape[-1] == layer.in_features
            and inputs.dtype == torch.float32
            and not torch.is_grad_enabled()  # our products have no gradient
        )
        if ours and rows <= self.rows_at_most:
            multiply = self.kernel.multiply
        elif ours and self.kernel.takes_on_tiles(layer.weight):
            multiply = self.kernel.multiply_on_tiles  # a bf16-held weight, a prompt's chunk
        elif held_blocks(layer.weight) is not None:
            return _widened_products(inputs, layer, self.kernel.widen)
        elif layer.weight.dtype == torch.bfloat16:
            return _widened_products(inputs, layer, lambda weight: weight)
        else:
            return functional.linear(inputs, layer.weight, layer.bias)
        products = multiply(inputs.reshape(rows, -1), layer.weight)
        if layer.bias is not None:
            products += layer.bias
        return products.reshape(*inputs.shape[:-1], layer.out_features)


def _widened_products(
    inputs: torch.Tensor, layer: nn.Linear, widen: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """torch's products of a layer whose weight is held in bf16 or as blocks, widened (by
    `widen` from blocks) to the inputs' dtype: whole where small (`WIDENED_WHOLE`), else a
    slice of `WIDENED_ROWS` rows at a time."""
    flat = inputs.reshape(-1, layer.in_features)
    if layer.out_features * layer.in_features <= WIDENED_WHOLE:
        widened = widen(layer.weight).to(inputs.dtype)
        return functional.linear(inputs, widened, layer.bias)
    products = torch.empty(len(flat), layer.out_features, dtype=inputs.dtype)
    for first in range(0, layer.out_features, WIDENED_ROWS):
        rows = slice(first, first + WIDENED_ROWS)
        bias = None if layer.bias is None else layer.bias[rows]
        widened = widen(layer.weight[rows]).to(inputs.dtype)
        products[:, rows] = functional.linear(flat, widened, bias)
    return products.reshape(*inputs.shape[:-1], layer.out_features)


def _our_kernel_reads(weight: torch.Tensor) -> bool:
    return (
        weight.dtype in (torch.float32, torch.bfloat16)
        and weight.is_contiguous()
        and weight.device.type == "cpu"
    )
