/** Child processes that are always ended: each runs in its own process group, killed whole. */

import { spawn } from "node:child_process";

/** Milliseconds a process group gets between SIGTERM and SIGKILL. */
const GRACE_MS = 5_000;

/**
 * Runs `command` to completion (bounded by `timeoutMs`) and returns its output; rejects with the
 * command, exit status and the output's tail when it fails.
 */
export function runToEnd(command, args, { cwd, env, timeoutMs, label }) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const collect = (chunk) => {
      output += chunk.toString();
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    const timer = setTimeout(() => {
      killGroup(child.pid, "SIGKILL");
      reject(new Error(`${label} took longer than ${timeoutMs / 1000} s\n${tail(output)}`));
    }, timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`${label}: cannot run ${command}: ${error.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) {
        resolve(output);
      } else {
        reject(new Error(`${label} failed (${signal ?? `exit ${code}`})\n${tail(output)}`));
      }
    });
  });
}

/** The last `lines` lines of `text`, for error messages. */
export function tail(text, lines = 25) {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/** Sends `signal` to the process group led by `pid`; a group that is already gone is fine. */
export function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch (error) {
    if (error.code !== "ESRCH") {
      throw error;
    }
  }
}

function groupAlive(pid) {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** SIGTERM to the group led by `pid`, then SIGKILL to whatever is left after the grace period. */
export async function endGroup(pid) {
  killGroup(pid, "SIGTERM");
  const deadline = Date.now() + GRACE_MS;
  while (groupAlive(pid) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (groupAlive(pid)) {
    killGroup(pid, "SIGKILL");
  }
}
