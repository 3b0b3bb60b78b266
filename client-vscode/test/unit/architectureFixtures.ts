import type { ArchitectureReport } from "../../src/protocol";

const repr = [
  "Phi3ForCausalLM(",
  "  (model): Phi3Model(",
  "    (embed_tokens): Embedding(32064, 3072, padding_idx=32000)",
  "    (layers): ModuleList(",
  "      (0-31): 32 x Phi3DecoderLayer(",
  "        (self_attn): Phi3Attention(",
  "          (o_proj): Linear(in_features=3072, out_features=3072, bias=False)",
  "        )",
  "      )",
  "    )",
  "  )",
  "  (lm_head): Linear(in_features=3072, out_features=32064, bias=False)",
  ")",
].join("\n");

/** Phi-3-mini's report, as the server builds it without weights (its repr shortened). */
export const phi3MiniReport: ArchitectureReport = {
  model: "microsoft/Phi-3-mini-4k-instruct",
  className: "Phi3ForCausalLM",
  weightsLoaded: false,
  repr,
  config: {
    modelType: "phi3",
    layers: 32,
    hiddenSize: 3072,
    intermediateSize: 8192,
    attentionHeads: 32,
    keyValueHeads: 32,
    headDim: 96,
    vocabSize: 32064,
    contextLength: 4096,
    dtype: "float32",
    tieWordEmbeddings: false,
  },
  parameters: {
    total: 3821079552,
    byModule: [
      { name: "model", type: "Phi3Model", count: 3722579968 },
      { name: "model.embed_tokens", type: "Embedding", count: 98500608 },
      { name: "lm_head", type: "Linear", count: 98500608 },
    ],
  },
};
