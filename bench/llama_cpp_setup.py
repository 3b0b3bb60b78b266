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


def build_command(cache: Path) -> str:
    """The one command that builds the wheels (shown to the user when they are missing)."""
    pip = shlex.join([sys.executable, *build_arguments(cache)])
    return f'CMAKE_ARGS="-DGGML_NATIVE=ON" nice {pip}'


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
