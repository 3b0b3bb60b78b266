import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { exitedWhileStartingAdvice, ServerOutput } from "../../src/serverOutput";
import { settled } from "./fakeSession";

/** An output channel that keeps each line with its level. */
function recordingChannel() {
  const lines: string[] = [];
  const at = (level: string) => (line: string) => {
    lines.push(`${level}: ${line}`);
  };
  return {
    lines,
    channel: { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") },
  };
}

/** A process's stderr as the server's output reads it. */
function stderrOf(output: ServerOutput) {
  const stderr = new PassThrough();
  const { lines, channel } = recordingChannel();
  output.stdioOptions.stderr(stderr, channel);
  return { stderr, lines };
}

describe("the server's output", () => {
  it("shows stdout as info and each stderr line at its level", async () => {
    let initialized = false;
    const output = new ServerOutput(() => initialized);
    const stdout = new PassThrough();
    const { lines, channel } = recordingChannel();
    output.stdioOptions.stdout(stdout, channel);
    const { stderr, lines: errorLines } = stderrOf(output);
    stdout.end("a stray print\n");
    const warning = "2026-11-28 03:51:21,006 WARNING phi3_lsp.settings: maxNewTokens must be 1-512";
    stderr.write(`${warning}\n`);
    await settled();
    initialized = true; // from now on the server sends its own warnings as window/logMessage
    stderr.end(`${warning}\nTraceback (most recent call last):\n`);
    await output.lastStderrLine(1000);
    assert.deepEqual(lines, ["info: a stray print"]);
    assert.deepEqual(errorLines, [
      `warn: ${warning}`,
      `debug: ${warning}`,
      "error: Traceback (most recent call last):",
    ]);
  });

  it("quotes the last line of an exit's stderr, once all of it has come", async () => {
    const output = new ServerOutput(() => false);
    const { stderr } = stderrOf(output);
    stderr.write("Traceback (most recent call last):\n");
    const lastLine = output.lastStderrLine(1000);
    stderr.end("ModuleNotFoundError: No module named 'torch'.\n\n");
    assert.equal(
      exitedWhileStartingAdvice(await lastLine),
      "Phi-3: the server exited while starting: ModuleNotFoundError: No module named 'torch'. " +
        "Its lines in the output say more. Fix the cause (a module missing: reinstall phi3_lsp, " +
        "or set phi3.pythonPath to a Python that has it), then Retry.",
    );
  });

  it("does not wait for good for a stderr that stays open", async () => {
    const output = new ServerOutput(() => false);
    const { stderr } = stderrOf(output);
    stderr.write("Killed\n");
    assert.equal(await output.lastStderrLine(10), "Killed");
  });

  it("says so when the server exited without a word", async () => {
    const output = new ServerOutput(() => false);
    stderrOf(output).stderr.end();
    assert.match(
      exitedWhileStartingAdvice(await output.lastStderrLine(1000)),
      /^Phi-3: the server exited while starting, without a line on stderr\./,
    );
  });
});
