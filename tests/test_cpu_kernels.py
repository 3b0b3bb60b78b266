"""Our CPU kernels: torch's products and attention, bits that do not depend on other rows or
threads, and torch's kernels kept when ours cannot build."""

from __future__ import annotations

import ctypes
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from phi3_lsp.cpu_kernels import (
    KERNEL_BUILDS,
    KERNELS,
    KERNELS_ON_TILES,
    TILES_FROM_ROWS,
    CpuKernels,
    build_library,
    compiler_command,
    own_kernels,
)
from phi3_lsp.int4_weights import GROUP_SIZE, Int4Weight

pytestmark = pytest.mark.skipif(
    not KERNELS.runs_here() or torch.backends.cpu.get_cpu_capability() != "AVX512",
    reason="the kernels need AVX-512 BF16 and VBMI, and torch's AVX-512 layout",
)


@pytest.fixture(
    scope="module",
    params=[build for build in KERNEL_BUILDS if build.runs_here()],
    ids=lambda build: build.name,
)
def kernel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CpuKernels:
    """Each build of the kernels that runs on this CPU: on AMX tiles too where it has them."""
    cache = tmp_path_factory.mktemp("cache")
    return CpuKernels(build_library(request.param, cache, compiler_command()))


@pytest.fixture(params=[True, False], ids=["bf16-dots", "multiply-adds"])
def int4_kernel(kernel: CpuKernels, request: pytest.FixtureRequest) -> CpuKernels:
    """Each build, its 4-bit vectors taking each of their two ways to the same products."""
    kernel.take_int4_way(by_bf16_dots=request.param)
    return kernel


@pytest.fixture(scope="module")
def weight() -> Int4Weight:
    torch.manual_seed(0)
    return Int4Weight.quantize(torch.randn(256, 512))


def torch_kernel(rows: torch.Tensor, weight: Int4Weight) -> torch.Tensor:
    products: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
        rows, weight.packed, GROUP_SIZE, weight.scales_by_group().contiguous()
    )
    return products


def error_to_exact(products: torch.Tensor, rows: torch.Tensor, weight: Int4Weight) -> float:
    exact = rows.double() @ weight._unpacked(0, weight.out_features).double().T
    return float((products.double() - exact).norm() / exact.norm())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("row_count", [1, 7, 33, 64, 300])  # from 33: on tiles where they run
def test_it_computes_what_torchs_kernel_computes(
    int4_kernel: CpuKernels, weight: Int4Weight, row_count: int, dtype: torch.dtype
) -> None:
    rows = torch.randn(row_count, weight.in_features).to(torch.bfloat16)
    ours, theirs = (
        int4_kernel.multiply_int4(rows.to(dtype), weight.packed, weight.scales_and_zeros),
        torch_kernel(rows, weight),
    )
    assert ours.dtype == dtype
    ours = ours.to(torch.bfloat16)  # fp32 products are the bf16 ones widened
    # The same sums in another order: rarely a bf16 rounding step apart, never further, except
    # where terms of ~300 cancel to ~0.001: there fp32's rounding of the terms shows.
    differ = ours != theirs
    assert differ.float().mean() < 0.01, f"{differ.float().mean():.2%} of outputs differ"
    terms = rows.double().abs() @ weight._unpacked(0, weight.out_features).double().abs().T
    apart = (ours.double() - theirs.double()).abs()
    assert (apart <= 2**-7 * theirs.double().abs() + 2**-20 * terms).all()
    assert error_to_exact(ours, rows, weight) <= 1.05 * error_to_exact(theirs, rows, weight)


@pytest.mark.parametrize(
    ("row_count", "fewer"),
    [
        (7, (1, 2, 3, 4, 5, 6)),  # every way the vectors group rows
        (TILES_FROM_ROWS + 7, (TILES_FROM_ROWS,)),  # a prompt's rows: on tiles where they run
        (100, (TILES_FROM_ROWS, 64)),
    ],
)
def test_a_rows_products_depend_on_nothing_but_the_row(
    int4_kernel: CpuKernels, weight: Int4Weight, row_count: int, fewer: tuple[int, ...]
) -> None:
    # A row must give the same bits in any pass of its kind (a drafted token's: those of a
    # one-row pass; a prompt's: those of any prompt pass), on 1 thread or 2.
    rows = torch.randn(row_count, weight.in_features).to(torch.bfloat16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        on_one_thread = int4_kernel.multiply_int4(rows, weight.packed, weight.scales_and_zeros)
        torch.set_num_threads(2)
        on_two_threads = int4_kernel.multiply_int4(rows, weight.packed, weight.scales_and_zeros)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(on_one_thread, on_two_threads)
    for count in fewer:
        some = int4_kernel.multiply_int4(rows[-count:], weight.packed, weight.scales_and_zeros)
        assert torch.equal(some, on_two_threads[-count:]), f"the last {count} rows differ"


def linux_lends_amx_tiles() -> bool:
    """Whether Linux lets this process use AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM for
    XFEATURE_XTILEDATA, as int4_tiles.c asks): kernels before 5.16 and some sandboxes do not."""
    sys_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata = 158, 0x1023, 18
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.syscall(sys_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) == 0)


@pytest.mark.skipif(not KERNELS_ON_TILES.runs_here(), reason="the tiles need AMX-BF16")
def test_a_prompts_products_take_the_tiles_and_checked_passes_do_not(tmp_path: Path) -> None:
    if not linux_lends_amx_tiles():
        pytest.skip("Linux lends this process no AMX tiles: the vectors take every pass")
    # A sum that the order of its additions decides: 2^24, 28 ones, -2^24 (exactly 28). The
    # vector kernel adds one product at a time, and each one is lost against 2^24 (0); the
    # tile products of the Xeons we measured add a group's products their own way and keep
    # some (14). Passes whose tokens are compared with one-token passes (drafted tokens, see
    # generation) must keep the vectors.
    weight = torch.ones(64, GROUP_SIZE)
    weight[:, 29], weight[:, 30] = -8.0, 7.0  # codes scaled by exactly 1
    int4 = Int4Weight.quantize(weight)
    row = torch.ones(GROUP_SIZE)
    row[0], row[29], row[30], row[31] = 2.0**24, 0.0, 0.0, -(2.0**24)
    kernels = CpuKernels(build_library(KERNELS_ON_TILES, tmp_path, compiler_command()))

    def products(count: int) -> torch.Tensor:
        return kernels.multiply_int4(row.repeat(count, 1), int4.packed, int4.scales_and_zeros)

    alone = products(1)
    vectors = TILES_FROM_ROWS - 1  # more than any checked pass: see test_kernel_builds
    assert torch.equal(products(vectors), alone.repeat(vectors, 1))
    assert not torch.equal(products(TILES_FROM_ROWS)[0], alone[0])
    own = own_kernels()
    assert own is not None and own.tiles_from_rows == TILES_FROM_ROWS


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("out_features", "in_features"), [(256, 512), (576, 1536)])
def test_both_ways_give_the_same_bits(
    kernel: CpuKernels, dtype: torch.dtype, out_features: int, in_features: int
) -> None:
    # Each CPU takes the way that is faster on it: its text must not depend on which. Inputs
    # of many magnitudes, so that a group's sums round, and in another order round apart.
    weight = Int4Weight.quantize(torch.randn(out_features, in_features))
    for row_count in (*range(1, 8), 11, TILES_FROM_ROWS - 1):  # every way the vectors group rows
        magnitudes = 2.0 ** torch.randint(-24, 24, (row_count, in_features))
        rows = (torch.randn(row_count, in_features) * magnitudes).to(dtype)
        products = []
        for by_bf16_dots in (True, False):
            kernel.take_int4_way(by_bf16_dots)
            products.append(kernel.multiply_int4(rows, weight.packed, weight.scales_and_zeros))
        assert torch.equal(*products), f"{row_count} rows differ"


def test_fp32_rows_give_the_products_of_the_rows_rounded_to_bf16(
    int4_kernel: CpuKernels, weight: Int4Weight
) -> None:
    # A layer passes its fp32 inputs as they are: rounding them (and the products) is the
    # kernel's work, and must not change a bit of what the layer computes.
    rows = torch.randn(5, weight.in_features)
    from_fp32 = int4_kernel.multiply_int4(rows, weight.packed, weight.scales_and_zeros)
    from_bf16 = int4_kernel.multiply_int4(
        rows.to(torch.bfloat16), weight.packed, weight.scales_and_zeros
    )
    assert from_fp32.dtype == torch.float32
    assert torch.equal(from_fp32, from_bf16.float())


def test_no_rows_give_no_products(kernel: CpuKernels, weight: Int4Weight) -> None:
    rows = torch.empty(0, weight.in_features)
    products = kernel.multiply_int4(rows, weight.packed, weight.scales_and_zeros)
    assert products.shape == (0, weight.out_features)


def test_the_4_bit_layers_use_it_on_this_cpu(weight: Int4Weight) -> None:
    # 64 x 256 outputs: some round apart from torch's kernel's, so the two can be told apart.
    rows = torch.randn(64, weight.in_features).to(torch.bfloat16)
    kernels = own_kernels()
    assert kernels is not None
    ours = kernels.multiply_int4(rows, weight.packed, weight.scales_and_zeros)
    assert torch.equal(weight.multiply(rows), ours)
    assert not torch.equal(torch_kernel(rows, weight), ours)


def test_a_weight_stored_by_a_cpu_without_our_kernel_multiplies_the_same(
    weight: Int4Weight,
) -> None:
    # Such a CPU stores scales group by group (torch's layout); read here, they are turned.
    stored = {"w.packed": weight.packed, "w.scales_and_zeros": weight.scales_by_group()}
    read = Int4Weight.from_tensors(stored, "w", (weight.out_features, weight.in_features))
    rows = torch.randn(3, weight.in_features).to(torch.bfloat16)
    assert torch.equal(read.multiply(rows), weight.multiply(rows))


def test_scales_in_torchs_layout_are_refused(kernel: CpuKernels, weight: Int4Weight) -> None:
    rows = torch.randn(1, weight.in_features)
    by_group = weight.scales_by_group().contiguous()
    with pytest.raises(ValueError, match="by block"):
        kernel.multiply_int4(rows, weight.packed, by_group)


FALLBACK_CHECK = """
import logging, torch
from phi3_lsp.int4_weights import GROUP_SIZE, Int4Weight
logging.basicConfig(level=logging.INFO, format="%(message)s")
torch.manual_seed(0)
weight = Int4Weight.quantize(torch.randn(128, 256))
rows = torch.randn(2, 256).to(torch.bfloat16)
scales = weight.scales_and_zeros  # torch's layout: our kernel does not run
theirs = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, weight.packed, GROUP_SIZE, scales)
# A weight stored where our kernel ran holds its scales by block: [blocks, groups, 64, 2].
by_block = scales.reshape(8, 2, 64, 2).transpose(0, 1).contiguous()
stored = {"w.packed": weight.packed, "w.scales_and_zeros": by_block}
read = Int4Weight.from_tensors(stored, "w", (128, 256))
print(torch.equal(weight.multiply(rows), theirs), torch.equal(read.multiply(rows), theirs))
"""


def test_without_a_compiler_the_model_keeps_torchs_kernels(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FALLBACK_CHECK],
        capture_output=True,
        text=True,
        env={**os.environ, "CC": "no-such-cc", "PHI3_LSP_CACHE": str(tmp_path)},
        check=True,
    )
    assert result.stdout.strip() == "True True"
    assert (
        "4-bit products and attention use torch's kernels, ours did not build: no C compiler"
        in (result.stderr)
    )


TILES_CHECK = """
import logging
from phi3_lsp.cpu_kernels import own_kernels
logging.basicConfig(level=logging.INFO, format="%(message)s")
kernels = own_kernels()
print(kernels is not None and kernels.tiles_from_rows is None)
"""


@pytest.mark.skipif(not KERNELS_ON_TILES.runs_here(), reason="the tiles need AMX-BF16")
def test_a_compiler_without_amx_builds_the_kernels_without_the_tiles(tmp_path: Path) -> None:
    # GCC before 11 knows no AMX: the kernels must not go with the tiles.
    compiler = tmp_path / "old-cc"
    compiler.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" -mamx-tile "*) echo "unrecognized -mamx-tile" >&2; exit 1;; esac\n'
        f'exec {shlex.join(compiler_command())} "$@"\n'
    )
    compiler.chmod(0o755)
    result = subprocess.run(
        [sys.executable, "-c", TILES_CHECK],
        capture_output=True,
        text=True,
        env={**os.environ, "CC": str(compiler), "PHI3_LSP_CACHE": str(tmp_path / "cache")},
        check=True,
    )
    assert result.stdout.strip() == "True"
    assert "Our cpu-tiles kernels did not build" in result.stderr


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(32, 32, 96), (9, 3, 64)])
@pytest.mark.parametrize("tokens", [1, 37, 600])
def test_one_positions_attention_is_sdpas(
    kernel: CpuKernels, heads: int, kv_heads: int, head_dim: int, tokens: int
) -> None:
    # Phi-3-mini's heads and SmolLM2's grouped ones, over keys and values held in a cache
    # buffer with room to spare (as the model hands them over: a view of its first tokens).
    query = torch.randn(heads, head_dim)
    cache = torch.randn(2, kv_heads, tokens + 50, head_dim)
    keys, values = cache[0, :, :tokens], cache[1, :, :tokens]
    ours = kernel.attend_one_position(query, keys, values, head_dim**-0.5)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        query[None, :, None], keys[None], values[None], enable_gqa=True
    )[0, :, 0]
    assert torch.allclose(ours, sdpa, rtol=1e-5, atol=1e-5)


def test_a_positions_attention_does_not_depend_on_the_threads(kernel: CpuKernels) -> None:
    query, cache = torch.randn(32, 96), torch.randn(2, 32, 300, 96)
    threads = torch.get_num_threads()
    try:
        outputs = []
        for count in (1, 2):
            torch.set_num_threads(count)
            outputs.append(kernel.attend_one_position(query, cache[0], cache[1], 0.1))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outputs[0], outputs[1])


def prompt_queries(heads: int, rows: int, head_dim: int) -> torch.Tensor:
    """[heads, rows, head_dim], laid out as transformers hands them over: a transposed view of
    each row's queries."""
    return torch.randn(rows, heads, head_dim).transpose(0, 1)


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(32, 32, 96), (9, 3, 64)])
@pytest.mark.parametrize(("rows", "tokens"), [(3, 3), (37, 100), (300, 600)])
def test_a_prompts_attention_is_sdpas(
    kernel: CpuKernels, heads: int, kv_heads: int, head_dim: int, rows: int, tokens: int
) -> None:
    # The last `rows` positions, each seeing the keys up to its own: a prompt read after
    # tokens - rows cached ones.
    queries = prompt_queries(heads, rows, head_dim)
    cache = torch.randn(2, kv_heads, tokens + 50, head_dim)
    keys, values = cache[0, :, :tokens], cache[1, :, :tokens]
    ours = kernel.attend_causal(queries, keys, values, head_dim**-0.5)
    causal = torch.ones(rows, tokens, dtype=torch.bool).tril(tokens - rows)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        queries[None], keys[None], values[None], attn_mask=causal, enable_gqa=True
    )[0].transpose(0, 1)
    assert torch.allclose(ours, sdpa, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_each_prompt_row_gets_the_bits_of_one_positions_attention(
    kernel: CpuKernels, threads: int
) -> None:
    # 70 rows: blocks of 16 rows and a shorter last one, over a count of keys no multiple of 16
    queries = prompt_queries(9, 70, 64)
    cache = torch.randn(2, 3, 250, 64)
    tokens = 203
    keys, values = cache[0, :, :tokens], cache[1, :, :tokens]
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        together = kernel.attend_causal(queries, keys, values, 0.125)
    finally:
        torch.set_num_threads(previous)
    for row in range(70):
        seen = tokens - 70 + row + 1
        alone = kernel.attend_one_position(queries[:, row], keys[:, :seen], values[:, :seen], 0.125)
        assert torch.equal(together[row], alone)


def test_attention_it_cannot_take_is_refused(kernel: CpuKernels) -> None:
    keys = torch.randn(4, 10, 24)  # 24 values a head: not a multiple of 16
    with pytest.raises(ValueError, match="cannot take"):
        kernel.attend_one_position(torch.randn(4, 24), keys, keys, 0.2)
    keys = torch.randn(4, 10, 32)  # 11 rows cannot be the last of 10 positions
    with pytest.raises(ValueError, match="cannot take"):
        kernel.attend_causal(torch.randn(4, 11, 32), keys, keys, 0.2)
