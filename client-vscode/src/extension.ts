/** Entry point: wires settings, the status bar, the commands and the server session together. */

import * as vscode from "vscode";
import { reportOnceLoaded } from "./architectureRefresh";
import { ArchitectureDocuments } from "./architectureView";
import { subscribeInBackground } from "./backgroundSubscription";
import { AnswerCancelled } from "./commandAnswer";
import { acceptRefreshing, askAgainAfterAccept } from "./editorAsks";
import { dismissInDocument } from "./escapeDismissal";
import { GeneratingDocument } from "./generatingDocument";
import {
  isArchitectureReport,
  isServerStatus,
  isWeightReads,
  MEASURE_WEIGHT_READS_COMMAND,
  SHOW_ARCHITECTURE_COMMAND,
  STATUS_COMMAND,
} from "./protocol";
import { PendingSuggestions } from "./pendingSuggestions";
import { RefreshingSuggestion } from "./refreshingSuggestion";
import {
  loadedWithoutWeights,
  OFFLINE_MODEL,
  USE_OFFLINE_MODEL_COMMAND,
  useOfflineModel,
} from "./noWeights";
import { onActivePythonChanged } from "./pythonEnvironment";
import { type CommandRequest, StartFailed } from "./serverCommands";
import { ServerSession } from "./serverSession";
import { WaitCancelled } from "./serverWait";
import { writeSetting } from "./settingsWrites";
import {
  type ExtensionSettings,
  INTERPRETER_KEYS,
  readSettings,
  SETTINGS_SECTION,
} from "./settings";
import { SHOW_MENU_COMMAND, SHOW_OUTPUT_COMMAND, StatusBar } from "./statusBar";
import { SUGGESTION_ACCEPTED_COMMAND } from "./suggestionAccepted";
import { describeWeightReads } from "./weightReads";

const RESTART_COMMAND = "phi3.restartServer";
const TOGGLE_INLINE_COMMAND = "phi3.toggleInlineCompletions";
/**
 * Bound to Escape in package.json in the editor of a document `PENDING_CONTEXT` holds (its
 * suggestion is pending), or while a suggestion shows in the editor of a document
 * `GENERATING_CONTEXT` holds (the server generates its rest).
 */
const DISMISS_COMMAND = "phi3.dismissSuggestion";
const PENDING_CONTEXT = "phi3.pendingDocuments";
const GENERATING_CONTEXT = "phi3.generatingDocuments";
/** Bound to Tab and Ctrl+Right in package.json while `REFRESHING_CONTEXT` holds. */
const ACCEPT_REFRESHING_COMMAND = "phi3.acceptRefreshingSuggestion";
const REFRESHING_CONTEXT = "phi3.suggestionRefreshing";

function currentSettings(): ExtensionSettings {
  const section = vscode.workspace.getConfiguration(SETTINGS_SECTION);
  return readSettings((key) => section.get(key));
}

/**
 * Sets a context key that Escape's bindings compare with the focused editor's `resource` (or
 * notebook cell) to the documents at `uris`: as URIs, which setContext turns into the strings
 * `resource` holds (in a remote window, SSH, WSL or code-server, a file's is not the extension
 * host's `file:` URI).
 */
function setDocumentsContext(key: string, uris: readonly string[]): void {
  const documents = uris.map((uri) => vscode.Uri.parse(uri));
  void vscode.commands.executeCommand("setContext", key, documents);
}

/** Kept for `deactivate`, which must return the server's shutdown for VS Code to wait on it. */
let activeSession: ServerSession | undefined;

export function activate(context: vscode.ExtensionContext): void {
  const output = vscode.window.createOutputChannel("Phi-3", { log: true });
  const statusBar = new StatusBar(currentSettings);
  const architecture = new ArchitectureDocuments();
  const pendingSuggestions = new PendingSuggestions((uris) => {
    setDocumentsContext(PENDING_CONTEXT, uris);
  });
  const refreshingSuggestion = new RefreshingSuggestion<vscode.TextDocument, vscode.Position>(
    (refreshing) => {
      void vscode.commands.executeCommand("setContext", REFRESHING_CONTEXT, refreshing);
    },
  );
  const generatingDocument = new GeneratingDocument((uris) => {
    setDocumentsContext(GENERATING_CONTEXT, uris);
  });
  const session = new ServerSession({
    output,
    statusBar,
    settings: currentSettings,
    pendingSuggestions,
    refreshingSuggestion,
    generatingDocument,
  });
  activeSession = session;
  context.subscriptions.push(output, statusBar, architecture, session);

  const register = (id: string, run: () => unknown): void => {
    context.subscriptions.push(vscode.commands.registerCommand(id, run));
  };
  register(SHOW_ARCHITECTURE_COMMAND, () =>
    showArchitecture(session, architecture, statusBar, output),
  );
  register(MEASURE_WEIGHT_READS_COMMAND, () => measureWeightReads(session, statusBar, output));
  register(RESTART_COMMAND, () => session.restart());
  register(TOGGLE_INLINE_COMMAND, () => toggleInlineCompletions());
  register(SHOW_OUTPUT_COMMAND, () => {
    output.show();
  });
  register(SHOW_MENU_COMMAND, () => showMenu(statusBar));
  register(USE_OFFLINE_MODEL_COMMAND, () => useOfflineModel());
  // Run by VS Code, with the suggestion's place, once a suggestion is accepted to its end.
  context.subscriptions.push(
    vscode.commands.registerCommand(SUGGESTION_ACCEPTED_COMMAND, askAgainAfterAccept),
  );
  // Tab ("all") or Ctrl+Right ("word") while a growing suggestion is hidden to show it grown.
  context.subscriptions.push(
    vscode.commands.registerCommand(ACCEPT_REFRESHING_COMMAND, (part: unknown) =>
      acceptRefreshing(refreshingSuggestion, part === "word" ? "word" : "all"),
    ),
  );
  context.subscriptions.push(
    statusBar.onServerStatusChanged(() => {
      generatingDocument.statusChanged(statusBar.serverStatus?.state);
    }),
  );
  // Escape while a suggestion is pending, or shown while the server generates, in the focused
  // editor (the bindings apply in that document's editor only): turn its document's down, hide
  // any that is shown, and have the server stop what it still generates there. The server knows
  // a document by the URI the editor's has (the client converts no URIs).
  register(DISMISS_COMMAND, () => {
    const focused = vscode.window.activeTextEditor?.document.uri.toString();
    if (focused !== undefined) {
      dismissInDocument(focused, {
        pending: pendingSuggestions,
        generating: generatingDocument,
        stopGeneration: (uri) => {
          session.dismissSuggestion(uri);
        },
      });
    }
    return vscode.commands.executeCommand("editor.action.inlineSuggest.hide");
  });

  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration((event) => {
      // Everything else reaches the server through workspace/didChangeConfiguration. A change
      // of phi3.pythonPath that leaves the interpreter as it was (a workspace value that
      // Restricted Mode ignores) keeps the server and its model.
      if (INTERPRETER_KEYS.some((key) => event.affectsConfiguration(key))) {
        void session.restartIfInterpreterChanged();
      }
      if (event.affectsConfiguration(SETTINGS_SECTION)) {
        statusBar.render();
      }
    }),
  );
  context.subscriptions.push(
    vscode.workspace.onDidGrantWorkspaceTrust(() => {
      void session.workspaceTrusted();
    }),
  );
  // Neither is awaited: VS Code runs none of this extension's commands before activate() has
  // ended, and the Python extension's API (which the first start also asks for its
  // environment: a start under way, whose wait commands show) or a start can take long or never
  // end. The lifecycle's promises never reject.
  context.subscriptions.push(
    subscribeInBackground(
      // With phi3.pythonPath set, the interpreter chosen stays the same: no restart.
      () =>
        onActivePythonChanged(() => {
          void session.restartIfInterpreterChanged();
        }),
      (error) => {
        output.warn(`Not following the Python extension's environment: ${String(error)}`);
      },
    ),
  );
  void session.startWhenNeeded();
}

/** Shuts the server down cleanly (shutdown + exit) before VS Code ends the extension host. */
export function deactivate(): Promise<void> | undefined {
  const session = activeSession;
  activeSession = undefined;
  return session?.stop();
}

async function showArchitecture(
  session: ServerSession,
  documents: ArchitectureDocuments,
  statusBar: StatusBar,
  output: vscode.LogOutputChannel,
): Promise<void> {
  const title = "Show Phi-3 architecture";
  try {
    const report = await askServer(
      session,
      { command: SHOW_ARCHITECTURE_COMMAND, title, progress: "Phi-3: reading the architecture" },
      isArchitectureReport,
    );
    await documents.show(report);
    // Built before the weights came: its view shows the loaded model once it has loaded.
    void reportOnceLoaded(report, statusBar, () =>
      session.executeCommand({ command: SHOW_ARCHITECTURE_COMMAND, title }),
    ).then((loaded) => {
      if (loaded !== undefined) {
        documents.update(loaded);
      }
    });
  } catch (error) {
    await reportFailure(title, error, output);
  }
}

async function measureWeightReads(
  session: ServerSession,
  statusBar: StatusBar,
  output: vscode.LogOutputChannel,
): Promise<void> {
  const title = "Measure how fast the weights read";
  try {
    const reads = await askServer(
      session,
      {
        command: MEASURE_WEIGHT_READS_COMMAND,
        title,
        progress: "Phi-3: reading the model's weights",
      },
      isWeightReads,
    );
    const status = await session.executeCommand({ command: STATUS_COMMAND, title });
    const message = describeWeightReads(reads, isServerStatus(status) ? status : undefined);
    output.info(message);
    void vscode.window.showInformationMessage(message);
  } catch (error) {
    // Without weights there is nothing to read: the way on is a model that has them.
    const offline = loadedWithoutWeights(statusBar.serverStatus)
      ? { title: `Use ${OFFLINE_MODEL}`, run: useOfflineModel }
      : undefined;
    await reportFailure(title, error, output, offline);
  }
}

/** A server command's result, checked against its documented shape. */
async function askServer<T>(
  session: ServerSession,
  request: CommandRequest,
  isDocumentedShape: (result: unknown) => result is T,
): Promise<T> {
  const result = await session.executeCommand(request);
  if (!isDocumentedShape(result)) {
    throw new Error(`the server's answer to ${request.command} has an unexpected shape`);
  }
  return result;
}

/** A command that failed: logged, and shown with a way to the log (and `fix`, if given). */
async function reportFailure(
  command: string,
  error: unknown,
  output: vscode.LogOutputChannel,
  fix?: { readonly title: string; readonly run: () => Promise<void> },
): Promise<void> {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof AnswerCancelled) {
    output.info(message); // the user's own doing, and its notification has gone: nothing to add
    return;
  }
  if (error instanceof WaitCancelled) {
    output.info(message);
    void vscode.window.showInformationMessage(message); // the user's own doing: no error
    return;
  }
  output.error(`${command}: ${message}`);
  if (error instanceof StartFailed) {
    return; // its notification is out already
  }
  const showOutput = "Show output";
  const choices = fix === undefined ? [showOutput] : [fix.title, showOutput];
  const choice = await vscode.window.showErrorMessage(`Phi-3: ${message}`, ...choices);
  if (choice === showOutput) {
    output.show();
  } else if (choice !== undefined) {
    await fix?.run();
  }
}

async function toggleInlineCompletions(): Promise<void> {
  const enabled = currentSettings().inlineCompletions;
  await writeSetting("inlineCompletions", !enabled);
  void vscode.window.setStatusBarMessage(
    `Phi-3 inline completions ${enabled ? "off" : "on"}`,
    3000,
  );
}

async function showMenu(statusBar: StatusBar): Promise<void> {
  const enabled = currentSettings().inlineCompletions;
  const items: (vscode.QuickPickItem & { command: string })[] = [
    ...(loadedWithoutWeights(statusBar.serverStatus)
      ? [
          {
            label: `$(arrow-swap) Use the offline model ${OFFLINE_MODEL}`,
            description: "this model has no weights here",
            command: USE_OFFLINE_MODEL_COMMAND,
          },
        ]
      : []),
    { label: "$(type-hierarchy) Show Phi-3 architecture", command: SHOW_ARCHITECTURE_COMMAND },
    {
      label: "$(dashboard) Measure how fast the weights read",
      command: MEASURE_WEIGHT_READS_COMMAND,
    },
    {
      label: enabled
        ? "$(circle-slash) Turn inline completions off"
        : "$(sparkle) Turn inline completions on",
      command: TOGGLE_INLINE_COMMAND,
    },
    { label: "$(debug-restart) Restart server", command: RESTART_COMMAND },
    { label: "$(output) Show output", command: SHOW_OUTPUT_COMMAND },
    {
      label: "$(settings-gear) Open settings",
      command: "workbench.action.openSettings",
    },
  ];
  const choice = await vscode.window.showQuickPick(items, { placeHolder: "Phi-3" });
  if (choice === undefined) {
    return;
  }
  if (choice.command === "workbench.action.openSettings") {
    await vscode.commands.executeCommand(choice.command, SETTINGS_SECTION);
  } else {
    await vscode.commands.executeCommand(choice.command);
  }
}
