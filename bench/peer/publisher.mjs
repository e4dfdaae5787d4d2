// The rooms publisher of `make bench` for the Node peer: a socket.io server with the peer's Redis
// adapter and no clients (a backend process of a socket.io cluster), emitting `my_response` to
// rooms with `io.to(room).emit(...)`, as the adapter's docs have a process of the cluster do it.
// bench/publisher.py is the same program for this stack and the Flask-SocketIO recipe.
//
//     node bench/peer/publisher.mjs '{"redisUrl": "redis://...", "adapter": "classic"|"sharded"}'
//
// It prints {"event": "ready"} once its Redis connections are up, then waits for one command on
// stdin:
//     {"cmd": "go", "start": <epoch ms>, "messages": M, "intervalMs": I, "rooms": [names],
//      "window": [<epoch ms>, <epoch ms>]}
// and sends event k (k = 0..M-1) at start + k*I to rooms[k % rooms.length] with
// {data: {i: k, t: <send time, epoch ms>}}; then it prints {"event": "done", "sent", "inWindow"
// (sent inside the window), "maxLagMs" (latest send after its time), "cpuSeconds"} and exits.
import { createInterface } from "node:readline";
import { Server } from "socket.io";
import { createAdapter, createShardedAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const config = JSON.parse(process.argv[2]);
const now = () => performance.timeOrigin + performance.now();
const say = (message, then) => process.stdout.write(`${JSON.stringify(message)}\n`, then);

const pubClient = createClient({ url: config.redisUrl });
const subClient = pubClient.duplicate();
for (const client of [pubClient, subClient]) {
  client.on("error", (error) => console.error(`publisher: redis: ${error.message}`));
}
await Promise.all([pubClient.connect(), subClient.connect()]);
const adapter = config.adapter === "sharded"
  ? createShardedAdapter(pubClient, subClient, { subscriptionMode: "dynamic" })
  : createAdapter(pubClient, subClient);
const io = new Server({ adapter });
say({ event: "ready" });

const command = await new Promise((resolve) => {
  const lines = createInterface({ input: process.stdin });
  lines.once("line", (line) => {
    lines.close();
    resolve(JSON.parse(line));
  });
});

const cpuBefore = process.cpuUsage();
let sent = 0;
let inWindow = 0;
let maxLagMs = 0;
await new Promise((resolve) => {
  const sendDue = () => {
    const t = now();
    while (sent < command.messages && command.start + sent * command.intervalMs <= t) {
      const due = command.start + sent * command.intervalMs;
      const at = now();
      maxLagMs = Math.max(maxLagMs, at - due);
      if (at >= command.window[0] && at <= command.window[1]) inWindow += 1;
      io.to(command.rooms[sent % command.rooms.length])
        .emit("my_response", { data: { i: sent, t: at } });
      sent += 1;
    }
    if (sent < command.messages) {
      setTimeout(sendDue, Math.max(0, command.start + sent * command.intervalMs - now()));
    } else {
      resolve();
    }
  };
  setTimeout(sendDue, Math.max(0, command.start - now()));
});
// The adapter publishes asynchronously: a round trip on the publishing connection after the last
// emit means Redis has taken every publish before it.
await pubClient.ping();
const cpu = process.cpuUsage(cpuBefore);
// Not io.close(): with no HTTP server attached it has no engine to close.
await Promise.allSettled([pubClient.quit(), subClient.quit()]);
say({ event: "done", sent, inWindow, maxLagMs, cpuSeconds: (cpu.user + cpu.system) / 1e6 },
  () => process.exit(0));
