"""Our fp32 kernel in each instruction set this CPU runs: torch's products, each row's bits its
own; and how our kernels are built and kept."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from block_values import q4_1_values, q8_0_values
from phi3_lsp.cpu_kernels import (
    FP32_BUILDS,
    Q4_1,
    Q8_0,
    BlockFormat,
    Build,
    Fp32Kernel,
    build_library,
    compiler_command,
)

RUNNABLE = [build for build in FP32_BUILDS if build.runs_here()]
NARROWEST = FP32_BUILDS[-1]
"""AVX2 and FMA: every build here compiles wherever this one does."""

pytestmark = pytest.mark.skipif(
    not RUNNABLE, reason="the fp32 kernel needs an x86-64 CPU with AVX2 and FMA"
)


@pytest.fixture(scope="module", params=RUNNABLE, ids=lambda build: build.name)
def kernel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Fp32Kernel:
    build: Build = request.param
    return Fp32Kernel(build_library(build, tmp_path_factory.mktemp("cache"), compiler_command()))


@pytest.mark.parametrize(("out_features", "in_features"), [(1536, 576), (37, 1000), (5, 7)])
@pytest.mark.parametrize("row_count", [1, 3])
def test_fp32_products_are_as_exact_as_torchs(
    kernel: Fp32Kernel, out_features: int, in_features: int, row_count: int
) -> None:
    # SmolLM2's up projection, and sizes that leave every tail of inputs and outputs.
    torch.manual_seed(out_features * in_features + row_count)
    weight, rows = torch.randn(out_features, in_features), torch.randn(row_count, in_features)
    ours, theirs = kernel.multiply(rows, weight), torch.nn.functional.linear(rows, weight)
    exact = rows.double() @ weight.double().T
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-4)
    # Sums of a few products differ by a rounding or two, whoever adds them.
    roundings = torch.finfo(torch.float32).eps * exact.norm()
    assert (ours.double() - exact).norm() <= 1.5 * (theirs.double() - exact).norm() + roundings


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_fp32_rows_products_depend_on_nothing_but_the_row(
    kernel: Fp32Kernel, dtype: torch.dtype
) -> None:
    # 7 rows: the AVX-512 build takes four at once, then two, then the last alone; 37 outputs
    # and 1000 inputs leave a tail of each.
    weight, rows = torch.randn(37, 1000).to(dtype), torch.randn(7, 1000)
    on_one_thread, on_two_threads = on_one_then_two_threads(kernel.multiply, rows, weight)
    assert torch.equal(on_one_thread, on_two_threads)
    for index in range(len(rows)):
        alone = kernel.multiply(rows[index : index + 1], weight)
        assert torch.equal(alone, on_two_threads[index : index + 1]), f"row {index}"


def on_one_then_two_threads(
    multiply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    rows: torch.Tensor,
    weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`multiply(rows, weight)` on one of torch's threads, then on two."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        on_one_thread = multiply(rows, weight)
        torch.set_num_threads(2)
        return on_one_thread, multiply(rows, weight)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(("out_features", "in_features"), [(1536, 576), (37, 1000), (5, 7)])
def test_a_bf16_weight_gives_the_bits_of_its_fp32_widening(
    kernel: Fp32Kernel, out_features: int, in_features: int
) -> None:
    weight, rows = torch.randn(out_features, in_features).bfloat16(), torch.randn(3, in_features)
    assert torch.equal(kernel.multiply(rows, weight), kernel.multiply(rows, weight.float()))


def test_the_fp32_kernel_refuses_other_dtypes(kernel: Fp32Kernel) -> None:
    with pytest.raises(ValueError, match="fp32 rows and fp32, bf16, Q4_1 or Q8_0 weights only"):
        kernel.multiply(torch.randn(1, 64).bfloat16(), torch.randn(8, 64))
    with pytest.raises(ValueError, match="fp32 rows and fp32, bf16, Q4_1 or Q8_0 weights only"):
        kernel.multiply(torch.randn(1, 64), torch.randn(8, 64).half())
    for dtype in (torch.uint8, torch.int8):
        with pytest.raises(ValueError, match="8-bit weights as Q4_1 or Q8_0 blocks only"):
            kernel.multiply(torch.randn(1, 64), torch.zeros(8, 64, dtype=dtype))


def test_a_second_build_reuses_the_first(tmp_path: Path) -> None:
    first = build_library(NARROWEST, tmp_path, compiler_command())
    built_at = first.stat().st_mtime_ns
    assert build_library(NARROWEST, tmp_path, compiler_command()) == first
    assert first.stat().st_mtime_ns == built_at


def test_each_build_is_kept_apart(tmp_path: Path) -> None:
    libraries = {build_library(build, tmp_path, compiler_command()) for build in FP32_BUILDS}
    assert len(libraries) == len(FP32_BUILDS)
    assert all(library.is_file() for library in libraries)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Fp32Kernel:
    """The build with AMX tiles, where this CPU has them and Linux lends them."""
    build = FP32_BUILDS[0]
    if not build.runs_here():
        pytest.skip(f"the fp32 tiles need a CPU with {', '.join(build.missing_here())}")
    kernel = Fp32Kernel(build_library(build, tmp_path_factory.mktemp("cache"), compiler_command()))
    if not kernel.has_tiles:
        pytest.skip("Linux does not lend this process the tile registers")
    return kernel


def test_the_tiles_give_back_every_input_bit(tiles: Fp32Kernel) -> None:
    # A weight of one 1.0 per output row picks one input: the three bf16 parts of an fp32
    # input must add up to it exactly, at the output and row where it belongs. 45 rows: a
    # whole panel of 32 and one cut short.
    torch.manual_seed(1)
    inputs, outputs = 96, 64
    picked = [(7 * output) % inputs for output in range(outputs)]
    weight = torch.zeros(outputs, inputs)
    weight[range(outputs), picked] = 1.0
    rows = torch.randn(45, inputs) * torch.logspace(-20, 20, inputs)  # 24 significant bits
    assert torch.equal(tiles.multiply_on_tiles(rows, weight.bfloat16()), rows[:, picked])


@pytest.mark.parametrize(("out_features", "in_features"), [(192, 576), (64, 3072)])
def test_the_tiles_products_are_as_exact_as_torchs(
    tiles: Fp32Kernel, out_features: int, in_features: int
) -> None:
    torch.manual_seed(out_features + in_features)
    weight, rows = torch.randn(out_features, in_features).bfloat16(), torch.randn(200, in_features)
    ours, theirs = tiles.multiply_on_tiles(rows, weight), rows @ weight.float().T
    exact = rows.double() @ weight.double().T
    roundings = torch.finfo(torch.float32).eps * exact.norm()
    assert (ours.double() - exact).norm() <= 1.5 * (theirs.double() - exact).norm() + roundings


def test_a_rows_tiles_products_depend_on_nothing_but_the_row(tiles: Fp32Kernel) -> None:
    weight, rows = torch.randn(96, 320).bfloat16(), torch.randn(45, 320)
    on_one_thread, on_two_threads = on_one_then_two_threads(tiles.multiply_on_tiles, rows, weight)
    assert torch.equal(on_one_thread, on_two_threads)
    for index in (0, 17, 33, 44):  # in each tile of each panel
        alone = tiles.multiply_on_tiles(rows[index : index + 1], weight)
        assert torch.equal(alone, on_two_threads[index : index + 1]), f"row {index}"


def test_the_tiles_take_bf16_weights_of_whole_groups_only(tiles: Fp32Kernel) -> None:
    assert tiles.takes_on_tiles(torch.zeros(64, 96, dtype=torch.bfloat16))
    for weight in (torch.zeros(64, 96), torch.zeros(64, 100, dtype=torch.bfloat16)):
        assert not tiles.takes_on_tiles(weight)
        with pytest.raises(ValueError, match="do not take this weight"):
            tiles.multiply_on_tiles(torch.randn(40, weight.shape[1]), weight)
    with pytest.raises(ValueError, match="fp32 rows"):
        tiles.multiply_on_tiles(torch.randn(40, 96).bfloat16(), torch.zeros(64, 96).bfloat16())


HELD_AS = {"Q4_1": (Q4_1, q4_1_values, 3 / 16), "Q8_0": (Q8_0, q8_0_values, 9 / 32)}
"""Each format of blocks: the values it holds exactly, and its share of the fp32 bytes."""


@pytest.mark.parametrize("held_as", HELD_AS)
@pytest.mark.parametrize(("out_features", "in_features"), [(1536, 576), (37, 1024)])
def test_a_block_held_weight_gives_the_bits_of_its_fp32_values(
    kernel: Fp32Kernel, held_as: str, out_features: int, in_features: int
) -> None:
    blocks, values, share = HELD_AS[held_as]
    weight = values(out_features, in_features)
    held = kernel.pack(weight, blocks)
    assert held is not None
    assert held.numel() == weight.numel() * 4 * share
    assert torch.equal(kernel.widen(held), weight)
    rows = torch.randn(5, in_features)
    assert torch.equal(kernel.multiply(rows, held), kernel.multiply(rows, weight))
    on_one_thread, on_two_threads = on_one_then_two_threads(kernel.multiply, rows, held)
    assert torch.equal(on_one_thread, on_two_threads)


def test_only_weights_of_exact_q4_1_blocks_are_held_so(kernel: Fp32Kernel) -> None:
    weight = q4_1_values(8, 64)
    assert kernel.pack(weight, Q4_1) is not None
    # One value a rounding off: a block's least (its m), its greatest (m + 15 d), another.
    for column in (32, 33, 40):
        changed = weight.clone()
        changed[3, column] = torch.nextafter(changed[3, column], torch.tensor(1.0))
        assert kernel.pack(changed, Q4_1) is None, f"column {column}"
    _assert_other_values_are_not_held(kernel, weight, Q4_1)


def test_only_weights_of_exact_q8_0_blocks_are_held_so(kernel: Fp32Kernel) -> None:
    weight = q8_0_values(8, 64)
    assert kernel.pack(weight, Q8_0) is not None
    # One value a rounding off: a block's greatest magnitude (127 d), another, a zero.
    weight[3, 40] = 0.0
    for column in (37, 33, 40):
        changed = weight.clone()
        changed[3, column] = torch.nextafter(changed[3, column], torch.tensor(1.0))
        assert kernel.pack(changed, Q8_0) is None, f"column {column}"
    assert kernel.pack(q4_1_values(8, 64), Q8_0) is None  # d * q + m: an offset Q8_0 has not
    _assert_other_values_are_not_held(kernel, weight, Q8_0)


def _assert_other_values_are_not_held(
    kernel: Fp32Kernel, weight: torch.Tensor, blocks: BlockFormat
) -> None:
    with_nan = weight.clone()
    with_nan[7, 63] = float("nan")
    assert kernel.pack(with_nan, blocks) is None
    assert kernel.pack(torch.randn(8, 64), blocks) is None  # an fp32 checkpoint's own values
    assert kernel.pack(torch.cat([weight, weight[:, :16]], dim=1), blocks) is None  # a part block
    assert kernel.pack(weight.bfloat16(), blocks) is None
