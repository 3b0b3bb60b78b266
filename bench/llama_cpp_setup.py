"""Finding the llama-cpp-python wheel the benchmark compares against, and unpacking it for use.

The wheel is built once, by hand, from the same pinned sdist as the offline pack (it compiles for
~9 minutes on 2 cores); it is installed into a folder of the bench cache, never into the project's
environment, and put on PYTHONPATH of the baseline process only. Only llama-cpp-python itself is
built from source: with `--no-binary :all:` pip compiles its build tools too (on a machine with
an empty pip cache it was still compiling CMake after 11 minutes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SDIST = "llama_cpp_python==0.3.36"


def wheel_dir(cache: Path) -> Path:
    return cache / "bench" / "wheels"


def site_dir(cache: Path) -> Path:
    return cache / "bench" / "llama_cpp_site"


def build_command(cache: Path) -> str:
    """The one command that builds the wheel (shown to the user when it is missing)."""
    return (
        f'CMAKE_ARGS="-DGGML_NATIVE=ON" nice {sys.executable} -m pip wheel --no-deps '
        f"--no-binary llama_cpp_python -w {wheel_dir(cache)} {SDIST}"
    )


def find_wheel(cache: Path) -> Path | None:
    wheels = sorted(wheel_dir(cache).glob("llama_cpp_python-0.3.36-*.whl"))
    return wheels[-1] if wheels else None


def ensure_site(cache: Path, wheel: Path) -> Path:
    """Install the wheel (and diskcache, its one dependency the project lacks) into the site dir."""
    site = site_dir(cache)
    if (site / "llama_cpp" / "__init__.py").exists():
        return site
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site)]
    subprocess.run([*pip, str(wheel), "diskcache"], check=True)
    return site
