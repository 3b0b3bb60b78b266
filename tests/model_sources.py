"""Models for tests: a folder the fixtures built (with or without its weights), a tiny Phi-3,
the bytes a checkpoint stores, an offline pack built from a local index, and wheels for one."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from safetensors import safe_open

from phi3_lsp import offline_pack
from phi3_lsp.load_stops import LoadStop
from phi3_lsp.offline_pack import FIND_LINKS_ENV, PinnedArtifact
from phi3_lsp.progress import ProgressUpdate
from phi3_lsp.sources import ModelSource

if TYPE_CHECKING:
    from transformers import Phi3ForCausalLM


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


def tiny_sliding_window_phi3(window: int, *, tied_embeddings: bool = False) -> Phi3ForCausalLM:
    """A tiny Phi-3 with weights from seed 0, whose attention sees the last `window` tokens only.

    Phi-3-mini attends to a 2,047-token window; a tiny one takes the same paths quickly.
    """
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    config = Phi3Config(
        vocab_size=32064,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        sliding_window=window,
        pad_token_id=32000,
        tie_word_embeddings=tied_embeddings,
    )
    model = Phi3ForCausalLM(config)
    model.train(False)
    return model


def checkpoint_bytes(folder: Path, *, without: str | None = None, ending: str | None = None) -> int:
    """Bytes of the tensors a folder's safetensors files store (all but `without`; only those
    whose names end with `ending`, if given)."""
    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as tensors:
            for name in tensors.keys():  # noqa: SIM118 (safe_open cannot be iterated)
                if name != without and name.endswith(ending or ""):
                    tensor = tensors.get_tensor(name)
                    total += tensor.numel() * tensor.element_size()
    return total


class ConversionWatch:
    """A conversion's progress callback: keeps the fractions it reports, and sets `stop` once
    one reaches `stop_at`."""

    def __init__(self, stop_at: float) -> None:
        self.stop = LoadStop()
        self.fractions: list[float] = []
        self._stop_at = stop_at

    def __call__(self, update: ProgressUpdate) -> None:
        if update.message.startswith("Converting") and update.fraction is not None:
            self.fractions.append(update.fraction)
            if update.fraction >= self._stop_at:
                self.stop.set()


def build_phi3_pack(cache: Path, sdist: tuple[Path, PinnedArtifact]) -> None:
    """Build the offline pack's phi3-mini into `cache` as this version does, from the local
    index and pin of the `phi3_sdist` fixture."""
    index, pinned = sdist
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(offline_pack.ASSETS, "phi3-mini", pinned)
        patch.setenv(FIND_LINKS_ENV, str(index))
        offline_pack.ensure_asset("phi3-mini", cache=cache)


def smollm2_fetched_whole_meanwhile(cache: Path, smollm2_dir: Path) -> None:
    """Another process's fetch of the offline SmolLM2 into `cache` ends (its files linked from
    `smollm2_dir`: 0.6 GB, only read), and it removes the folder without weights, as it does
    once the model is there whole. Again: nothing more happens."""
    whole = cache / "pack" / "smollm2-135m"
    if whole.exists():
        return
    whole.mkdir(parents=True)
    for file in smollm2_dir.iterdir():
        (whole / file.name).symlink_to(file)
    offline_pack.ensure_asset("smollm2-135m", cache=cache)


def write_wheel(folder: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal installable wheel that pip accepts from --find-links."""
    dist_info = f"{name}-{version}.dist-info"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
        archive.writestr(
            f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        archive.writestr(
            f"{dist_info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{dist_info}/RECORD", "")
    return wheel
