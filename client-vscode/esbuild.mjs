// Builds the extension bundle (dist/extension.js) or, with --tests, transpiles sources and tests
// file by file into out/ for node's test runner (type checking is tsc --noEmit's job).
import { readdirSync } from "node:fs";
import { join } from "node:path";
import * as esbuild from "esbuild";

const production = process.argv.includes("--production");
const tests = process.argv.includes("--tests");

function typeScriptFiles(dir) {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith(".ts"))
    .map((entry) => join(entry.parentPath, entry.name));
}

if (tests) {
  await esbuild.build({
    entryPoints: [...typeScriptFiles("src"), ...typeScriptFiles("test")],
    outdir: "out",
    outbase: ".",
    format: "cjs",
    platform: "node",
    target: "node20",
    sourcemap: "inline",
    logLevel: "warning",
  });
} else {
  await esbuild.build({
    entryPoints: ["src/extension.ts"],
    outfile: "dist/extension.js",
    bundle: true,
    format: "cjs",
    platform: "node",
    // VS Code 1.91 runs extensions on Node 20.
    target: "node20",
    external: ["vscode"],
    minify: production,
    sourcemap: !production,
    logLevel: "warning",
  });
}
