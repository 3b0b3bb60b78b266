/**
 * The items of an inline completion answer, which comes as a list or as an array of items (in
 * the VS Code API and in LSP alike), or as nothing.
 *
 * Plain module (no VS Code API).
 */
export function answerItems<Item>(answer: Item[] | { items: Item[] } | null | undefined): Item[] {
  return Array.isArray(answer) ? answer : (answer?.items ?? []);
}
