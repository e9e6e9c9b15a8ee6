#!/usr/bin/env bash
# Build the VS Code extension (editors/vscode) into a .vsix with the standard packager.
# Needs node and npm (the npm registry is used for vscode-languageclient and @vscode/vsce).
# Install the result with: code --install-extension editors/vscode/netspec-*.vsix
set -euo pipefail
cd "$(dirname "$0")/../editors/vscode"
npm install --no-audit --no-fund --omit=dev
npx --yes @vscode/vsce@3 package --skip-license --allow-missing-repository "$@"
ls -l ./*.vsix
