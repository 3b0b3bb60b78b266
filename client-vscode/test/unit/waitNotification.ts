import { RequestCancellation } from "../../src/cancellation";
import type { ShowWait } from "../../src/serverWait";

/**
 * The progress notification a wait shows (for the server's start, or a slow answer), with its
 * Cancel button: whether it is on screen, how many times it was shown, and a click on Cancel.
 */
export function waitNotification() {
  const cancelButton = new RequestCancellation();
  const shown = { times: 0, open: false };
  const show: ShowWait = async (wait) => {
    shown.times += 1;
    shown.open = true;
    try {
      return await wait(cancelButton.token);
    } finally {
      shown.open = false;
    }
  };
  const cancel = () => {
    cancelButton.cancel();
  };
  return { show, shown, cancel };
}
