"""Our own CPU kernels, compiled on this machine on first use and kept in the cache.

- `int4_kernel.c`: rows times a 4-bit weight. On a 2-core AMD EPYC with AVX-512 BF16 it reads
  a one-row pass's weights at ~36 GB/s against torch's packed kernel's ~27 GB/s (the memory
  delivers ~37), and many rows 2.4-2.7x as fast. It has two ways to the same bits, bf16 dot
  products (VDPBF16PS) and fp32 multiply-adds, and takes the one faster on this CPU, timed once
  a process (`CpuKernels.take_the_faster_int4_way`): the dot products on that AMD EPYC (~2x as
  fast), the multiply-adds on a Xeon with AMX (1.1-1.5x).
- `attention_kernel.c`: attention over cached keys and values. One position's reads them at
  ~38 GB/s against torch SDPA's ~17 (Phi-3-mini-sized, 500-1,500 tokens); a prompt's positions
  take 0.4x SDPA's time (SmolLM2, 476 rows over 1,500 keys), each with the bits one position's
  attention gives it.
- `decoder_layer.c`: a whole decoder layer in one call, of a 4-bit model on the two above, of
  an fp32 one on those and `fp32_kernel.c` (see `layer_kernel`).

These need a CPU with AVX-512 BF16 and VBMI. Where it also has AMX-BF16 (Intel Xeon from its 4th
generation), they are built with `int4_tiles.c`, which takes the 4-bit products of passes over
more than 32 rows (a prompt's) on AMX tiles: products 3-6x as fast as `int4_kernel.c`'s on a
2-core Xeon, SmolLM2's prompts read 2.2-2.8x as fast.

One more is also built on its own, for any x86-64 CPU with AVX2 and FMA (in AVX-512 where the
CPU has it):

- `fp32_kernel.c`: a few rows times an fp32 weight, read at 27-40 GB/s against torch's
  10-23 GB/s, each row with the bits it gets alone (see `fp32_products`); or times a bf16
  weight widened exactly as it is read, the same bits from half the bytes; or times an fp32
  weight held as the exact Q4_1 or Q8_0 blocks it was dequantized from, the same bits from 3/16
  or 9/32 of them.

They need a C compiler (`$CC`, else `cc`); without one, on other CPUs, or when a build fails,
the model keeps torch's kernels and the log says why. A compiler that does not know AMX (GCC
before 11, for one) builds the kernels without `int4_tiles.c`, and the log says so.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from phi3_lsp.child_watch import OWN_GROUPS, kill, watched
from phi3_lsp.paths import build_once, cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Build:
    """One shared library of our kernels: what it is built from, and for which CPUs."""

    name: str
    sources: tuple[str, ...]
    cpu_flags: tuple[str, ...]
    """What its instructions need, as Linux's /proc/cpuinfo names them."""
    instruction_flags: tuple[str, ...]

    def missing_here(self) -> list[str]:
        """The CPU flags it needs that this CPU lacks."""
        return [flag for flag in self.cpu_flags if flag not in cpu_flags()]

    def runs_here(self) -> bool:
        return not self.missing_here()


KERNELS = Build(
    "cpu",
    ("int4_kernel.c", "attention_kernel.c", "fp32_kernel.c", "decoder_layer.c"),
    ("avx512f", "avx512bw", "avx512vl", "avx512vbmi", "avx512_bf16"),
    ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vbmi", "-mavx512bf16"),
)
TILES_FROM_ROWS = 33
"""Passes of this many rows or more take their 4-bit products on AMX tiles (`int4_tiles.c`),
whose sums can round apart from the vectors': more rows than any pass whose tokens are compared
with one-token passes (generation.CHECKED_ROWS_AT_MOST: drafted tokens; tested). A prompt's
passes take them at any width (`kv_cache.GrowingCache.reading_prompt`)."""
KERNELS_ON_TILES = Build(
    "cpu-tiles",
    (*KERNELS.sources, "int4_tiles.c", "fp32_tiles.c"),
    (*KERNELS.cpu_flags, "amx_tile", "amx_bf16"),
    (
        *KERNELS.instruction_flags,
        *("-mamx-tile", "-mamx-bf16", f"-DPHI3_TILES_FROM_ROWS={TILES_FROM_ROWS}"),
    ),
)
KERNEL_BUILDS = (KERNELS_ON_TILES, KERNELS)
"""The kernels' builds, the fastest first."""
FP32_BUILDS = (
    Build(
        "fp32-tiles",
        ("fp32_kernel.c", "fp32_tiles.c"),
        ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16"),
        ("-mavx512f", "-mavx512bf16", "-mamx-tile", "-mamx-bf16"),
    ),
    Build("fp32-avx512", ("fp32_kernel.c",), ("avx512f",), ("-mavx512f",)),
    Build("fp32-avx2", ("fp32_kernel.c",), ("avx2", "fma"), ("-mavx2", "-mfma")),
)
"""The fp32 kernel's builds, the fastest first (with AMX tiles for long passes over bf16-held
weights, `fp32_tiles.c`)."""
TILES_GROUP = 32
"""The fp32 tiles take weights of a multiple of this many inputs and outputs."""
HEADERS = ("vector_math.h", "int4_codes.h", "amx_tiles.h")
_COMMON_FLAGS = (
    "-O3",
    "-fopenmp",  # the threads are torch's: libgomp is loaded once, under one name
    "-shared",
    "-fPIC",
)
_BUILD_SECONDS = 120
OUTPUT_BLOCK = 64
"""The 4-bit kernel reads whole blocks of 64 output rows, as torch packs them for AVX-512."""
INPUT_GROUP = 32
"""Inputs that share a scale and zero in the 4-bit weights the kernel reads."""
HEAD_DIM_STEP, MAX_HEAD_DIM = 16, 128
"""The attention kernel takes heads of a multiple of 16 values, at most 128."""
_LAYER_SIZES = ("hidden", "heads", "kv_heads", "head_dim", "rotary_dim", "intermediate")

_pointer, _size = ctypes.c_void_p, ctypes.c_int64


_WAY_TIMINGS = 7
"""Alternate timings of each of the 4-bit kernel's two ways; the fastest of each counts."""
_MAX_PARTS = 3
_WEIGHT_KINDS = {"int4": 0, torch.float32: 1, torch.bfloat16: 2, torch.uint8: 3, torch.int8: 4}
"""decoder_layer.c's `WeightKind` of a 4-bit weight, and of fp32, bf16, Q4_1- and Q8_0-held ones
by dtype."""


class _Weight(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_int),
        ("values", _pointer),
        ("scales_and_zeros", _pointer),
        ("out_features", _size),
    ]


class _Product(ctypes.Structure):
    _fields_ = [("parts", _Weight * _MAX_PARTS), ("count", ctypes.c_int)]


class _DecoderLayer(ctypes.Structure):
    """decoder_layer.c's `DecoderLayer`, field by field."""

    _fields_ = [
        ("input_norm", _pointer),
        ("post_attention_norm", _pointer),
        ("qkv", _Product),
        ("output", _Product),
        ("gate_up", _Product),
        ("down", _Product),
        *((name, _size) for name in _LAYER_SIZES),
        ("norm_epsilon", ctypes.c_float),
        ("scaling", ctypes.c_float),
    ]


Int4Tensors = tuple[torch.Tensor, torch.Tensor]
"""A 4-bit weight as the kernel reads it: packed codes, scales and zeros (see int4_weights)."""
KernelWeight = torch.Tensor | Int4Tensors
"""A weight as the decoder layer kernel reads it: fp32 or bf16 [out, in] or Q4_1 or Q8_0 blocks
[out, in / 32, bytes a block] (see `Fp32Kernel.pack`), contiguous, or a 4-bit one."""
LayerProduct = tuple[KernelWeight, ...]
"""A product of a decoder layer: the outputs of 1 to 3 weights side by side (Phi-3 fuses its
query, key and value projections, a Llama checkpoint holds them apart)."""


class DecoderLayer:
    """One decoder layer as `phi3_decoder_layer` runs it (see `layer_kernel`).

    Holds the tensors whose memory the kernel reads, so they live as long as it may run.
    """

    def __init__(
        self,
        kernels: CpuKernels,
        norms: tuple[torch.Tensor, torch.Tensor],
        products: tuple[LayerProduct, LayerProduct, LayerProduct, LayerProduct],
        sizes: dict[str, int],
        norm_epsilon: float,
        scaling: float,
    ) -> None:
        """`norms` (input, post-attention) fp32 [hidden]; `products` query-key-value, output,
        gate-up and down; `sizes` hidden, heads, kv_heads, head_dim and intermediate (see
        decoder_layer.c for what they must be)."""
        self._function = kernels.decoder_layer_entry
        self._tensors = (norms, products)
        self.sizes = sizes
        qkv, output, gate_up, down = (_product(product) for product in products)
        self._layer = _DecoderLayer(
            norms[0].data_ptr(),
            norms[1].data_ptr(),
            qkv,
            output,
            gate_up,
            down,
            *(sizes.get(name, sizes["head_dim"]) for name in _LAYER_SIZES),  # rotary: see run
            norm_epsilon,
            scaling,
        )

    def run(
        self,
        hidden: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        keys: torch.Tensor,
        values: torch.Tensor,
        cached: int,
        prompt: bool,
    ) -> None:
        """The layer over `hidden` [rows, hidden] (contiguous fp32, changed in place), rotary
        cos and sin [rows, rotary_dim]; the rows' keys and values are written into `keys` and
        `values` [kv_heads, capacity, head_dim] (contiguous) after the `cached` held there.
        `prompt`: the rows are a prompt's (see `GrowingCache.reading_prompt`)."""
        cos, sin = (part.contiguous() for part in rotary)
        rotary_dim = cos.shape[-1]
        if rotary_dim % 2 or rotary_dim > self.sizes["head_dim"] or sin.shape != cos.shape:
            raise ValueError(f"the decoder layer kernel cannot rotate {rotary_dim} of a head")
        self._layer.rotary_dim = rotary_dim  # a model's rotary embedding tells it, per pass
        status = self._function(
            ctypes.byref(self._layer),
            hidden.data_ptr(),
            len(hidden),
            cos.data_ptr(),
            sin.data_ptr(),
            keys.data_ptr(),
            values.data_ptr(),
            cached,
            keys.stride(0),
            torch.get_num_threads(),
            prompt,
        )
        if status != 0:
            raise MemoryError("the decoder layer kernel found no memory for its rows")


def _product(weights: LayerProduct) -> _Product:
    if not 1 <= len(weights) <= _MAX_PARTS:
        raise ValueError(
            f"the decoder layer kernel takes 1 to 3 weights a product, not {len(weights)}"
        )
    return _Product((_Weight * _MAX_PARTS)(*map(_weight, weights)), len(weights))


def _weight(weight: KernelWeight) -> _Weight:
    if isinstance(weight, tuple):
        packed, scales_and_zeros = weight
        _check_int4_layout(packed, scales_and_zeros)
        return _Weight(
            _WEIGHT_KINDS["int4"], packed.data_ptr(), scales_and_zeros.data_ptr(), packed.shape[0]
        )
    if weight.dtype not in _WEIGHT_KINDS or not laid_out_for_fp32(weight):
        raise ValueError(
            "the decoder layer kernel reads contiguous fp32, bf16, Q4_1- or Q8_0-held weights only"
        )
    return _Weight(_WEIGHT_KINDS[weight.dtype], weight.data_ptr(), None, weight.shape[0])


def _check_int4_layout(packed: torch.Tensor, scales_and_zeros: torch.Tensor) -> None:
    """Raises ValueError unless the kernel reads this 4-bit weight rightly: contiguous, scales
    and zeros [out / OUTPUT_BLOCK, in / INPUT_GROUP, OUTPUT_BLOCK, 2] (by block, not torch's)."""
    out_features, in_features = packed.shape[0], packed.shape[1] * 2
    by_block = (out_features // OUTPUT_BLOCK, in_features // INPUT_GROUP, OUTPUT_BLOCK, 2)
    if tuple(scales_and_zeros.shape) != by_block:
        raise ValueError(f"the 4-bit kernel reads scales and zeros by block, {list(by_block)}")
    if not (packed.is_contiguous() and scales_and_zeros.is_contiguous()):
        raise ValueError("the 4-bit kernel reads contiguous codes, scales and zeros only")


class CpuKernels:
    """The compiled kernels."""

    def __init__(self, library: Path) -> None:
        loaded = ctypes.CDLL(str(library))
        self._int4_multiply = loaded.phi3_int4_multiply
        self._int4_multiply.restype = ctypes.c_int
        self._int4_multiply.argtypes = [
            *(_pointer, ctypes.c_int, _size, _size, _pointer, _pointer, _size, _pointer),
            *(ctypes.c_int, ctypes.c_int),
        ]
        self._use_bf16_dots = loaded.phi3_int4_use_bf16_dots
        self._use_bf16_dots.restype, self._use_bf16_dots.argtypes = None, [ctypes.c_int]
        self.int4_by_bf16_dots = False
        """Which of int4_kernel.c's two ways to the same bits its vectors take: bf16 dot
        products (VDPBF16PS) or fp32 multiply-adds (see `take_int4_way`)."""
        self._attend_causal = loaded.phi3_attend_causal
        self._attend_causal.restype = ctypes.c_int
        self._attend_causal.argtypes = [
            *(_pointer, _size, _size, _pointer, _pointer, _size, _size, _size, _size, _size),
            *(_size, _size, ctypes.c_float, _pointer, ctypes.c_int),
        ]
        tiles_from_rows = getattr(loaded, "phi3_int4_tiles_from_rows", None)
        self.tiles_from_rows: int | None = (tiles_from_rows() or None) if tiles_from_rows else None
        """The fewest rows whose 4-bit products run on AMX tiles (int4_tiles.c), or None where
        none do: built without them, or Linux does not lend this process the tiles."""
        fp32_tiles_ready = getattr(loaded, "phi3_fp32_tiles_ready", None)
        self.bf16_prompts_on_tiles = fp32_tiles_ready is not None and fp32_tiles_ready() == 1
        """Whether the decoder layer kernel multiplies a prompt's rows by bf16-held weights (of
        whole groups, `TILES_GROUP`) on AMX tiles (fp32_tiles.c), at any width."""
        self.decoder_layer_entry: Any = loaded.phi3_decoder_layer
        """`phi3_decoder_layer`, which `DecoderLayer` calls."""
        self.decoder_layer_entry.restype = ctypes.c_int
        self.decoder_layer_entry.argtypes = [
            *(_pointer, _pointer, _size, _pointer, _pointer, _pointer, _pointer, _size, _size),
            *(ctypes.c_int, ctypes.c_int),
        ]

    def take_int4_way(self, by_bf16_dots: bool) -> None:
        """Let the 4-bit vector kernel multiply by bf16 dot products (VDPBF16PS) or by fp32
        multiply-adds: the same products to the bit, at another speed on each CPU."""
        self._use_bf16_dots(by_bf16_dots)
        self.int4_by_bf16_dots = by_bf16_dots

    def take_the_faster_int4_way(self) -> float:
        """Time both ways of the 4-bit vector kernel on a product that stays in the cache (a few
        rows times a SmolLM2-sized weight: ~2 ms in all), take the faster, and return how many
        times as fast it was."""
        out_features, in_features, rows = 1536, 576, 5  # a whole group of rows, see int4_kernel.c
        generator = torch.Generator().manual_seed(0)
        codes = (out_features, in_features // 2)
        packed = torch.randint(0, 256, codes, dtype=torch.uint8, generator=generator)
        by_block = (out_features // OUTPUT_BLOCK, in_features // INPUT_GROUP, OUTPUT_BLOCK, 2)
        scales_and_zeros = (torch.randn(by_block, generator=generator) / 64).to(torch.bfloat16)
        inputs = torch.randn(rows, in_features, generator=generator)
        fastest = {True: float("inf"), False: float("inf")}
        for _ in range(_WAY_TIMINGS):
            for way in fastest:
                self.take_int4_way(way)
                started = time.perf_counter()
                self.multiply_int4(inputs, packed, scales_and_zeros)
                fastest[way] = min(fastest[way], time.perf_counter() - started)
        faster = fastest[True] < fastest[False]
        self.take_int4_way(faster)
        return max(fastest.values()) / min(fastest.values())

    def multiply_int4(
        self, rows: torch.Tensor, packed: torch.Tensor, scales_and_zeros: torch.Tensor
    ) -> torch.Tensor:
        """`rows @ weight.T` for rows [n, in] in bf16 or fp32 and a weight of codes in torch's
        AVX-512 packed 4-bit layout, scales and zeros by block (see int4_weights): products
        [n, out] in the rows' dtype, computed as torch's kernel computes them for the rows
        rounded to bf16 (each an fp32 sum rounded to bf16)."""
        if rows.dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"the 4-bit kernel takes bf16 or fp32 rows, not {rows.dtype}")
        _check_int4_layout(packed, scales_and_zeros)
        rows = rows.contiguous()
        out_features, in_features = packed.shape[0], packed.shape[1] * 2
        products = torch.empty(len(rows), out_features, dtype=rows.dtype)
        if len(rows) == 0:
            return products
        status = self._int4_multiply(
            rows.data_ptr(),
            rows.dtype == torch.float32,
            len(rows),
            in_features,
            packed.data_ptr(),
            scales_and_zeros.data_ptr(),
            out_features,
            products.data_ptr(),
            torch.get_num_threads(),
            0,  # not known to be a prompt's rows: on AMX tiles from TILES_FROM_ROWS only
        )
        if status != 0:
            raise MemoryError("the 4-bit kernel found no memory for its rows in bf16")
        return products

    def attend_one_position(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """Softmax attention of one position, query [heads, head_dim], over keys and values
        [kv_heads, tokens, head_dim] (fp32, see `can_attend`): outputs [heads, head_dim]."""
        if query.dim() != 2:
            raise ValueError("the attention kernel cannot take these queries, keys and values")
        return self.attend_causal(query.contiguous()[:, None], keys, values, scale)[0]

    def attend_causal(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """Causal attention of the last `rows` of the keys' positions, queries [heads, rows,
        head_dim]: row r sees the keys up to position tokens - rows + r. Outputs [rows, heads,
        head_dim], each row the bits `attend_one_position` gives it over the keys it sees."""
        if queries.dim() != 3 or not can_attend(queries, keys, values):
            raise ValueError("the attention kernel cannot take these queries, keys and values")
        heads, rows, head_dim = queries.shape
        kv_heads, tokens = keys.shape[0], keys.shape[1]
        outputs = torch.empty(rows, heads, head_dim)
        status = self._attend_causal(
            queries.data_ptr(),
            queries.stride(0),
            queries.stride(1),
            keys.data_ptr(),
            values.data_ptr(),
            heads,
            kv_heads,
            head_dim,
            rows,
            tokens,
            keys.stride(0),
            keys.stride(1),
            scale,
            outputs.data_ptr(),
            torch.get_num_threads(),
        )
        if status != 0:
            raise MemoryError("the attention kernel found no memory for its scores")
        return outputs


class Fp32Kernel:
    """The compiled fp32 kernel (`fp32_kernel.c`)."""

    def __init__(self, library: Path) -> None:
        loaded = ctypes.CDLL(str(library))
        self._multiply = {
            torch.float32: loaded.phi3_fp32_multiply,
            torch.bfloat16: loaded.phi3_bf16_weight_multiply,
            torch.uint8: loaded.phi3_q4_1_weight_multiply,
            torch.int8: loaded.phi3_q8_0_weight_multiply,
        }
        # rows, row count, inputs, weight, outputs, products, threads
        arguments: list[Any] = [_pointer, _size, _size, _pointer, _size, _pointer, ctypes.c_int]
        for function in self._multiply.values():
            function.restype = ctypes.c_int  # 0, or -1 where it found no memory
            function.argtypes = arguments
        # weight (or blocks), out, in (or rows, in), blocks (or values), threads
        self._pack = {Q4_1: loaded.phi3_q4_1_pack, Q8_0: loaded.phi3_q8_0_pack}
        self._widen = {Q4_1: loaded.phi3_q4_1_widen, Q8_0: loaded.phi3_q8_0_widen}
        for packs, widens in zip(self._pack.values(), self._widen.values(), strict=True):
            packs.restype, widens.restype = ctypes.c_int, None
            packs.argtypes = widens.argtypes = [_pointer, _size, _size, _pointer, ctypes.c_int]
        tiles_ready = getattr(loaded, "phi3_fp32_tiles_ready", None)
        self._on_tiles: Any = loaded.phi3_fp32_tiles_multiply if tiles_ready else None
        if self._on_tiles is not None:
            self._on_tiles.restype = ctypes.c_int
            self._on_tiles.argtypes = arguments
        self.has_tiles = tiles_ready is not None and tiles_ready() == 1
        """Whether `multiply_on_tiles` runs here: built with AMX tiles (`fp32_tiles.c`), and
        Linux lends this process the tile registers."""

    def multiply(self, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """`rows @ weight.T` in fp32 for fp32 rows [n, in] and a contiguous weight [out, in] in
        fp32 or bf16, or held as Q4_1 or Q8_0 blocks (`pack`): products [n, out], each with the
        same bits on any number of rows or threads, and a bf16 or block-held weight's the bits
        of its fp32 values'."""
        multiply = self._multiply.get(weight.dtype)
        if rows.dtype != torch.float32 or multiply is None:
            raise ValueError(
                "the fp32 kernel takes fp32 rows and fp32, bf16, Q4_1 or Q8_0 weights only"
            )
        if not weight.is_contiguous() or rows.dim() != 2 or rows.shape[1] != in_features(weight):
            raise ValueError("the fp32 kernel cannot take these rows and weight")
        if not laid_out_for_fp32(weight):
            raise ValueError("the fp32 kernel takes 8-bit weights as Q4_1 or Q8_0 blocks only")
        products, status = _multiplied(multiply, rows, weight)
        if status != 0:
            raise MemoryError("the fp32 kernel found no memory for its rows")
        return products

    def pack(self, weight: torch.Tensor, blocks: BlockFormat) -> torch.Tensor | None:
        """An fp32 weight [out, in] as `blocks` [out, in / 32, bytes a block], when each block
        of 32 inputs holds them exactly, as in a checkpoint dequantized from GGUF's Q4_1 or Q8_0;
        else None. `multiply` and `widen` give the fp32 weight's bits from it."""
        if weight.dtype != torch.float32 or weight.dim() != 2 or not weight.is_contiguous():
            return None
        out, in_ = weight.shape
        if in_ % BLOCK_INPUTS != 0:
            return None
        held = torch.empty(out, in_ // BLOCK_INPUTS, blocks.block_bytes, dtype=blocks.dtype)
        exact = self._pack[blocks](
            weight.data_ptr(), out, in_, held.data_ptr(), torch.get_num_threads()
        )
        return held if exact else None

    def widen(self, held: torch.Tensor) -> torch.Tensor:
        """The fp32 values [out, in] of a weight (or some of its rows) held as blocks (`pack`)."""
        blocks = held_blocks(held)
        if blocks is None or not held.is_contiguous():
            raise ValueError("widen takes contiguous Q4_1 or Q8_0 blocks [out, in / 32, bytes]")
        values = torch.empty(held.shape[0], in_features(held))
        self._widen[blocks](
            held.data_ptr(),
            held.shape[0],
            values.shape[1],
            values.data_ptr(),
            torch.get_num_threads(),
        )
        return values

    def takes_on_tiles(self, weight: torch.Tensor) -> bool:
        """Whether `multiply_on_tiles` takes this weight here."""
        return self.has_tiles and fits_fp32_tiles(weight)

    def multiply_on_tiles(self, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """`rows @ weight.T` for fp32 rows [n, in] and a bf16 weight [out, in] that
        `takes_on_tiles`, on AMX tiles: fp32 products, rounded as fp32 sums round (not to the
        bits of `multiply`'s), each row's the same bits beside any rows and on any threads."""
        if not self.takes_on_tiles(weight):
            raise ValueError("the fp32 tiles do not take this weight here")
        if rows.dtype != torch.float32 or rows.dim() != 2 or rows.shape[1] != weight.shape[1]:
            raise ValueError("the fp32 tiles take fp32 rows [n, in] only")
        products, status = _multiplied(self._on_tiles, rows, weight)
        if status != 0:
            raise MemoryError("the fp32 tiles found no memory for their rows")
        return products


@dataclass(frozen=True)
class BlockFormat:
    """How an fp32 weight is held as the exact blocks of 32 inputs it was dequantized from
    (`Fp32Kernel.pack`): [out, in / 32, block_bytes] of `dtype`, fp32_kernel.c's layout."""

    dtype: torch.dtype
    block_bytes: int


BLOCK_INPUTS = 32
"""Inputs a block holds."""
Q4_1 = BlockFormat(torch.uint8, 24)
"""GGUF's Q4_1: each block's scale d and least value m in fp32, then 16 bytes of 4-bit codes q;
each value d * q + m."""
Q8_0 = BlockFormat(torch.int8, 36)
"""GGUF's Q8_0: each block's scale d in fp32, then 32 signed 8-bit codes q; each value d * q."""


def held_blocks(weight: torch.Tensor) -> BlockFormat | None:
    """The blocks `weight` holds an fp32 weight as (`Fp32Kernel.pack`); None if it holds none."""
    for blocks in (Q4_1, Q8_0):
        laid_out = weight.dim() == 3 and weight.shape[2] == blocks.block_bytes
        if weight.dtype == blocks.dtype and laid_out:
            return blocks
    return None


def laid_out_for_fp32(weight: torch.Tensor) -> bool:
    """Whether our fp32 kernel reads `weight` as it lies: a contiguous fp32 or bf16 [out, in], or
    contiguous blocks (`held_blocks`)."""
    laid_out = weight.dim() == 2 if weight.is_floating_point() else held_blocks(weight) is not None
    return laid_out and weight.is_contiguous()


def in_features(weight: torch.Tensor) -> int:
    """The inputs of a weight [out, in] our fp32 kernel reads, also one held as blocks."""
    return weight.shape[1] * (BLOCK_INPUTS if held_blocks(weight) else 1)


def fits_fp32_tiles(weight: torch.Tensor) -> bool:
    """Whether the fp32 tiles (fp32_tiles.c) take this weight where the CPU lends them: bf16,
    contiguous, in whole groups of `TILES_GROUP` inputs and outputs."""
    return (
        weight.dtype == torch.bfloat16
        and weight.dim() == 2
        and weight.is_contiguous()
        and weight.shape[0] % TILES_GROUP == 0
        and weight.shape[1] % TILES_GROUP == 0
    )


def _multiplied(
    function: Any, rows: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, Any]:
    """The products [n, out] an fp32 kernel's `function` writes for rows [n, in] and a weight
    [out, in] on torch's threads, and what it returns."""
    rows = rows.contiguous()
    products = torch.empty(len(rows), weight.shape[0])
    returned = function(
        rows.data_ptr(),
        len(rows),
        rows.shape[1],
        weight.data_ptr(),
        weight.shape[0],
        products.data_ptr(),
        torch.get_num_threads(),
    )
    return products, returned


def can_attend(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> bool:
    """Whether the attention kernels take these: fp32; queries [heads, head_dim] (one
    position) or [heads, rows, head_dim] (each row's values contiguous, no more rows than
    keys); keys and values [kv_heads, tokens, head_dim] laid out alike, each token's values
    contiguous; heads a multiple of kv_heads; head_dim a multiple of 16 up to 128."""
    tensors = (queries, keys, values)
    if any(t.dtype != torch.float32 for t in tensors) or keys.dim() != 3:
        return False
    if queries.dim() == 3:
        heads, rows, head_dim = queries.shape
        if queries.stride(2) != 1 or not 0 < rows <= keys.shape[1]:
            return False
    elif queries.dim() == 2:
        heads, head_dim = queries.shape
    else:
        return False
    return (
        keys.shape == values.shape
        and keys.stride() == values.stride()
        and keys.stride(2) == 1
        and keys.shape[2] == head_dim
        and keys.shape[1] > 0
        and heads % keys.shape[0] == 0
        and head_dim % HEAD_DIM_STEP == 0
        and head_dim <= MAX_HEAD_DIM
    )


@functools.cache
def own_kernels() -> CpuKernels | None:
    """This machine's build of the kernels, or None (logged once) where they cannot run or
    build."""
    built = _first_library(KERNEL_BUILDS, "4-bit products and attention use torch's kernels")
    if built is None:
        return None
    kernels = CpuKernels(built[1])
    times_as_fast = kernels.take_the_faster_int4_way()
    ways = ("bf16 dot products", "fp32 multiply-adds")
    taken, other = ways if kernels.int4_by_bf16_dots else ways[::-1]
    log.info("4-bit products take %s: %.1fx as fast as %s here", taken, times_as_fast, other)
    if kernels.tiles_from_rows is not None:
        log.info(
            "4-bit products of prompts and of passes of %d rows or more run on AMX tiles",
            kernels.tiles_from_rows,
        )
    return kernels


@functools.cache
def own_fp32_kernel() -> Fp32Kernel | None:
    """The fp32 kernel in the widest vectors this CPU has, or None (logged once) where it
    cannot run or build."""
    built = _first_library(FP32_BUILDS, "fp32 products use torch's kernels")
    if built is None:
        return None
    build, library = built
    log.info("fp32 products of short passes use our kernel built for %s", build.name)
    return Fp32Kernel(library)


def _first_library(builds: tuple[Build, ...], otherwise: str) -> tuple[Build, Path] | None:
    """The first of `builds` (the best first) that runs on this CPU and builds, and its
    library."""
    runnable = [build for build in builds if build.runs_here()]
    if not runnable:
        log.info("%s: this CPU lacks %s", otherwise, ", ".join(builds[-1].missing_here()))
        return None
    for build in runnable:
        try:
            return build, build_library(build, cache_dir(), compiler_command())
        except (OSError, subprocess.SubprocessError) as error:
            failure = error
            if build is not runnable[-1]:
                log.warning("Our %s kernels did not build (%s); trying the next", build.name, error)
    log.warning("%s, ours did not build: %s", otherwise, failure)
    return None


def build_library(build: Build, cache: Path, compiler: list[str]) -> Path:
    """`build`'s shared library, compiled by `compiler` into `cache` unless it is there."""
    if not compiler or shutil.which(compiler[0]) is None:
        raise FileNotFoundError(f"no C compiler: {shlex.join(compiler) or 'none'}")
    command = [*compiler, *_COMMON_FLAGS, *build.instruction_flags]
    sources = [Path(__file__).with_name(name) for name in build.sources]
    headers = [Path(__file__).with_name(name) for name in HEADERS]
    key = hashlib.sha256(
        "\0".join(
            [*command, platform.machine(), *(file.read_text() for file in (*sources, *headers))]
        ).encode()
    ).hexdigest()[:16]
    library = f"{build.name}_kernels.so"

    def compile_into(staging: Path) -> None:
        # In a process group of its own, killed whole: the compiler a wrapper (ccache, distcc, a
        # script) starts goes with it. A compiler that hangs (a wrapper, a network) is killed at
        # its time limit, on Ctrl-C (which then reaches the caller only) and with the server.
        with (
            subprocess.Popen(
                [*command, "-o", str(staging / library), *map(str, sources)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=OWN_GROUPS,
            ) as compiling,
            watched(compiling, with_its_group=OWN_GROUPS),
        ):
            try:
                stdout, stderr = compiling.communicate(timeout=_BUILD_SECONDS)
            except BaseException:  # too slow, or the caller interrupted
                kill(compiling, with_its_group=OWN_GROUPS)
                raise
        if compiling.returncode != 0:
            output = (stderr or stdout).strip().splitlines()[-3:]
            raise OSError(f"{shlex.join(compiler)} failed: {' / '.join(output)}")
        log.info("Built our %s kernels with %s", build.name, shlex.join(compiler))

    entry = cache / "kernels" / f"{build.name}-{key}"
    return build_once(entry, compile_into, {"command": command}) / library


def compiler_command() -> list[str]:
    """The C compiler the user chose (`$CC`), else `cc`."""
    return shlex.split(os.environ.get("CC", "cc"))


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them; empty elsewhere."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()
