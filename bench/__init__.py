"""The phi3-lsp benchmark: the real server driven over LSP, beside same-run baselines.

Run it as `python -m bench` (or `make bench`); `python -m bench --help` lists the options.
"""
