"""The default model offline, without weights: Phi-3's real tokenizer and architecture."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from tokenizers import Tokenizer

from e2e.lsp_session import Phi3Client, hover_text, start, stop

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PROMPT = "The capital of France is"


def token_ids(markdown: str) -> list[int]:
    """The ids in the hover's `text | piece | id` table."""
    return [int(match) for match in re.findall(r"\|\s*(\d+)\s*\|\s*$", markdown, re.MULTILINE)]


async def test_the_model_is_ready_without_weights_and_says_how_to_get_them(
    phi3_no_weights: Phi3Client,
) -> None:
    status = phi3_no_weights.statuses[-1]
    assert status["state"] == "ready"
    assert status["model"] == "microsoft/Phi-3-mini-4k-instruct"
    assert status["weightsLoaded"] is False
    assert status["message"]
    warnings = [m for m in phi3_no_weights.messages if m.type == types.MessageType.Warning]
    assert [m.message for m in warnings] == [status["message"]]


async def test_hover_shows_phi3_token_ids_word_by_word(phi3_no_weights: Phi3Client) -> None:
    uri = phi3_no_weights.open_text("capital.txt", PROMPT)
    ids = []
    for word in PROMPT.split():
        hover = await phi3_no_weights.hover_at(uri, 0, PROMPT.index(word))
        assert hover is not None
        ids += token_ids(hover_text(hover))
        # The range is the word's.
        start = PROMPT.index(word)
        assert hover.range == types.Range(
            start=types.Position(line=0, character=start),
            end=types.Position(line=0, character=start + len(word)),
        )
    assert ids == [450, 7483, 310, 3444, 338]


async def test_hover_names_the_pieces(phi3_no_weights: Phi3Client) -> None:
    uri = phi3_no_weights.open_text("pieces.txt", PROMPT)
    markdown = hover_text(await phi3_no_weights.hover_at(uri, 0, PROMPT.index("France")))
    assert "France" in markdown
    assert "| `␣France` | `▁France` | 3444 |" in markdown


@pytest.mark.parametrize(
    ("name", "text", "word"),
    [
        ("cjk.txt", "你好 世界", "你好"),
        ("devanagari.txt", "नमस्ते दुनिया", "नमस्ते"),
        ("emoji.txt", "😶 ok", "😶"),
        ("chat.txt", "<|user|>\n你好", "你好"),
    ],
)
async def test_hover_lists_the_space_the_tokenizer_adds_before_a_word(
    phi3_no_weights: Phi3Client, phi3_mini_dir: Path, name: str, text: str, word: str
) -> None:
    # The model reads a "▁" before the first word of a text, and of the text after a special
    # token; before these words it is a token of its own, which `phi3-lsp tokenize` lists too.
    uri = phi3_no_weights.open_text(name, text)
    start = text.index(word)
    line_start = text.rfind("\n", 0, start) + 1
    hover = await phi3_no_weights.hover_at(uri, text.count("\n", 0, start), start - line_start)
    tokenizer = Tokenizer.from_file(str(phi3_mini_dir / "tokenizer.json"))
    before = tokenizer.encode(text[:start], add_special_tokens=False).ids
    through = tokenizer.encode(text[: start + len(word)], add_special_tokens=False).ids
    markdown = hover_text(hover)
    assert token_ids(markdown) == through[len(before) :]
    # It covers no character of the document: its row shows no text.
    assert f"|  | `▁` | {tokenizer.token_to_id('▁')} |" in markdown


async def test_a_client_without_markdown_gets_a_hover_in_plain_text(
    offline_pack: None, hf_home: Path
) -> None:
    # As Emacs' eglot declares it without markdown-mode.
    plain_only = types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            hover=types.HoverClientCapabilities(content_format=[types.MarkupKind.PlainText])
        )
    )
    client = await start(None, hf_home, plain_only)
    try:
        await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
        uri = client.open_text("plain.txt", PROMPT)
        hover = await client.hover_at(uri, 0, PROMPT.index("France"))
    finally:
        await stop(client)
    assert hover is not None and isinstance(hover.contents, types.MarkupContent)
    assert hover.contents.kind == types.MarkupKind.PlainText
    text = hover.contents.value
    # Read as it is: no table pipes, no backticks, the token's text, piece and id on its line.
    assert "|" not in text and "`" not in text
    assert re.search(r"^␣France +▁France +3444$", text, re.MULTILINE)


async def test_hover_after_typing_below_a_form_feed(phi3_no_weights: Phi3Client) -> None:
    # LSP lines end only at line breaks: a form feed (as in some Python files) is not one.
    uri = phi3_no_weights.open_text("paged.py", "# page one\x0c\nThe of France is")
    phi3_no_weights.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(
                        start=types.Position(line=1, character=4),
                        end=types.Position(line=1, character=4),
                    ),
                    text="capital ",
                )
            ],
        )
    )
    hover = await phi3_no_weights.hover_at(uri, 1, 5)
    assert hover is not None
    assert token_ids(hover_text(hover)) == [7483]
    assert hover.range == types.Range(
        start=types.Position(line=1, character=4), end=types.Position(line=1, character=11)
    )


async def test_hover_in_a_document_opened_again_reads_its_new_text(
    phi3_no_weights: Phi3Client,
) -> None:
    # Editors number a document opened again from version 1 anew, and reuse untitled names.
    # A long rule's tokens depend on text far from the cursor: the whole document decides them.
    pieces = []
    for rule in ("-" * 600, "=" * 600):
        uri = phi3_no_weights.open_text("rule.md", rule + " word")
        markdown = hover_text(await phi3_no_weights.hover_at(uri, 0, 300))
        pieces.append(set(re.findall(r"\|\s*`([^`]*)`\s*\|\s*\d+\s*\|\s*$", markdown, re.M)))
        phi3_no_weights.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )
    dashes, equals = pieces
    assert dashes and all(set(piece) == {"-"} for piece in dashes), dashes
    assert equals and all(set(piece) == {"="} for piece in equals), equals


async def test_hover_on_whitespace_is_empty(phi3_no_weights: Phi3Client) -> None:
    uri = phi3_no_weights.open_text("spaces.txt", "The   capital")
    assert await phi3_no_weights.hover_at(uri, 0, 4) is None


async def test_architecture_of_phi3_mini_without_weights(phi3_no_weights: Phi3Client) -> None:
    report = await phi3_no_weights.command("phi3.showArchitecture")
    assert report["className"] == "Phi3ForCausalLM"
    assert report["weightsLoaded"] is False
    config = report["config"]
    assert config["layers"] == 32
    assert config["hiddenSize"] == 3072
    assert config["vocabSize"] == 32064
    assert config["tieWordEmbeddings"] is False
    assert report["parameters"]["total"] == 3_821_079_552
    assert report["repr"].startswith("Phi3ForCausalLM(\n  (model): Phi3Model(")
    assert "(lm_head): Linear(in_features=3072, out_features=32064, bias=False)" in report["repr"]


async def test_completions_are_empty_without_weights(phi3_no_weights: Phi3Client) -> None:
    uri = phi3_no_weights.open_text("no-weights.txt", PROMPT)
    assert await phi3_no_weights.inline(uri, 0, len(PROMPT)) == []


async def test_the_status_command_matches_the_notifications(phi3_no_weights: Phi3Client) -> None:
    assert await phi3_no_weights.command("phi3.status") == phi3_no_weights.statuses[-1]


async def test_without_weights_reading_them_is_an_error_that_says_so_and_what_to_do(
    phi3_no_weights: Phi3Client,
) -> None:
    with pytest.raises(JsonRpcException, match="without its weights") as refused:
        await phi3_no_weights.command("phi3.measureWeightReads")
    assert 'Set phi3.model to "smollm2-135m"' in str(refused.value)
    assert (await phi3_no_weights.command("phi3.status"))["state"] == "ready"
