// Connection state recovery with the official JavaScript client, driven by
// tests/integration/test_recovery.py.
//
//   node tests/js/recovery_check.mjs '<config JSON>'
//
// Client A asks for recovery (auth {recover: true}) and joins a room; client B, on another
// replica, is the sender. A prints {"phase": "ready", ...} and waits for a line on stdin: the test
// has then cut A off (mode "kill": its replica is killed; mode "window": A's transport is dropped
// and A stays away longer than the recovery window). Meanwhile B and the HTTP API send events to
// A's room, to A's user and to everyone; B keeps sending while A reconnects. The last line on
// stdout is what happened, as JSON; any failure exits non-zero with the reason on stderr.

import { createInterface } from "node:readline";
import { Manager } from "socket.io-client";

const config = JSON.parse(process.argv[2] ?? "{}");
const { url, apiUrl, apiKey, marker, user, token, mode, events: E, namespace } = config;
const TIMEOUT_MS = config.timeoutMs ?? 10000;

const watchdog = setTimeout(() => fail(new Error("gave up after 90 s")), 90000);

function fail(error) {
  process.stderr.write(`recovery_check failed: ${error?.stack ?? error}\n`);
  process.exit(1);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what, predicate) {
  const deadline = Date.now() + TIMEOUT_MS;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function openClient(name, options, auth) {
  const manager = new Manager(url, { transports: ["websocket"], timeout: TIMEOUT_MS, ...options });
  const socket = manager.socket(namespace, { auth });
  const client = { name, manager, socket, received: [], connects: 0 };
  socket.onAny((event, ...args) => client.received.push({ event, args }));
  socket.on("connect", () => { client.connects += 1; });
  return client;
}

async function info(client) {
  return client.socket.timeout(TIMEOUT_MS).emitWithAck(E.serverInfo);
}

// The marked my_response payloads A got, each with the offset that came with it (or null).
function marked(client) {
  return client.received
    .filter((item) => item.event === E.myResponse && String(item.args[0]?.data).startsWith(marker))
    .map((item) => ({ data: item.args[0].data, offset: item.args.length > 1 ? item.args.at(-1) : null }));
}

async function apiEmit(messages) {
  const response = await fetch(`${apiUrl}/emit`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${apiKey}` },
    body: JSON.stringify(messages),
  });
  if (response.status !== 202) throw new Error(`POST /api/emit: ${response.status} ${await response.text()}`);
}

async function main() {
  const room = `recovery-${marker}`;
  const reconnectDelay = config.reconnectDelayMs;
  const a = openClient("A", {
    reconnectionDelay: reconnectDelay, reconnectionDelayMax: reconnectDelay, randomizationFactor: 0,
  }, { recover: true, token });
  await until("A connected", () => a.socket.connected);
  const firstPid = a.socket._pid;  // the client's own record of it: proves the server sent one
  a.socket.emit(E.join, { room });
  await until("A in the room", () => a.received.some((i) => String(i.args[0]?.data).includes(room)));
  const before = await info(a);

  let b;
  for (let attempt = 0; attempt < 8 && !b; attempt++) {  // new sessions go round-robin
    const candidate = openClient("B", { reconnection: false }, undefined);
    await until("B connected", () => candidate.socket.connected);
    if ((await info(candidate)).replica !== before.replica) b = candidate;
    else candidate.manager.engine.close();
  }
  if (!b) throw new Error(`every sender landed on ${before.replica}`);

  const sent = { b: [], api: [] };
  const fromB = (i) => {
    const data = `${marker} b${i}`;
    if (i % 2) b.socket.emit(E.myBroadcastEvent, { data });
    else b.socket.emit(E.myRoomEvent, { room, data });
    sent.b.push(data);
  };
  fromB(0);  // live, before the cut: it comes with an offset
  await until("the live event", () => marked(a).length === 1);

  let disconnectedAt = null;
  a.socket.on("disconnect", () => { disconnectedAt ??= Date.now(); });
  process.stdout.write(JSON.stringify({ phase: "ready", replica: before.replica }) + "\n");
  const lines = createInterface({ input: process.stdin });
  await new Promise((resolve) => lines.once("line", resolve));
  if (mode === "window") a.manager.engine.close();  // the transport drops; A reconnects later
  await until("A disconnected", () => disconnectedAt !== null);

  // While A is away: from B (a broadcast or a room event each), then one batch from the API (one
  // publisher, in order) to A's user, its room and everyone: more than the replicas keep in memory.
  for (let i = 1; i <= 30; i++) fromB(i);
  const batch = [];
  for (let i = 0; i < 100; i++) {
    const data = `${marker} api${i}`;
    const to = [{ user }, { room }, "all"][i % 3];
    batch.push({ event: E.myResponse, data: { data }, to });
    sent.api.push(data);
  }
  await apiEmit(batch);
  // And while A reconnects: B keeps sending until A is back, and a little after.
  let i = 31;
  while (a.connects < 2 || i < 61) {
    fromB(i++);
    await sleep(50);
    if (i > 400) throw new Error("A did not reconnect");
  }
  const after = await info(a);
  const last = `${marker} b-after`;
  b.socket.emit(E.myRoomEvent, { room, data: last });  // the room is A's again
  sent.b.push(last);
  const expected = sent.b.length + sent.api.length;
  await until("every event", () => marked(a).length >= expected || mode === "window").catch(() => {});
  await sleep(500);  // anything sent twice would arrive by now

  const result = {
    before, after, firstPid, recovered: a.socket.recovered, sameId: before.sid === after.sid,
    connects: a.connects, awayMs: Date.now() - disconnectedAt, sent, received: marked(a),
  };
  a.socket.disconnect();
  b.socket.disconnect();
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
}

main().catch(fail);
