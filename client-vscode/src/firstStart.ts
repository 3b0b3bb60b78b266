/**
 * When a window's first server starts. Loading a model takes seconds of CPU and much memory
 * (Phi-3-mini in fp32: ~9 GB), so an empty window (no folder, no document the server completes
 * in) starts none until such a document opens there.
 *
 * Plain module (no VS Code API).
 */

/**
 * The URI schemes of the documents the server completes in: files, untitled documents and the
 * cells of notebooks (each cell a document of its own). Not the read-only views of other
 * documents (`git:`, `output:`, diffs' originals).
 */
export const COMPLETED_SCHEMES: readonly string[] = ["file", "untitled", "vscode-notebook-cell"];

/** True when a window with `folderCount` folders and these open documents needs a server now. */
export function needsServerNow(folderCount: number, documentSchemes: readonly string[]): boolean {
  return folderCount > 0 || documentSchemes.some(isCompletedScheme);
}

export function isCompletedScheme(scheme: string): boolean {
  return COMPLETED_SCHEMES.includes(scheme);
}
