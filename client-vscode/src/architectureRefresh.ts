/**
 * A report built from the config while the weights still came ("Show Phi-3 architecture" during
 * Phi-3-mini's download) says what loads only once they have: whether they did, and in what
 * dtypes. Its view is brought up to date once the model has loaded.
 *
 * Plain module (no VS Code API).
 */

import { RequestCancellation } from "./cancellation";
import { modelLoaded, type ServerStatusSource } from "./modelLoad";
import { type ArchitectureReport, isArchitectureReport } from "./protocol";

/**
 * The loaded model's report, asked with `ask` once the load `report` was built during has
 * ended: undefined for a report of a loaded model, or when another model was loaded meanwhile,
 * or the load failed, or the answer is no report.
 */
export async function reportOnceLoaded(
  report: ArchitectureReport,
  status: ServerStatusSource,
  ask: () => Promise<unknown>,
): Promise<ArchitectureReport | undefined> {
  if (report.weightsPending !== true) {
    return undefined;
  }
  await modelLoaded(status, new RequestCancellation().token);
  const now = status.serverStatus;
  if (now === undefined || now.state === "error" || now.model !== report.model) {
    return undefined;
  }
  try {
    const loaded = await ask();
    return isArchitectureReport(loaded) && loaded.model === report.model ? loaded : undefined;
  } catch {
    return undefined; // the view keeps what it showed: the command shows its own failures
  }
}
