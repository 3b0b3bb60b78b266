"""The screened vocabulary projection picks exactly the fp32 projection's most likely token."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from torch import nn

from phi3_lsp.architecture import count_parameters
from phi3_lsp.cpu_kernels import held_blocks, own_fp32_kernel
from phi3_lsp.screened_projection import MAX_SCREENED_ROWS, ScreenedProjection

if TYPE_CHECKING:
    from phi3_lsp.engine import ModelEngine


def hidden_states(count: int, width: int) -> torch.Tensor:
    """Inputs as a decoder's last layer gives them: mostly small values, a few large ones."""
    states = torch.randn(count, width)
    states[:, :3] *= 20  # a few outlier features, which concentrate the 4-bit error
    return states


@pytest.mark.usefixtures("seeded")
class TestScreenedProjection:
    def test_one_input_gets_the_fp32_layers_most_likely_token_and_its_exact_score(self) -> None:
        linear = nn.Linear(256, 8192, bias=False)
        screened = ScreenedProjection(linear)
        with torch.inference_mode():
            for state in hidden_states(200, 256):
                expected = linear(state.reshape(1, 1, 256))
                actual = screened(state.reshape(1, 1, 256))
                assert actual.shape == (1, 1, 8192)
                best = int(expected.argmax())
                assert int(actual.argmax()) == best
                assert torch.allclose(actual[0, 0, best], expected[0, 0, best], rtol=1e-5)

    def test_a_bias_is_part_of_the_choice(self) -> None:
        linear = nn.Linear(128, 4096, bias=True)
        linear.bias.data = torch.randn(4096) * 5
        screened = ScreenedProjection(linear)
        with torch.inference_mode():
            for state in hidden_states(100, 128):
                assert int(screened(state[None])[0].argmax()) == int(linear(state[None]).argmax())

    def test_several_rows_of_a_prompt_get_every_score_exact(self) -> None:
        linear = nn.Linear(128, 2048, bias=False)
        rows = MAX_SCREENED_ROWS + 1
        states = hidden_states(rows, 128).reshape(1, rows, 128)
        with torch.inference_mode():
            assert torch.equal(ScreenedProjection(linear)(states), linear(states))

    def test_tokens_that_score_alike_are_told_apart_exactly(self) -> None:
        # Rows that differ by far less than 4 bits can resolve: the screen rules out none.
        linear = nn.Linear(128, 2048, bias=False)
        linear.weight.data = torch.randn(1, 128) + 1e-4 * torch.randn(2048, 128)
        with torch.inference_mode():
            for state in hidden_states(20, 128):
                actual, expected = ScreenedProjection(linear)(state[None]), linear(state[None])
                assert int(actual.argmax()) == int(expected.argmax())
                assert torch.allclose(actual, expected, rtol=1e-5)

    def test_each_row_of_a_short_pass_scores_as_it_does_alone(self) -> None:
        # A pass checking drafted tokens must give every row the scores a one-token pass gives
        # it, to the bit. Here one row's tokens all score alike, so the screen rules out none of
        # them, beside rows it screens well.
        linear = nn.Linear(128, 2048, bias=False)
        linear.weight.data = torch.randn(2048, 128)
        linear.weight.data[:, :64] = torch.randn(1, 64) + 1e-4 * torch.randn(2048, 64)
        flat = torch.zeros(1, 128)
        flat[0, :64] = torch.randn(64)
        states = torch.cat([hidden_states(2, 128), flat, hidden_states(2, 128)])
        screened = ScreenedProjection(linear)
        with torch.inference_mode():
            together = screened(states[None])[0]
            for row, state in enumerate(states):
                assert torch.equal(together[row], screened(state.reshape(1, 1, 128))[0, 0])

    def test_it_shares_the_layers_weight(self) -> None:
        embeddings = nn.Embedding(1024, 64)
        linear = nn.Linear(64, 1024, bias=False)
        linear.weight = embeddings.weight  # tied, as in SmolLM2
        screened = ScreenedProjection(linear)
        assert screened.weight is embeddings.weight
        assert count_parameters(nn.ModuleList([embeddings, screened])) == 64 * 1024
        assert "in_features=64, out_features=1024, bias=False, screened in 4 bits" in repr(screened)


@pytest.mark.slow
def test_on_smollm2_it_picks_the_fp32_token_at_every_position_of_real_code(
    smollm2_engine: ModelEngine,
) -> None:
    model = smollm2_engine.model
    source = Path(textwrap.__file__).read_text(encoding="utf-8")
    start = source.index("class TextWrapper")
    prompt = smollm2_engine.tokenizer.encode_prompt(source[start : start + 2000])
    output = model.get_submodule("lm_head")
    decoder = model.get_submodule("model")
    assert isinstance(output, nn.Linear)
    screened = ScreenedProjection(_with_fp32_values(output))
    with torch.inference_mode():
        states = decoder(input_ids=torch.tensor([prompt])).last_hidden_state[0]
        expected = output(states).argmax(dim=-1).tolist()
        actual = [int(screened(state.reshape(1, 1, -1)).argmax()) for state in states]
    assert len(prompt) > 400
    assert actual == expected


def _with_fp32_values(linear: nn.Linear) -> nn.Linear:
    """`linear`, or a copy holding the fp32 values of a weight held as blocks (as the engine
    holds SmolLM2's vocabulary projection where our fp32 kernel runs)."""
    if held_blocks(linear.weight) is None:
        return linear
    kernel = own_fp32_kernel()
    assert kernel is not None  # (it held them)
    copy = nn.Linear(linear.in_features, linear.out_features, bias=False)
    copy.weight = nn.Parameter(kernel.widen(linear.weight), requires_grad=False)
    return copy
