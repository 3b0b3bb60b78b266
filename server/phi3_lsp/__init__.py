"""phi3-lsp: a language server that holds a real transformer on the CPU."""

from phi3_lsp.transformers_scan import scan_transformers_models_once

__version__ = "0.1.0"

# Before any of our modules imports transformers (see `transformers_scan`).
scan_transformers_models_once()
