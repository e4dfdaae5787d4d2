// Official socket.io-client sessions that open and then end the way a closed tab or a stopped
// program ends them, driven by tests/browser/test_tab_close.py.
//
//   node tests/js/tab_close.mjs '<config JSON>'
//
// config.clients lists one {transports, end} per client: transports is null for the client's
// default (long-polling first, then the WebSocket upgrade) or a list; end is "disconnect" (the
// client closes its session) or "exit" (its connection is still open when this process exits,
// and the kernel closes it, as when a browser or a program goes away). Each client connects the
// main namespace, waits until it is on its final transport, and asks the server which replica
// and transport it sees. One JSON line with that goes to stdout before the process exits. Any
// failure exits non-zero with the reason on stderr.

import { Manager } from "socket.io-client";

const config = JSON.parse(process.argv[2] ?? "{}");
const { url, clients: specs, serverInfoEvent } = config;
const TIMEOUT_MS = config.timeoutMs ?? 10000;

const watchdog = setTimeout(
  () => fail(new Error(`gave up after ${TIMEOUT_MS * 3} ms`)), TIMEOUT_MS * 3);

function fail(error) {
  process.stderr.write(`tab_close failed: ${error?.stack ?? error}\n`);
  process.exit(1);
}

function withTimeout(promise, what) {
  return Promise.race([promise, new Promise((_, reject) => setTimeout(
    () => reject(new Error(`${what}: nothing after ${TIMEOUT_MS} ms`)), TIMEOUT_MS))]);
}

async function open(spec) {
  const manager = new Manager(url, {
    ...(spec.transports ? { transports: spec.transports } : {}),
    reconnection: false,
    timeout: TIMEOUT_MS,
  });
  const socket = manager.socket("/");
  await withTimeout(new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (error) => reject(new Error(`connect_error: ${error.message}`)));
  }), "connect");
  const upgrades = !spec.transports || spec.transports.length > 1;
  if (upgrades && manager.engine.transport.name !== "websocket") {
    await withTimeout(new Promise((resolve) => manager.engine.once("upgrade", resolve)),
      "the WebSocket upgrade");
  }
  const info = await socket.timeout(TIMEOUT_MS).emitWithAck(serverInfoEvent);
  return {
    spec, manager, socket,
    report: { ...spec, replica: info.replica, serverTransport: info.transport,
              clientTransport: manager.engine.transport.name },
  };
}

async function main() {
  const opened = await Promise.all(specs.map(open));
  for (const client of opened) {
    if (client.spec.end === "disconnect") client.socket.disconnect();  // the manager closes too
  }
  // Give the clients that close a moment to send it; the others are cut by process.exit.
  await new Promise((resolve) => setTimeout(resolve, 300));
  clearTimeout(watchdog);
  process.stdout.write(JSON.stringify(opened.map((client) => client.report)) + "\n",
    () => process.exit(0));
}

main().catch(fail);
