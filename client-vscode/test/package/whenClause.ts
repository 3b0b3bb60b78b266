/**
 * Evaluates a keybinding's `when` clause against context keys as VS Code does, for the part of
 * its grammar the manifest uses: keys (true when their value is truthy), `!`, `&&` (binding
 * tighter than `||`), `||`, parentheses and `key in otherKey` (true when the array that
 * `otherKey` holds includes the value of `key`, or the object has it as a property). Anything
 * else throws, so that a clause this cannot read fails the test rather than passing it.
 */

export type Context = Readonly<Record<string, unknown>>;

const TOKEN = /\s*(\|\||&&|!|\(|\)|[A-Za-z_][\w.-]*)/y;

function tokens(clause: string): string[] {
  const found: string[] = [];
  TOKEN.lastIndex = 0;
  while (TOKEN.lastIndex < clause.trimEnd().length) {
    const match = TOKEN.exec(clause);
    if (match === null) {
      throw new Error(`cannot read the when clause at ${String(TOKEN.lastIndex)}: ${clause}`);
    }
    found.push(match[1] ?? "");
  }
  return found;
}

export function evaluateWhen(clause: string, context: Context): boolean {
  const words = tokens(clause);
  let next = 0;
  const peek = () => words[next];
  const take = (expected?: string) => {
    const word = words[next++];
    if (word === undefined || (expected !== undefined && word !== expected)) {
      throw new Error(`expected ${expected ?? "more"} in the when clause: ${clause}`);
    }
    return word;
  };
  const isKey = (word: string | undefined) => word !== undefined && /^[A-Za-z_]/.test(word);
  const primary = (): boolean => {
    if (peek() === "(") {
      take("(");
      const value = or();
      take(")");
      return value;
    }
    const key = take();
    if (!isKey(key) || key === "in") {
      throw new Error(`expected a context key, got ${key}: ${clause}`);
    }
    if (peek() === "in") {
      take("in");
      const container = context[take()];
      if (Array.isArray(container)) {
        return container.includes(context[key]);
      }
      const item = context[key];
      return (
        typeof item === "string" &&
        typeof container === "object" &&
        container !== null &&
        Object.hasOwn(container, item)
      );
    }
    return Boolean(context[key]);
  };
  const unary = (): boolean => {
    if (peek() === "!") {
      take("!");
      return !unary();
    }
    return primary();
  };
  const and = (): boolean => {
    let value = unary();
    while (peek() === "&&") {
      take("&&");
      value = unary() && value;
    }
    return value;
  };
  const or = (): boolean => {
    let value = and();
    while (peek() === "||") {
      take("||");
      value = and() || value;
    }
    return value;
  };
  const value = or();
  if (next !== words.length) {
    throw new Error(`unexpected ${String(peek())} in the when clause: ${clause}`);
  }
  return value;
}
