"""A pygls server with no features: the floor for `initialize` latency over stdio.

Started by the benchmark as `python -m bench.bare_server`, exactly as the real server is started,
so the difference between the two is what phi3-lsp itself adds before it can answer.
"""

from __future__ import annotations

from pygls.lsp.server import LanguageServer


def main() -> None:
    LanguageServer("bench-bare-server", "0.1.0").start_io()


if __name__ == "__main__":
    main()
