/**
 * What a user does in the VS Code workbench, through the page: the command palette, Quick Open,
 * the editor, hovers, the status bar and webviews. Selectors are VS Code 1.139's DOM.
 */

/** The extension's status bar item: `<publisher>.<name>.<item id>`. */
const STATUS_ITEM = "#phi3-lsp\\.phi3-lsp\\.phi3\\.status";
const EDITOR = ".editor-group-container.active .monaco-editor";
const QUICK_INPUT = ".quick-input-widget";

/** The editor renders spaces as U+00A0 in the view lines. */
function plainText(text) {
  return text.replace(/\u00a0/g, " ");
}

export class Workbench {
  constructor(page) {
    this.page = page;
  }

  /** Waits for the workbench and its status bar to be on screen. */
  async waitUntilLoaded(timeoutMs) {
    await this.page.locator(".monaco-workbench .part.statusbar").waitFor({ timeout: timeoutMs });
  }

  /** The status bar item's accessible label (icon name, text, tooltip), or null before it shows. */
  async statusLabel() {
    const label = this.page.locator(`${STATUS_ITEM} .statusbar-item-label`);
    if ((await label.count()) === 0) {
      return null;
    }
    return (await label.getAttribute("aria-label")) ?? "";
  }

  /** The text of the whole status bar: every item, this extension's and VS Code's own. */
  async statusBarText() {
    return plainText(await this.page.locator(".part.statusbar").innerText());
  }

  /** The codicon the status bar item shows: "sparkle" (ready), "error", "loading", "sync"... */
  async statusIcon() {
    const icon = this.page.locator(`${STATUS_ITEM} .codicon`).first();
    if ((await icon.count()) === 0) {
      return null;
    }
    const classes = (await icon.getAttribute("class")) ?? "";
    return /codicon-([a-z-]+)/.exec(classes.replace("codicon-modifier-spin", ""))?.[1] ?? null;
  }

  /**
   * Hovers the status bar item and returns its tooltip's text, running `whileOpen` (a screenshot)
   * before moving the mouse to an empty part of the editor area and waiting for the tooltip to close
   * (a key would close it too, but also dismiss ghost text).
   */
  async statusTooltip(timeoutMs, whileOpen = async () => undefined) {
    await this.page.locator(STATUS_ITEM).hover();
    const hover = this.page
      .locator(".monaco-hover, .workbench-hover")
      .filter({ hasText: "Click for Phi-3 commands" })
      .first();
    await hover.waitFor({ timeout: timeoutMs });
    const text = plainText(await hover.innerText());
    await whileOpen();
    const editorArea = await this.page.locator(".part.editor").boundingBox();
    if (editorArea !== null) {
      const { x, y, width, height } = editorArea;
      await this.page.mouse.move(x + width / 2, y + height - 40, { steps: 5 });
    }
    await hover.waitFor({ state: "hidden", timeout: timeoutMs });
    return text;
  }

  /** Runs a command from the palette by its title, as a user would (F1, type, Enter). */
  async runCommand(title, timeoutMs) {
    await this.page.keyboard.press("F1");
    const input = this.page.locator(`${QUICK_INPUT} input`);
    await input.waitFor({ timeout: timeoutMs });
    await input.fill(`>${title}`);
    const row = this.page
      .locator(`${QUICK_INPUT} .monaco-list-row`)
      .filter({ hasText: title })
      .first();
    try {
      await row.waitFor({ timeout: timeoutMs });
    } catch {
      throw new Error(`the command palette has no command "${title}"`);
    }
    await row.click();
    await this.page.locator(QUICK_INPUT).waitFor({ state: "hidden", timeout: timeoutMs });
  }

  /** Opens `fileName` from the workspace with Quick Open (Ctrl+P) and focuses its editor. */
  async openFile(fileName, timeoutMs) {
    await this.page.keyboard.press("Control+P");
    const input = this.page.locator(`${QUICK_INPUT} input`);
    await input.waitFor({ timeout: timeoutMs });
    await input.fill(fileName);
    await this.page
      .locator(`${QUICK_INPUT} .monaco-list-row`)
      .filter({ hasText: fileName })
      .first()
      .click({ timeout: timeoutMs });
    await this.page
      .locator(".tab.active")
      .filter({ hasText: fileName })
      .waitFor({ timeout: timeoutMs });
    await this.page.locator(`${EDITOR} .view-lines`).click();
  }

  /** The document text on screen in the active editor: its visible lines, without ghost text. */
  async editorText() {
    const lines = await this.page.locator(`${EDITOR} .view-lines`).evaluate((viewLines) =>
      // Lines are absolutely positioned and reused, so the DOM order is not the line order.
      [...viewLines.querySelectorAll(".view-line")]
        .map((line) => {
          const copy = line.cloneNode(true);
          copy.querySelectorAll("[class*=ghost-text]").forEach((ghost) => ghost.remove());
          return { top: parseFloat(line.style.top || "0"), text: copy.textContent ?? "" };
        })
        .sort((a, b) => a.top - b.top)
        .map((line) => line.text),
    );
    return plainText(lines.join("\n"));
  }

  /** Inline suggestion text on screen: the part on the cursor's line, then the lines below. */
  async ghostText() {
    const sameLine = await this.page.locator(`${EDITOR} .ghost-text-decoration`).allInnerTexts();
    // A line below, not its `.ghost-text` parts: VS Code renders a line in parts of at most 50
    // characters, and taking each part for a line cut "visiting Paris." into "Paris" and ".".
    const below = await this.page
      .locator(`${EDITOR} .suggest-preview-text .view-line`)
      .allInnerTexts();
    const parts = [sameLine.join(""), ...below].filter((part) => part !== "");
    return plainText(parts.join("\n"));
  }

  /** The label of the suggest widget's selected item when the widget is open, else undefined. */
  async selectedSuggestion() {
    const labels = await this.page
      .locator(`${EDITOR} .suggest-widget.visible .monaco-list-row.focused .label-name`)
      .allInnerTexts();
    return labels[0];
  }

  /** Labels in the suggest widget (classic completion list) when it is open, else []. */
  async suggestWidgetLabels() {
    return this.page
      .locator(`${EDITOR} .suggest-widget.visible .monaco-list-row .label-name`)
      .allInnerTexts();
  }

  /**
   * Moves the mouse onto the middle of `word` in the active editor (its first occurrence) and
   * returns the text of the hover that opens.
   */
  async hoverWord(word, timeoutMs) {
    const point = await this.page.evaluate(
      ({ editorSelector, word }) => {
        const lines = document.querySelector(`${editorSelector} .view-lines`);
        const walker = document.createTreeWalker(lines, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node !== null; node = walker.nextNode()) {
          const at = node.textContent.indexOf(word);
          if (at >= 0) {
            const range = document.createRange();
            range.setStart(node, at);
            range.setEnd(node, at + word.length);
            const box = range.getBoundingClientRect();
            return { x: box.left + box.width / 2, y: box.top + box.height / 2 };
          }
        }
        return null;
      },
      { editorSelector: EDITOR, word },
    );
    if (point === null) {
      throw new Error(`"${word}" is not on screen in the editor`);
    }
    // Two moves: VS Code opens a hover on mouse movement over the word, not on a jump alone.
    await this.page.mouse.move(point.x - 3, point.y);
    await this.page.mouse.move(point.x, point.y, { steps: 3 });
    const hover = this.page.locator(`${EDITOR} .monaco-hover .hover-contents, .monaco-hover .hover-contents`).filter({ hasText: word });
    await hover.first().waitFor({ timeout: timeoutMs });
    return plainText(await hover.first().innerText());
  }

  /** Text of the first notification toast that contains `needle`, once one shows. */
  async notificationContaining(needle, timeoutMs) {
    const toast = this.page
      .locator(".notifications-toasts .notification-toast")
      .filter({ hasText: needle });
    await toast.first().waitFor({ timeout: timeoutMs });
    return plainText(await toast.first().innerText());
  }

  /** Text of the first webview frame (markdown preview, ...) whose body contains `needle`. */
  async webviewTextContaining(needle, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      for (const frame of this.page.frames()) {
        if (frame === this.page.mainFrame()) {
          continue;
        }
        const text = await frame
          .evaluate(() => document.body?.innerText ?? "")
          .catch(() => "");
        if (text.includes(needle)) {
          return text;
        }
      }
      await this.page.waitForTimeout(250);
    }
    return null;
  }
}
