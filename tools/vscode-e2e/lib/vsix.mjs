/**
 * Packages client-vscode into a .vsix the way a release would (`npm ci`, `npm run package`), in a
 * copy of the folder: the working tree's own dist/ and node_modules/ are never touched.
 */

import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { runToEnd } from "./process.mjs";

/** The files of `folder` that git tracks or would track (ignored build output left out). */
function sourceFiles(repoRoot, folder) {
  const listing = execFileSync(
    "git",
    ["ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", folder],
    { cwd: repoRoot, encoding: "utf8" },
  );
  return listing.split("\0").filter((file) => file !== "" && existsSync(path.join(repoRoot, file)));
}

/** Builds `<workDir>/phi3-lsp.vsix` from the extension sources in `repoRoot/client-vscode`. */
export async function packageExtension(repoRoot, workDir, log) {
  const buildDir = path.join(workDir, "client-vscode");
  mkdirSync(buildDir, { recursive: true });
  for (const file of sourceFiles(repoRoot, "client-vscode")) {
    const relative = path.relative("client-vscode", file);
    cpSync(path.join(repoRoot, file), path.join(buildDir, relative));
  }
  const vsix = path.join(workDir, "phi3-lsp.vsix");
  log(`npm ci in a copy of client-vscode (${buildDir})`);
  await runToEnd("npm", ["ci", "--no-audit", "--no-fund"], {
    cwd: buildDir,
    env: process.env,
    timeoutMs: 5 * 60_000,
    label: "npm ci (client-vscode)",
  });
  log("npm run package");
  await runToEnd("npm", ["run", "package", "--", "--out", vsix], {
    cwd: buildDir,
    env: process.env,
    timeoutMs: 3 * 60_000,
    label: "npm run package (client-vscode)",
  });
  return vsix;
}
