// Connection state recovery with the official JavaScript client, driven by
// tests/integration/test_recovery.py.
//
//   node tests/js/recovery_check.mjs '<config JSON>'
//
// Client A asks for recovery (auth {recover: true}) on `namespace` (the main one or the chat's)
// and joins a room; client B, on another replica, is the sender. A prints {"phase": "ready", ...}
// and waits for a line on stdin: the test has then cut A off (modes "kill", "drain" and "broker":
// its replica is killed, drained, or killed while RabbitMQ is down; mode "window": A's transport
// is dropped and A stays away longer than the recovery window). Meanwhile B and the HTTP API send
// events to A's room, to A's user (main namespace; the worker's notifications too) and to
// everyone; B keeps sending while A reconnects. On /chat, B's events are chat messages, and A says something after it is back. The
// last line on stdout is what happened, as JSON; any failure exits non-zero with the reason on
// stderr.

import { createInterface } from "node:readline";
import { Manager } from "socket.io-client";

const config = JSON.parse(process.argv[2] ?? "{}");
const { url, apiUrl, apiKey, marker, user, token, mode, events: E, namespace } = config;
const TIMEOUT_MS = config.timeoutMs ?? 10000;
const CHAT = namespace === config.chatNamespace;
// How long a refused API emit (503: the broker is away) is tried again; 0: a refusal fails.
const API_RETRY_MS = config.apiRetryMs ?? 0;

const watchdog = setTimeout(() => fail(new Error("gave up after 100 s")), 100000);

function fail(error) {
  process.stderr.write(`recovery_check failed: ${error?.stack ?? error}\n`);
  process.exit(1);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what, predicate, timeoutMs = TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// A client on `namespace`; on /chat it also opens the main namespace on the same connection
// (`main`), which answers server_info.
function openClient(name, options, auth) {
  const manager = new Manager(url, { transports: ["websocket"], timeout: TIMEOUT_MS, ...options });
  const socket = manager.socket(namespace, { auth });
  const main = CHAT ? manager.socket(config.mainNamespace) : socket;
  const client = { name, manager, socket, main, received: [], connects: 0 };
  socket.onAny((event, ...args) => client.received.push({ event, args }));
  socket.on("connect", () => { client.connects += 1; client.connectedAt = Date.now(); });
  return client;
}

const connected = (client) => client.socket.connected && client.main.connected;

// Its replica and its sid on `namespace`.
async function info(client) {
  const answer = await client.main.timeout(TIMEOUT_MS).emitWithAck(E.serverInfo);
  return { replica: answer.replica, sid: CHAT ? client.socket.id : answer.sid };
}

// The marked events A got (my_response payloads, the worker's notifications, and chat messages
// on /chat), each with the offset that came with it (or null).
function marked(client) {
  const text = (item) => (item.event === E.myResponse ? item.args[0]?.data
    : item.event === E.notification ? item.args[0]?.data?.text
      : CHAT && item.event === E.chatMessage ? item.args[0]?.text : undefined);
  return client.received
    .filter((item) => String(text(item)).startsWith(marker))
    .map((item) => ({ data: text(item), offset: item.args.length > 1 ? item.args.at(-1) : null }));
}

async function apiPost(path, body) {
  const deadline = Date.now() + API_RETRY_MS;
  for (;;) {
    const response = await fetch(`${apiUrl}${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${apiKey}` },
      body: JSON.stringify(body),
    });
    if (response.status === 202) return;
    const refusal = `POST /api${path}: ${response.status} ${await response.text()}`;
    if (response.status !== 503 || Date.now() > deadline) throw new Error(refusal);
    await sleep(250);  // nothing was sent: the broker is away
  }
}

async function joinRoom(client, room) {
  if (!CHAT) {
    client.socket.emit(E.join, { room });
    await until(`${client.name} in the room`,
      () => client.received.some((i) => String(i.args[0]?.data).includes(room)));
    return;
  }
  const answer = await client.socket.timeout(TIMEOUT_MS).emitWithAck(E.chatJoin, { room, name: client.name });
  if (answer?.room !== room) throw new Error(`${client.name} could not join: ${JSON.stringify(answer)}`);
}

async function main() {
  const room = `recovery-${marker}`;
  const reconnectDelay = config.reconnectDelayMs;
  const a = openClient("A", {
    reconnectionDelay: reconnectDelay, reconnectionDelayMax: reconnectDelay, randomizationFactor: 0,
  }, { recover: true, token });
  await until("A connected", () => connected(a));
  const firstPid = a.socket._pid;  // the client's own record of it: proves the server sent one
  await joinRoom(a, room);
  const before = await info(a);

  let b;
  for (let attempt = 0; attempt < 8 && !b; attempt++) {  // new sessions go round-robin
    const candidate = openClient("B", { reconnection: false }, undefined);
    await until("B connected", () => connected(candidate));
    if ((await info(candidate)).replica !== before.replica) b = candidate;
    else candidate.manager.engine.close();
  }
  if (!b) throw new Error(`every sender landed on ${before.replica}`);
  if (CHAT) await joinRoom(b, room);  // only members talk in a chat room

  const sent = { a: [], b: [], api: [], worker: [] };
  const fromB = (i) => {
    const data = `${marker} b${i}`;
    if (CHAT) b.socket.emit(E.chatSay, { room, text: data });
    else if (i % 2) b.socket.emit(E.myBroadcastEvent, { data });
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
  const targets = CHAT ? [{ room }, "all"] : [{ user }, { room }, "all"];
  for (let i = 0; i < 100; i++) {
    const data = `${marker} api${i}`;
    batch.push({ event: E.myResponse, data: { data }, to: targets[i % targets.length], namespace });
    sent.api.push(data);
  }
  // Then notifications to A's user, which the worker delivers (main namespace). While the broker
  // is away the API answers 503 (nothing sent) and they are tried again until accepted.
  const apiSent = (async () => {
    await apiPost("/emit", batch);
    for (let i = 0; i < (CHAT ? 0 : 5); i++) {
      const text = `${marker} worker${i}`;
      await apiPost("/notifications", { to: { user }, data: { text } });
      sent.worker.push(text);
    }
  })();
  apiSent.catch(() => {});  // awaited below
  // And while A reconnects: B keeps sending until A is back, and a little after.
  let i = 31;
  while (a.connects < 2 || i < 61) {
    fromB(i++);
    await sleep(50);
    if (i > 400) throw new Error("A did not reconnect");
  }
  await apiSent;
  const after = await info(a);
  const last = `${marker} b-after`;
  if (CHAT) b.socket.emit(E.chatSay, { room, text: last });
  else b.socket.emit(E.myRoomEvent, { room, data: last });  // the room is A's again
  sent.b.push(last);
  let aSaid = null;
  if (CHAT) {  // and A may still talk in it
    const text = `${marker} a-after`;
    aSaid = await a.socket.timeout(TIMEOUT_MS).emitWithAck(E.chatSay, { room, text });
    sent.a.push(text);
  }
  const expected = sent.a.length + sent.b.length + sent.api.length + sent.worker.length;
  const everything = config.everythingMs ?? TIMEOUT_MS;
  await until("every event", () => marked(a).length >= expected || mode === "window", everything)
    .catch(() => {});
  await sleep(500);  // anything sent twice would arrive by now

  const result = {
    before, after, firstPid, recovered: a.socket.recovered, sameId: before.sid === after.sid,
    connects: a.connects, awayMs: a.connectedAt - disconnectedAt, backAt: a.connectedAt,
    sent, received: marked(a), aSaid,
  };
  for (const socket of [a.socket, a.main, b.socket, b.main]) socket.disconnect();
  clearTimeout(watchdog);
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
}

main().catch(fail);
