"""phi3-lsp: a language server that holds a real transformer on the CPU."""

__version__ = "0.1.0"
