"""The llama.cpp baseline's build: the offline pack's sdist, checked by hash before it compiles."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from bench import llama_cpp_setup

from phi3_lsp.offline_pack import ASSETS


def pinned_lines() -> dict[str, str]:
    """`name==version` → sha256, from the requirements file the build command uses."""
    pins = {}
    for line in llama_cpp_setup.REQUIREMENTS.read_text().splitlines():
        if line and not line.startswith("#"):
            requirement, hash_option = line.split()
            pins[requirement] = hash_option.removeprefix("--hash=sha256:")
    return pins


def test_the_baseline_compiles_the_sdist_the_offline_pack_pins() -> None:
    pack_sdist = ASSETS["phi3-mini"]
    assert pinned_lines()[pack_sdist.requirement] == pack_sdist.sha256


# The flags of the Intel Xeon (AMX) and the AMD EPYC (no AMX) the benchmark ran on.
XEON_FLAGS = {
    *("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx_vnni", "avx512f", "avx512cd"),
    *("avx512vl", "avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"),
}
EPYC_FLAGS = {"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512vbmi"}


def test_the_build_leaves_out_amx_whose_products_crash_and_keeps_the_rest() -> None:
    command = llama_cpp_setup.build_command(Path("/cache"), XEON_FLAGS)
    options = set(command.partition('CMAKE_ARGS="')[2].partition('"')[0].split())
    assert "-DGGML_NATIVE=OFF" in options  # -march=native would turn AMX on
    assert {"-DGGML_AVX512=ON", "-DGGML_AVX512_BF16=ON", "-DGGML_AVX_VNNI=ON"} <= options
    assert not any("AMX" in option for option in options)


def test_the_build_is_native_where_the_cpu_has_no_amx() -> None:
    command = llama_cpp_setup.build_command(Path("/cache"), EPYC_FLAGS)
    assert command.startswith('CMAKE_ARGS="-DGGML_NATIVE=ON" nice ')


def test_a_tampered_sdist_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    source = tmp_path / "llama_cpp_python-0.3.36"
    source.mkdir()
    (source / "setup.py").write_text("raise SystemExit('this must never run')\n")
    with tarfile.open(mirror / "llama_cpp_python-0.3.36.tar.gz", "w:gz") as sdist:
        sdist.add(source, arcname=source.name)
    with zipfile.ZipFile(mirror / "diskcache-5.6.3-py3-none-any.whl", "w") as wheel:
        wheel.writestr("diskcache/__init__.py", "")
    cache = tmp_path / "cache"

    result = subprocess.run(
        [
            sys.executable,
            *llama_cpp_setup.build_arguments(cache),
            *("--no-index", "--find-links", str(mirror)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.stderr
    assert "llama_cpp_python==0.3.36 from" in result.stderr
    assert "this must never run" not in result.stdout + result.stderr
    assert llama_cpp_setup.find_wheels(cache) is None


def test_the_baseline_waits_for_both_wheels_of_the_build(tmp_path: Path) -> None:
    wheels = llama_cpp_setup.wheel_dir(tmp_path)
    wheels.mkdir(parents=True)
    llama = wheels / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl"
    llama.touch()
    assert llama_cpp_setup.find_wheels(tmp_path) is None  # an older build, without diskcache

    diskcache = wheels / "diskcache-5.6.3-py3-none-any.whl"
    diskcache.touch()
    assert llama_cpp_setup.find_wheels(tmp_path) == [llama, diskcache]
