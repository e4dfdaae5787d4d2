// The load generator of `make bench`: WebSocket-only clients of the official socket.io-client in
// one Node process (the runner may start several, each with its share of the clients).
//
//     node bench/generator.mjs '<json config>'
//
// Config: {url, clients, connectRate (per second), addresses (local 127.0.0.x to connect from),
// broadcaster (true in one process: its first client sends the broadcasts), connectTimeoutMs,
// warm (how many clients to connect one after the other before the others come at connectRate)}.
// The rooms scenarios give `targets` instead of url and clients: one {url, room, roomIndex} per
// client (room null for a client that joins no room), and `roomCount`. Each such client connects
// to its own url (a replica's port), sends `join` {room} with an ack and counts as ready once the
// ack came without an error; it expects message k when k % roomCount is its roomIndex (whoever
// sends them: bench/publisher.py or bench/peer/publisher.mjs), and counts any other as misrouted.
//
// It talks to the runner (bench/run.py) in JSON lines: it prints {"event": "warm"} once the warm
// clients are connected, {"event": "connected", ...} once every client connected, failed or timed
// out (members: joined or not), then waits for one command on stdin:
//     {"cmd": "go", "start": <epoch ms>, "messages": M, "intervalMs": I,
//      "window": [<epoch ms>, <epoch ms>], "deadline": <epoch ms>}
// The broadcaster sends message k (k = 0..M-1) at start + k*I as `my_broadcast_event` with
// {data: {i: k, t: <send time, epoch ms>}}; every client records each `my_response` carrying such
// data: its latency (receipt time - t; one machine, one clock), duplicates, and whether it arrived
// inside the window. When every connected client has every message, or at the deadline, it prints
// {"event": "done", ...} with the counts and a latency histogram (0.1 ms buckets) and exits (with
// `targets`: once its stdin is closed).
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const config = JSON.parse(process.argv[2]);
const targets = config.targets ?? null;
if (targets) config.clients = targets.length;
const target = (index) => (targets ? targets[index] : { url: config.url, room: null, roomIndex: -1 });
const now = () => performance.timeOrigin + performance.now();
const say = (message, then) => process.stdout.write(`${JSON.stringify(message)}\n`, then);

const sockets = [];
const errors = new Map(); // message -> count, for connect errors and disconnect reasons
let connected = 0;
let failed = 0;
let joined = 0;
let joinFailed = 0;
let settledClients = 0; // connected (and joined, for members) or failed
const isMember = new Uint8Array(config.clients); // joined a room
let disconnected = 0;
let run = null; // set by "go"

function note(kind, message) {
  const key = `${kind}: ${message}`;
  errors.set(key, (errors.get(key) || 0) + 1);
}

function onResponse(index, payload) {
  const data = payload && payload.data;
  if (run === null || data === null || typeof data !== "object" || !Number.isInteger(data.i)) {
    return; // the greeting on connect, or something else
  }
  const received = now();
  if (data.i < 0 || data.i >= run.messages) {
    run.unexpected += 1;
    return;
  }
  if (targets && data.i % config.roomCount !== target(index).roomIndex) {
    run.misrouted += 1; // an event of a room this client is not in
    return;
  }
  const slot = index * run.messages + data.i;
  if (run.seen[slot]) {
    run.duplicates += 1;
    return;
  }
  run.seen[slot] = 1;
  run.received += 1;
  if (received >= run.window[0] && received <= run.window[1]) run.inWindow += 1;
  const latency = Math.max(0, received - data.t);
  const bucket = Math.round(latency * 10);
  run.histogram.set(bucket, (run.histogram.get(bucket) || 0) + 1);
  if (latency > run.max) run.max = latency;
  run.lastReceipt = received;
}

function open(index, whenSettled = () => {}) {
  const { url, room } = target(index);
  let done = false;
  const settled = () => {
    if (done) return;
    done = true;
    settledClients += 1;
    whenSettled();
  };
  const socket = io(url, {
    transports: ["websocket"],
    // Asks for connection state recovery (the "stack-recovering" system): every event then
    // comes through the replica's recovery log, with its offset.
    ...(config.recover ? { auth: { recover: true } } : {}),
    reconnection: false,
    forceNew: true,
    timeout: config.connectTimeoutMs,
    localAddress: config.addresses[index % config.addresses.length],
  });
  let up = false;
  socket.on("connect", () => {
    up = true;
    connected += 1;
    if (!room) {
      settled();
      return;
    }
    socket.timeout(config.connectTimeoutMs).emit("join", { room }, (error, answer) => {
      if (error || (answer && answer.error)) {
        joinFailed += 1;
        note("join", error ? error.message : answer.error);
      } else {
        joined += 1;
        isMember[index] = 1;
      }
      settled();
    });
  });
  socket.on("connect_error", (error) => {
    failed += 1;
    note("connect_error", error.message);
    settled();
  });
  socket.on("disconnect", (reason) => {
    if (up) {
      disconnected += 1;
      note("disconnect", reason);
    }
  });
  socket.on("my_response", (payload) => onResponse(index, payload));
  sockets.push(socket);
}

// A few clients one after the other (a cold server's first connections one at a time), then the
// others at connectRate, in small batches every 10 ms.
const connectStarted = now();
const warm = Math.min(config.warm || 0, config.clients);
for (let index = 0; index < warm; index++) {
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, config.connectTimeoutMs);
    open(index, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
say({ event: "warm", connected });
const rateStarted = now();
await new Promise((resolve) => {
  let opened = warm;
  const timer = setInterval(() => {
    const due = Math.min(config.clients,
      warm + Math.floor(((now() - rateStarted) / 1000) * config.connectRate) + 1);
    while (opened < due) open(opened++);
    if (opened >= config.clients) {
      clearInterval(timer);
      resolve();
    }
  }, 10);
});
const settleDeadline = now() + config.connectTimeoutMs + 5000;
while (settledClients < config.clients && now() < settleDeadline) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
say({
  event: "connected", connected, failed, pending: config.clients - connected - failed,
  joined, joinFailed,
  seconds: (now() - connectStarted) / 1000,
  errors: Object.fromEntries(errors),
});

const command = await new Promise((resolve) => {
  const lines = createInterface({ input: process.stdin });
  lines.once("line", (line) => {
    lines.close();
    resolve(JSON.parse(line));
  });
});

const clientsAtStart = connected;
run = {
  ...command, seen: new Uint8Array(config.clients * command.messages), received: 0,
  duplicates: 0, unexpected: 0, misrouted: 0, inWindow: 0, histogram: new Map(), max: 0, lastReceipt: null,
};
const cpuBefore = process.cpuUsage();
const disconnectedBefore = disconnected;

if (config.broadcaster && sockets.length > 0) {
  const sender = sockets[0];
  let next = 0;
  const sendDue = () => {
    const t = now();
    while (next < run.messages && run.start + next * run.intervalMs <= t) {
      sender.emit("my_broadcast_event", { data: { i: next, t: now() } });
      next += 1;
    }
    if (next < run.messages) {
      setTimeout(sendDue, Math.max(0, run.start + next * run.intervalMs - now()));
    }
  };
  setTimeout(sendDue, Math.max(0, run.start - now()));
}

// Members: the messages of their room (k % roomCount == roomIndex), if they joined it.
const ofRoom = (roomIndex) => Math.max(0, Math.ceil((run.messages - roomIndex) / config.roomCount));
const expected = targets
  ? targets.reduce((sum, t, index) => sum + (isMember[index] ? ofRoom(t.roomIndex) : 0), 0)
  : clientsAtStart * run.messages;
while (run.received < expected && now() < run.deadline) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
const cpu = process.cpuUsage(cpuBefore);
say({
  event: "done",
  clients: clientsAtStart,
  expected,
  received: run.received,
  duplicates: run.duplicates,
  unexpected: run.unexpected,
  misrouted: run.misrouted,
  members: targets ? isMember.reduce((a, b) => a + b, 0) : 0,
  inWindow: run.inWindow,
  maxMs: run.max,
  lastReceipt: run.lastReceipt,
  disconnected: disconnected - disconnectedBefore,
  errors: Object.fromEntries(errors),
  cpuSeconds: (cpu.user + cpu.system) / 1e6,
  histogram: Object.fromEntries(run.histogram),
}, () => {
  if (!targets) process.exit(0);
  // Rooms: the clients stay connected until the runner closes stdin (it measures the servers'
  // idle CPU, every client in, after the events too).
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
});
