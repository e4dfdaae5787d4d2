// The official JavaScript Socket.IO client against the stack, driven by
// tests/integration/test_js_client.py.
//
//   node tests/js/client_check.mjs '<config JSON>'
//
// The config carries the stack's URL, a unique marker, and the event names and namespaces from
// common/contract.py, so no event name is spelt here. Two clients: one polling-only (it keeps no
// cookies: nginx must route its requests by the session id alone) and one WebSocket-only, on
// different replicas. They exchange a broadcast, a room event, acks with several arguments and a
// server-to-client question. One JSON object with what happened goes to stdout; the Python test
// asserts on it. Any failure exits non-zero with the reason on stderr.

import { Manager } from "socket.io-client";

const config = JSON.parse(process.argv[2] ?? "{}");
const { url, marker, events: E, namespaces: NS } = config;
const TIMEOUT_MS = config.timeoutMs ?? 10000;

const watchdog = setTimeout(
  () => fail(new Error(`gave up after ${TIMEOUT_MS * 4} ms`)), TIMEOUT_MS * 4);

function fail(error) {
  process.stderr.write(`client_check failed: ${error?.stack ?? error}\n`);
  process.exit(1);
}

// One Engine.IO session (one Manager) per client, multiplexing the main and echo namespaces.
async function openClient(transport) {
  const manager = new Manager(url, {
    transports: [transport],
    upgrade: false,
    withCredentials: false,
    reconnection: false,
    timeout: TIMEOUT_MS,
    autoConnect: false,
  });
  const client = { transport, manager, received: [] };
  client.main = manager.socket(NS.main);
  client.echo = manager.socket(NS.echo);
  client.main.onAny((event, ...args) => client.received.push({ event, args }));
  client.main.on(E.clientQuestion, (question, ack) => ack(`js answer to ${question.data}`));
  await Promise.all([connected(client.main), connected(client.echo)]);
  client.info = await client.main.timeout(TIMEOUT_MS).emitWithAck(E.serverInfo);
  return client;
}

function connected(socket) {
  return new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (error) => reject(new Error(`connect_error: ${error.message}`)));
    socket.connect();
  });
}

function close(client) {
  client.main.disconnect();
  client.echo.disconnect();
  client.manager.engine?.close();
}

// The first `event` received (since the client connected) whose payload satisfies `predicate`.
async function waitFor(client, event, predicate) {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    const found = client.received.find((item) => item.event === event && predicate(item.args[0]));
    if (found) return found.args[0];
    if (Date.now() > deadline) {
      const got = JSON.stringify(client.received);
      throw new Error(`${client.transport}: no matching ${event}; got ${got}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function received(client, data) {
  return client.received.some((item) => item.event === E.myResponse && item.args[0]?.data === data);
}

// An ack with all of its arguments (emitWithAck resolves with the first one only).
function ackArgs(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(TIMEOUT_MS).emit(event, ...args, (error, ...answer) => {
      if (error) reject(new Error(`${event}: no ack (${error.message})`));
      else resolve(answer);
    });
  });
}

async function main() {
  const polling = await openClient("polling");
  let websocket;
  const discarded = [];
  for (let attempt = 0; attempt < 6; attempt++) {  // new sessions go round-robin
    websocket = await openClient("websocket");
    if (websocket.info.replica !== polling.info.replica) break;
    discarded.push(websocket);
    websocket = undefined;
  }
  discarded.forEach(close);
  if (!websocket) throw new Error(`every WebSocket session landed on ${polling.info.replica}`);
  const both = [polling, websocket];

  // A broadcast from the polling client reaches both replicas.
  const broadcast = `broadcast ${marker}`;
  polling.main.emit(E.myBroadcastEvent, { data: broadcast });
  await Promise.all(both.map((c) => waitFor(c, E.myResponse, (p) => p?.data === broadcast)));

  // Both join a room; an event to it from the WebSocket client reaches both.
  const room = `js-room-${marker}`;
  for (const client of both) {
    client.main.emit(E.join, { room });
    await waitFor(client, E.myResponse, (p) => String(p?.data).includes(room));
  }
  const roomData = `room ${marker}`;
  websocket.main.emit(E.myRoomEvent, { room, data: roomData });
  await Promise.all(both.map((c) => waitFor(c, E.myResponse, (p) => p?.data === roomData)));

  // Acks: several arguments back from /echo, the ping payload back, a sum.
  const several = ["text", 7, { nested: [1, null] }, [marker]];
  const echoed = {};
  const pinged = {};
  const summed = {};
  const answered = {};
  for (const client of both) {
    echoed[client.transport] = await ackArgs(client.echo, E.echo, ...several);
    pinged[client.transport] = await ackArgs(client.main, E.myPing, { t: marker });
    summed[client.transport] = await ackArgs(client.echo, E.sum, 1, 2, 3.5);
    // The server asks this client a question; the client's ack comes back to the server.
    client.main.emit(E.askClient, { data: marker });
    const response = await waitFor(client, E.myResponse, (p) => p?.data?.question === marker);
    answered[client.transport] = response.data;
  }

  const result = {};
  for (const client of both) {
    result[client.transport] = {
      replica: client.info.replica,
      serverTransport: client.info.transport,
      engineTransport: client.manager.engine.transport.name,
      sid: client.main.id,
      serverSid: client.info.sid,
      gotBroadcast: received(client, broadcast),
      gotRoomEvent: received(client, roomData),
      echo: echoed[client.transport],
      ping: pinged[client.transport],
      sum: summed[client.transport],
      question: answered[client.transport],
    };
  }
  result.sent = { several, room, broadcast, roomData };
  both.forEach(close);
  clearTimeout(watchdog);
  process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch(fail);
