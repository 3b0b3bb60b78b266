"""Where phi3-lsp keeps what it downloads and converts."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHE_ENV = "PHI3_LSP_CACHE"


def cache_dir() -> Path:
    """The cache root: `$PHI3_LSP_CACHE`, else the user cache dir / phi3-lsp."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("phi3-lsp", appauthor=False))
