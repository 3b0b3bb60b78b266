"""Finding the llama-cpp-python wheel the benchmark compares against, and unpacking it for use.

The wheel is built once, by hand, from the same pinned sdist as the offline pack (it compiles for
~9 minutes on 2 cores); pip checks the sdist, and the diskcache wheel built beside it, against
the hashes in `llama_cpp_requirements.txt` before using them. Both are installed into a folder of
the bench cache, never into the project's environment, and put on PYTHONPATH of the baseline
process only. Only llama-cpp-python itself is built from source: with `--no-binary :all:` pip
compiles its build tools too (on a machine with an empty pip cache it was still compiling CMake
after 11 minutes).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("llama_cpp_requirements.txt")
"""The sdist and its one extra dependency, each pinned by sha256."""


def wheel_dir(cache: Path) -> Path:
    return cache / "bench" / "wheels"


def site_dir(cache: Path) -> Path:
    return cache / "bench" / "llama_cpp_site"


def build_arguments(cache: Path) -> list[str]:
    """pip's arguments that check and build the wheels into the bench cache."""
    return [
        *("-m", "pip", "wheel", "--no-deps", "--require-hashes"),
        *("--no-binary", "llama_cpp_python", "-w", str(wheel_dir(cache))),
        *("-r", str(REQUIREMENTS)),
    ]


def build_command(cache: Path, cpu: set[str] | None = None) -> str:
    """The one command that builds the wheels for this CPU (`cpu`: its feature flags, as
    /proc/cpuinfo lists them), shown to the user when they are missing."""
    from phi3_lsp.cpu_kernels import cpu_flags  # imports torch

    pip = shlex.join([sys.executable, *build_arguments(cache)])
    return f'CMAKE_ARGS="{cmake_arguments(cpu_flags() if cpu is None else cpu)}" nice {pip}'


GGML_FEATURES = {
    "GGML_SSE42": "sse4_2",
    "GGML_AVX": "avx",
    "GGML_AVX2": "avx2",
    "GGML_FMA": "fma",
    "GGML_F16C": "f16c",
    "GGML_BMI2": "bmi2",
    "GGML_AVX_VNNI": "avx_vnni",
    "GGML_AVX512": "avx512f",
    "GGML_AVX512_VBMI": "avx512vbmi",
    "GGML_AVX512_VNNI": "avx512_vnni",
    "GGML_AVX512_BF16": "avx512_bf16",
}
"""llama.cpp's build options for the CPU's vector instructions, by the flag that shows each."""


def cmake_arguments(cpu: set[str]) -> str:
    """llama.cpp's build options: for the CPU it is built on, but without AMX, whose matrix
    products in 0.3.36 crash on SmolLM2's Q4_1 weights (SIGSEGV in ggml_backend_amx_mul_mat, on
    an Intel Xeon with AMX-INT8): where the CPU has it, its other features one by one."""
    if "amx_int8" not in cpu:
        return "-DGGML_NATIVE=ON"
    features = [f"-D{option}=ON" for option, flag in GGML_FEATURES.items() if flag in cpu]
    return " ".join(["-DGGML_NATIVE=OFF", *features])


def find_wheels(cache: Path) -> list[Path] | None:
    """The llama-cpp-python and diskcache wheels the build command made, or None."""
    found = [
        sorted(wheel_dir(cache).glob(pattern))
        for pattern in ("llama_cpp_python-0.3.36-*.whl", "diskcache-5.6.3-*.whl")
    ]
    return [wheels[-1] for wheels in found] if all(found) else None


def ensure_site(cache: Path, wheels: list[Path]) -> Path:
    """Install the wheels into the site dir (once)."""
    site = site_dir(cache)
    if (site / "llama_cpp" / "__init__.py").exists():
        return site
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run([*pip, "--target", str(site), *map(str, wheels)], check=True)
    return site
