/**
 * What the editor should show, worked out without the server: token ids straight from the
 * offline pack's tokenizer.json (Hugging Face `tokenizers`) and the model's shape from its
 * config.json. The language server is not involved, so a wrong offset or id in a hover shows.
 */

import { runToEnd } from "./process.mjs";

const SCRIPT = `
import json, sys
from tokenizers import Tokenizer
from phi3_lsp.paths import cache_dir

pack = cache_dir() / "pack" / sys.argv[1]
text, word = sys.argv[2], sys.argv[3]
encoding = Tokenizer.from_file(str(pack / "tokenizer.json")).encode(text, add_special_tokens=False)
start = text.index(word)
end = start + len(word)
covering = [
    {"id": token_id, "piece": piece}
    for token_id, piece, (token_start, token_end) in zip(
        encoding.ids, encoding.tokens, encoding.offsets
    )
    if token_start < end and token_end > start
]
config = json.loads((pack / "config.json").read_text())
print(json.dumps({
    "tokens": covering,
    "className": config["architectures"][0],
    "vocabSize": config["vocab_size"],
    "hiddenSize": config["hidden_size"],
    "layers": config["num_hidden_layers"],
}))
`;

/**
 * The tokens of `text` that cover the first `word`, and the class name and sizes of the offline
 * pack model `packName`, read with the project's Python.
 */
export async function referenceFacts(python, packName, text, word) {
  const output = await runToEnd(python, ["-c", SCRIPT, packName, text, word], {
    env: process.env,
    timeoutMs: 60_000,
    label: "reading the reference tokenizer and config",
  });
  return JSON.parse(output.trim().split("\n").at(-1));
}
