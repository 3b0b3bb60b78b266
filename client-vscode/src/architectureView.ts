/**
 * Shows the architecture report as a read-only markdown document: a virtual document (scheme
 * `phi3-architecture`, so VS Code offers no save) opened in the markdown preview.
 */

import * as vscode from "vscode";
import { renderArchitectureMarkdown } from "./architectureMarkdown";
import type { ArchitectureReport } from "./protocol";

export const ARCHITECTURE_SCHEME = "phi3-architecture";

export class ArchitectureDocuments
  implements vscode.TextDocumentContentProvider, vscode.Disposable
{
  private readonly documents = new Map<string, string>();
  private readonly changed = new vscode.EventEmitter<vscode.Uri>();
  readonly onDidChange = this.changed.event;
  private readonly registration: vscode.Disposable;

  constructor() {
    this.registration = vscode.workspace.registerTextDocumentContentProvider(
      ARCHITECTURE_SCHEME,
      this,
    );
  }

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.documents.get(uri.toString()) ?? "";
  }

  /** Renders `report` and opens it in the markdown preview (the source view if that fails). */
  async show(report: ArchitectureReport): Promise<void> {
    const uri = this.render(report);
    try {
      await vscode.commands.executeCommand("markdown.showPreview", uri);
    } catch {
      // The built-in markdown extension can be disabled; the source is still readable.
      const document = await vscode.workspace.openTextDocument(uri);
      await vscode.window.showTextDocument(document, { preview: true });
    }
  }

  /** Renders `report` into the document shown for its model, which an open view shows. */
  update(report: ArchitectureReport): void {
    this.render(report);
  }

  private render(report: ArchitectureReport): vscode.Uri {
    const name = report.model.replace(/[\\/:]+/g, "_");
    const uri = vscode.Uri.from({ scheme: ARCHITECTURE_SCHEME, path: `/${name}.md` });
    this.documents.set(uri.toString(), renderArchitectureMarkdown(report));
    this.changed.fire(uri);
    return uri;
  }

  dispose(): void {
    this.registration.dispose();
    this.changed.dispose();
  }
}
