// The netspec extension: highlighting comes from the TextMate grammar; everything else
// (diagnostics, hover, inlay shapes, completion, formatting) from `netspec lsp`.
const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace
    .getConfiguration("netspec")
    .get("server.command", ["netspec", "lsp"]);
  const serverOptions = { command, args, transport: TransportKind.stdio };
  const clientOptions = { documentSelector: [{ scheme: "file", language: "netspec" }] };
  client = new LanguageClient("netspec", "netspec language server", serverOptions, clientOptions);
  context.subscriptions.push({ dispose: () => client && client.stop() });
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
