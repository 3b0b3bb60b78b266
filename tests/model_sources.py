"""Model sources for tests: a folder the fixtures built, with or without its weights."""

from __future__ import annotations

from pathlib import Path

from phi3_lsp.sources import ModelSource


def folder_source(
    folder: Path, *, weights: bool, spec: str | None = None, hint: str | None = None
) -> ModelSource:
    """The source a model folder resolves to; `spec` names it as a user would (default: path)."""
    return ModelSource(
        spec=spec or str(folder),
        name=spec or folder.name,
        tokenizer_dir=folder,
        config_dir=folder,
        weights_dir=folder if weights else None,
        missing_weights_hint=hint,
    )
