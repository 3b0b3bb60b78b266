/**
 * What "Measure how fast the weights read" tells the user: how fast the server's process read
 * the model's weights (`phi3.measureWeightReads`), which is the least time a decode pass can
 * take (each generated token reads every weight once), beside the last completion's passes.
 *
 * Plain module (no VS Code API).
 */

import type { ServerStatus, WeightReads } from "./protocol";

function milliseconds(seconds: number): string {
  return `${(seconds * 1000).toFixed(1)} ms`;
}

/** The message, e.g. for Phi-3-mini in fp32 on a 2-core server CPU. */
export function describeWeightReads(reads: WeightReads, status?: ServerStatus): string {
  const gigabytes = (reads.bytesRead / 1e9).toFixed(2);
  const speed = (reads.bytesPerSecond / 1e9).toFixed(1);
  const floor = milliseconds(reads.seconds);
  const sentences = [
    `Phi-3 read the model's ${gigabytes} GB of weights in ${floor} (${speed} GB/s):`,
    "each token reads them all, so no decode pass can take less.",
  ];
  const decodeMs = status?.lastDecodeMs;
  const passes = status?.lastDecodePasses;
  // The decode time covers the tokens after the first, which the prompt's pass gave.
  const tokens = (status?.lastTokens ?? 0) - 1;
  if (typeof decodeMs === "number" && typeof passes === "number" && passes > 0 && tokens > 0) {
    const perPass = milliseconds(decodeMs / 1000 / passes);
    const perToken = milliseconds(decodeMs / 1000 / tokens);
    const drafted = passes < tokens ? ", checking drafted tokens" : "";
    sentences.push(
      `Last completion: ${perToken} a token, ${perPass} a pass (${tokens} tokens in ` +
        `${passes} passes${drafted}).`,
    );
  }
  return sentences.join(" ");
}
