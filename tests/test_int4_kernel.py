"""Our 4-bit kernel: torch's products, bits that do not depend on other rows or threads, and
torch's kernel kept when ours cannot build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from phi3_lsp.int4_kernel import CPU_FLAGS, Int4Kernel, build_kernel, compiler_command, cpu_flags
from phi3_lsp.int4_weights import GROUP_SIZE, Int4Weight

pytestmark = pytest.mark.skipif(
    not set(CPU_FLAGS) <= cpu_flags() or torch.backends.cpu.get_cpu_capability() != "AVX512",
    reason="the kernel needs AVX-512 BF16 and VBMI, and torch's AVX-512 layout",
)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Int4Kernel:
    return Int4Kernel(build_kernel(tmp_path_factory.mktemp("cache"), compiler_command()))


@pytest.fixture(scope="module")
def weight() -> Int4Weight:
    torch.manual_seed(0)
    return Int4Weight.quantize(torch.randn(256, 512))


def torch_kernel(rows: torch.Tensor, weight: Int4Weight) -> torch.Tensor:
    products: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
        rows, weight.packed, GROUP_SIZE, weight.scales_and_zeros
    )
    return products


def error_to_exact(products: torch.Tensor, rows: torch.Tensor, weight: Int4Weight) -> float:
    exact = rows.double() @ weight._unpacked(0, weight.out_features).double().T
    return float((products.double() - exact).norm() / exact.norm())


@pytest.mark.parametrize("row_count", [1, 7, 300])
def test_it_computes_what_torchs_kernel_computes(
    kernel: Int4Kernel, weight: Int4Weight, row_count: int
) -> None:
    rows = torch.randn(row_count, weight.in_features).to(torch.bfloat16)
    ours, theirs = (
        kernel.multiply(rows, weight.packed, weight.scales_and_zeros),
        torch_kernel(rows, weight),
    )
    # The same sums in another order: rarely a bf16 rounding step apart, never further.
    differ = ours != theirs
    assert differ.float().mean() < 0.01, f"{differ.float().mean():.2%} of outputs differ"
    steps = (ours.float() - theirs.float()).abs() / theirs.float().abs().clamp(min=1e-3)
    assert differ.sum() == 0 or steps[differ].max() <= 2**-7
    assert error_to_exact(ours, rows, weight) <= 1.05 * error_to_exact(theirs, rows, weight)


def test_a_rows_products_depend_on_nothing_but_the_row(
    kernel: Int4Kernel, weight: Int4Weight
) -> None:
    # A drafted token's row must give the bits a one-row pass gives, on 1 thread or 2.
    rows = torch.randn(7, weight.in_features).to(torch.bfloat16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        on_one_thread = kernel.multiply(rows, weight.packed, weight.scales_and_zeros)
        torch.set_num_threads(2)
        on_two_threads = kernel.multiply(rows, weight.packed, weight.scales_and_zeros)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(on_one_thread, on_two_threads)
    for count in (1, 2, 3, 4, 5, 6):  # every way the kernel groups rows
        some = kernel.multiply(rows[-count:], weight.packed, weight.scales_and_zeros)
        assert torch.equal(some, on_two_threads[-count:]), f"the last {count} rows differ"


def test_fp32_rows_give_the_products_of_the_rows_rounded_to_bf16(
    kernel: Int4Kernel, weight: Int4Weight
) -> None:
    # A layer passes its fp32 inputs as they are: rounding them (and the products) is the
    # kernel's work, and must not change a bit of what the layer computes.
    rows = torch.randn(5, weight.in_features)
    from_fp32 = kernel.multiply(rows, weight.packed, weight.scales_and_zeros)
    from_bf16 = kernel.multiply(rows.to(torch.bfloat16), weight.packed, weight.scales_and_zeros)
    assert from_fp32.dtype == torch.float32
    assert torch.equal(from_fp32, from_bf16.float())


def test_the_4_bit_layers_use_it_on_this_cpu(kernel: Int4Kernel, weight: Int4Weight) -> None:
    # 64 x 256 outputs: some round apart from torch's kernel's, so the two can be told apart.
    rows = torch.randn(64, weight.in_features).to(torch.bfloat16)
    ours = kernel.multiply(rows, weight.packed, weight.scales_and_zeros)
    assert torch.equal(weight.multiply(rows), ours)
    assert not torch.equal(torch_kernel(rows, weight), ours)


def test_a_second_build_reuses_the_first(tmp_path: Path) -> None:
    first = build_kernel(tmp_path, compiler_command())
    built_at = first.stat().st_mtime_ns
    assert build_kernel(tmp_path, compiler_command()) == first
    assert first.stat().st_mtime_ns == built_at


def test_a_missing_or_failing_compiler_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no C compiler: no-such-cc"):
        build_kernel(tmp_path, ["no-such-cc"])
    with pytest.raises(OSError, match="false failed"):
        build_kernel(tmp_path, ["false"])
    assert not any((tmp_path / "kernels").glob("int4-*")), "a failed build left a library"


FALLBACK_CHECK = """
import logging, torch
from phi3_lsp.int4_weights import GROUP_SIZE, Int4Weight
logging.basicConfig(level=logging.INFO, format="%(message)s")
torch.manual_seed(0)
weight = Int4Weight.quantize(torch.randn(128, 256))
rows = torch.randn(2, 256).to(torch.bfloat16)
theirs = torch.ops.aten._weight_int4pack_mm_for_cpu(
    rows, weight.packed, GROUP_SIZE, weight.scales_and_zeros
)
print(torch.equal(weight.multiply(rows), theirs))
"""


def test_without_a_compiler_the_layers_keep_torchs_kernel(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FALLBACK_CHECK],
        capture_output=True,
        text=True,
        env={**os.environ, "CC": "no-such-cc", "PHI3_LSP_CACHE": str(tmp_path)},
        check=True,
    )
    assert result.stdout.strip() == "True"
    assert "4-bit layers use torch's kernel, ours did not build: no C compiler" in result.stderr
