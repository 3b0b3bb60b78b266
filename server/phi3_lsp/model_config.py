"""A model's config.json read through transformers, its problems named with the fix.

transformers says a config that is not JSON is "not a valid JSON file" without where, and an
architecture it does not know may be "out of date", even where the model brings its own code
(`auto_map`) that only `phi3.trustRemoteCode` lets run.
"""

from __future__ import annotations

import json
from typing import Any

import transformers
from transformers import AutoConfig

from phi3_lsp.errors import ModelSourceError
from phi3_lsp.sources import SPEC_HELP, ModelSource


def read_config(source: ModelSource) -> Any:
    """The transformers config of `source`; `ModelSourceError` when transformers cannot read
    it for a reason the user can fix."""
    file = source.config_dir / "config.json"
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
        raise ModelSourceError(
            f"{file} cannot be read ({type(error).__name__}: {error}) — copy or download the "
            f"model again, or {SPEC_HELP}."
        ) from error
    if not isinstance(raw, dict):
        raise ModelSourceError(
            f"{file} is a JSON {type(raw).__name__}, not the object of a model's config — copy "
            f"or download the model again, or {SPEC_HELP}."
        )
    try:
        return AutoConfig.from_pretrained(
            source.config_dir, trust_remote_code=source.trust_remote_code
        )
    except ValueError as error:
        model_type = raw.get("model_type")
        if "does not recognize this architecture" not in str(error):
            raise
        if "auto_map" in raw and not source.trust_remote_code:
            raise ModelSourceError(
                f"{source.name} runs code of its own (its config.json's auto_map) for model "
                f"type `{model_type}`, which transformers does not have: set "
                "phi3.trustRemoteCode to true if you trust that code, or "
                f"{SPEC_HELP}."
            ) from error
        raise ModelSourceError(
            f"{file} has model type `{model_type}`, which transformers "
            f"{transformers.__version__} does not know — {SPEC_HELP}."
        ) from error
