import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { text } from "node:stream/consumers";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import * as yauzl from "yauzl";
import { type Context, evaluateWhen } from "./whenClause";

const extensionRoot = join(__dirname, "../../..");

/** Every file in the zip, name → content (the vsix is small). */
async function readZip(path: string): Promise<Map<string, string>> {
  const zip = await yauzl.openPromise(path, { lazyEntries: true });
  const files = new Map<string, string>();
  try {
    for (;;) {
      const entry = await new Promise<yauzl.Entry | undefined>((resolve, reject) => {
        zip.once("entry", resolve);
        zip.once("end", () => {
          resolve(undefined);
        });
        zip.once("error", reject);
        zip.readEntry();
      });
      if (entry === undefined) {
        return files;
      }
      zip.removeAllListeners();
      if (!entry.fileName.endsWith("/")) {
        files.set(entry.fileName, await text(await zip.openReadStreamPromise(entry)));
      }
    }
  } finally {
    zip.close();
  }
}

interface Manifest {
  main: string;
  activationEvents: string[];
  contributes: {
    commands: { command: string; title: string; category: string }[];
    keybindings: { command: string; key?: string; mac?: string; args?: string; when: string }[];
    menus: { commandPalette: { command: string; when: string }[] };
  };
}

describe("the packaged extension (.vsix)", () => {
  const outDir = mkdtempSync(join(tmpdir(), "phi3-vsix-"));
  const vsixPath = join(outDir, "phi3-lsp.vsix");
  let files = new Map<string, string>();

  before(async () => {
    // The same command as `npm run package`, written elsewhere so the test leaves no file behind.
    await promisify(execFile)(
      join(extensionRoot, "node_modules/.bin/vsce"),
      ["package", "--no-dependencies", "--allow-missing-repository", "--out", vsixPath],
      { cwd: extensionRoot },
    );
    files = await readZip(vsixPath);
  });

  after(() => {
    rmSync(outDir, { recursive: true, force: true });
  });

  it("contains the bundle that package.json names as main", () => {
    const manifest = JSON.parse(files.get("extension/package.json") ?? "{}") as Manifest;
    assert.equal(manifest.main, "./dist/extension.js");
    const bundle = files.get("extension/dist/extension.js");
    assert.ok(bundle !== undefined, "extension/dist/extension.js is in the vsix");
    // One bundle: the language client is inside, and `vscode` is left to the host.
    assert.match(bundle, /textDocument\/inlineCompletion/);
    assert.match(bundle, /require\("vscode"\)/);
  });

  it("contributes the commands with their palette titles", () => {
    const manifest = JSON.parse(files.get("extension/package.json") ?? "{}") as Manifest;
    const titles = new Map(manifest.contributes.commands.map((c) => [c.command, c.title]));
    assert.equal(titles.get("phi3.showArchitecture"), "Show Phi-3 architecture");
    assert.equal(titles.get("phi3.measureWeightReads"), "Measure how fast the weights read");
    assert.equal(titles.get("phi3.restartServer"), "Restart server");
    assert.equal(titles.get("phi3.toggleInlineCompletions"), "Toggle inline completions");
    assert.equal(titles.get("phi3.showOutput"), "Show output");
    assert.equal(titles.get("phi3.useOfflineModel"), "Use the offline model (smollm2-135m)");
    assert.ok(manifest.contributes.commands.every((c) => c.category === "Phi-3"));
    assert.deepEqual(manifest.activationEvents, ["onStartupFinished"]);
  });

  it("binds Escape to turning down a pending suggestion, or one shown while the server generates, and only then", () => {
    const manifest = JSON.parse(files.get("extension/package.json") ?? "{}") as Manifest;
    // VS Code refuses a binding without a key, with an error on every start.
    assert.ok(manifest.contributes.keybindings.every((binding) => binding.key !== undefined));
    const escape = manifest.contributes.keybindings.filter((binding) => binding.key === "escape");
    assert.deepEqual(
      escape.map((binding) => binding.command),
      ["phi3.dismissSuggestion", "phi3.dismissSuggestion"],
    );
    const [pending, generating] = escape.map((binding) => binding.when.split(" && "));
    assert.ok(
      pending?.some((condition) => condition.includes("phi3.pendingDocuments")),
      "the first binding: while pending",
    );
    assert.ok(
      generating?.includes("inlineSuggestionVisible"),
      "the second: while ghost text shows",
    );
    // The context keys the extension sets, and what must keep Escape for itself.
    for (const conditions of [pending, generating]) {
      for (const condition of [
        "editorTextFocus",
        "!suggestWidgetVisible",
        "!editorHasSelection",
        "!editorHasMultipleSelections",
        "!findWidgetVisible",
        "!inSnippetMode",
        "!vim.active", // Vim emulations leave insert mode with it (and the cursor's move cancels)
        "!neovim.init",
      ]) {
        assert.ok(conditions?.includes(condition), `a binding's when lacks ${condition}`);
      }
    }
    const bundle = files.get("extension/dist/extension.js") ?? "";
    assert.match(bundle, /"phi3\.pendingDocuments"/);
    assert.match(bundle, /"phi3\.generatingDocuments"/);
    assert.match(bundle, /"phi3\.dismissSuggestion"/);
  });

  it("binds Escape on ghost text only in the editor of the document the server generates for", () => {
    const manifest = JSON.parse(files.get("extension/package.json") ?? "{}") as Manifest;
    const generating = manifest.contributes.keybindings.filter(
      (binding) => binding.key === "escape" && binding.when.includes("inlineSuggestionVisible"),
    );
    assert.equal(generating.length, 1);
    const when = generating[0]?.when ?? "";
    const notes = "file:///work/notes.txt";
    const cell = "vscode-notebook-cell:/work/lab.ipynb#W0sZmlsZQ%3D%3D";
    // Ghost text shows in a focused editor while the server generates for `notes` (the context
    // key the extension sets, generatingDocument.ts); `resource` is the editor group's.
    const ghostText: Context = {
      editorTextFocus: true,
      inlineSuggestionVisible: true,
      "phi3.generatingDocuments": [notes],
    };
    const applies = (where: Context) => evaluateWhen(when, { ...ghostText, ...where });
    assert.equal(applies({ resource: notes }), true, "in the editor of notes.txt");
    assert.equal(applies({ resource: "file:///work/words.txt" }), false, "in another file");
    assert.equal(
      applies({ resource: notes, "phi3.generatingDocuments": [] }),
      false,
      "once the server has stopped",
    );
    // A comment's editor sits in the file's editor (same `resource`), the Source Control input
    // in a view (no `resource`): Escape there is VS Code's, and stops nothing.
    assert.equal(applies({ resource: notes, commentEditorFocused: true }), false, "a comment");
    assert.equal(applies({ scmRepository: "git" }), false, "the Source Control input");
    // A notebook's cells are documents of their own; `resource` is the notebook's.
    const notebook = { resource: "file:///work/lab.ipynb", "phi3.generatingDocuments": [cell] };
    assert.equal(applies({ ...notebook, notebookCellResource: cell }), true, "in that cell");
    assert.equal(
      applies({ ...notebook, notebookCellResource: `${cell}X` }),
      false,
      "in another cell",
    );
  });

  it("binds Escape while a suggestion is pending only in the editor of its document", () => {
    const manifest = JSON.parse(files.get("extension/package.json") ?? "{}") as Manifest;
    const pending = manifest.contributes.keybindings.filter(
      (binding) => binding.key === "escape" && binding.when.includes("phi3.pendingDocuments"),
    );
    assert.equal(pending.length, 1);
    const when = pending[0]?.when ?? "";
    const notes = "file:///work/notes.txt";
    const cell = "vscode-notebook-cell:/work/lab.ipynb#W0sZmlsZQ%3D%3D";
    // A suggestion of `notes` is on its way or grows (the context key the extension sets,
    // pendingSuggestions.ts) while an editor has focus; `resource` is the editor group's. No
    // ghost text needs to show.
    const pendingInNotes: Context = {
      editorTextFocus: true,
      "phi3.pendingDocuments": [notes],
    };
    const applies = (where: Context) => evaluateWhen(when, { ...pendingInNotes, ...where });
    assert.equal(applies({ resource: notes }), true, "in the editor of notes.txt");
    assert.equal(applies({ resource: "file:///work/words.txt" }), false, "in another file");
    assert.equal(
      applies({ resource: notes, "phi3.pendingDocuments": [] }),
      false,
      "once nothing is pending",
    );
    // A comment's editor sits in the file's editor (same `resource`), the Source Control input
    // in a view (no `resource`): Escape there is VS Code's (it closes the comment widget), and
    // turns nothing down.
    assert.equal(applies({ resource: notes, commentEditorFocused: true }), false, "a comment");
    assert.equal(applies({ scmRepository: "git" }), false, "the Source Control input");
    // A notebook's cells are documents of their own; `resource` is the notebook's.
    const notebook = { resource: "file:///work/lab.ipynb", "phi3.pendingDocuments": [cell] };
    assert.equal(applies({ ...notebook, notebookCellResource: cell }), true, "in that cell");
    assert.equal(
      applies({ ...notebook, notebookCellResource: `${cell}X` }),
      false,
      "in another cell",
    );
  });

  it("offers the dismissal in the command palette only in the editor of a pending suggestion", () => {
    const manifest = JSON.parse(files.get("extension/package.json") ?? "{}") as Manifest;
    const palette = manifest.contributes.menus.commandPalette.filter(
      (item) => item.command === "phi3.dismissSuggestion",
    );
    assert.equal(palette.length, 1);
    const when = palette[0]?.when ?? "";
    const notes = "file:///work/notes.txt";
    const pendingInNotes = { "phi3.pendingDocuments": [notes] };
    assert.equal(evaluateWhen(when, { ...pendingInNotes, resource: notes }), true);
    assert.equal(
      evaluateWhen(when, { ...pendingInNotes, resource: "file:///work/words.txt" }),
      false,
    );
  });

  it("binds Tab and Ctrl+Right to accepting a growing suggestion only while it is hidden", () => {
    const manifest = JSON.parse(files.get("extension/package.json") ?? "{}") as Manifest;
    const accepts = manifest.contributes.keybindings.filter(
      (binding) => binding.command === "phi3.acceptRefreshingSuggestion",
    );
    assert.deepEqual(
      accepts.map(({ key, mac, args }) => ({ key, mac, args })),
      [
        { key: "tab", mac: undefined, args: "all" },
        { key: "ctrl+right", mac: "cmd+right", args: "word" },
      ],
    );
    for (const binding of accepts) {
      const conditions = binding.when.split(" && ");
      // The context key the extension sets; VS Code's own accept whenever ghost text shows; and
      // what keeps the keys for the suggest widget, selections, snippets and input methods.
      for (const condition of [
        "editorTextFocus",
        "phi3.suggestionRefreshing",
        "!inlineSuggestionVisible",
        "!suggestWidgetVisible",
        "!editorHasSelection",
        "!editorHasMultipleSelections",
        "!inSnippetMode",
        "!isComposing",
        "!editorReadonly",
      ]) {
        assert.ok(conditions.includes(condition), `${binding.key} lacks ${condition}`);
      }
    }
    assert.ok(accepts[0]?.when.split(" && ").includes("!editorTabMovesFocus"));
    const bundle = files.get("extension/dist/extension.js") ?? "";
    assert.match(bundle, /"phi3\.suggestionRefreshing"/);
    assert.match(bundle, /"phi3\.acceptRefreshingSuggestion"/);
  });

  it("holds only what the extension needs", () => {
    const payload = [...files.keys()].filter((name) => name.startsWith("extension/")).sort();
    assert.deepEqual(payload, [
      "extension/LICENSE.txt",
      "extension/dist/extension.js",
      "extension/package.json",
      "extension/readme.md",
    ]);
    assert.ok(statSync(vsixPath).size < 1_000_000, "the vsix stays small");
  });
});
