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
    `Phi-3: the model's weights (${gigabytes} GB) read in ${floor} here ` +
      `(${speed} GB/s, the fastest of ${reads.tries} reads).`,
    `Each generated token reads every weight once, so no decode pass can take less than ${floor}.`,
  ];
  const decodeMs = status?.lastDecodeMs;
  const passes = status?.lastDecodePasses;
  // The decode time covers the tokens after the first, which the prompt's pass gave.
  const tokens = (status?.lastTokens ?? 0) - 1;
  if (typeof decodeMs === "number" && typeof passes === "number" && passes > 0 && tokens > 0) {
    const perPass = milliseconds(decodeMs / 1000 / passes);
    const perToken = milliseconds(decodeMs / 1000 / tokens);
    sentences.push(
      `The last completion decoded ${tokens} tokens in ${passes} passes: ${perPass} a pass, ` +
        `${perToken} a token` +
        (passes < tokens ? " (a pass can check several drafted tokens at once)." : "."),
    );
  }
  return sentences.join(" ");
}
