// The Node peer of `make bench`: one socket.io 4 process of several, coordinated through Redis with
// @socket.io/redis-adapter (the socket.io docs' multi-node setup). It speaks the benchmark's part of
// the stack's protocol: on connect it sends `my_response`, `my_broadcast_event` is re-emitted to
// every client of every process as `my_response` (what web/events.py and the recipe do), and
// `join` {room} puts the client in that room (answered with `my_response` and an empty ack, as
// the stack and the recipe answer it).
//
//     node bench/peer/server.mjs <port> <redis url> <name> [classic|sharded]
//
// classic (the default): createAdapter, Redis pub/sub, every process receives every broadcast.
// sharded: createShardedAdapter with subscriptionMode "dynamic" (Redis 7 sharded pub/sub): a
// process subscribes to a room's own channel while it has a member of that room, so an event to a
// room reaches only the processes that have a member (what the socket.io docs recommend for new
// developments).
//
// GET /readyz answers 200 once the adapter's Redis connections are up. Started and stopped by
// bench/systems.py.
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter, createShardedAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const [port, redisUrl, name, adapterKind = "classic"] = process.argv.slice(2);
let ready = false;

const http = createServer((request, response) => {
  if (request.url === "/readyz") {
    response.writeHead(ready ? 200 : 503, { "Content-Type": "text/plain" });
    response.end(ready ? "ok" : "starting");
    return;
  }
  response.writeHead(404);
  response.end();
});

const pubClient = createClient({ url: redisUrl });
const subClient = pubClient.duplicate();
for (const client of [pubClient, subClient]) {
  client.on("error", (error) => console.error(`${name}: redis: ${error.message}`));
}
await Promise.all([pubClient.connect(), subClient.connect()]);

const adapters = {
  classic: () => createAdapter(pubClient, subClient),
  sharded: () => createShardedAdapter(pubClient, subClient, { subscriptionMode: "dynamic" }),
};
if (!adapters[adapterKind]) {
  console.error(`${name}: unknown adapter ${adapterKind}: classic or sharded`);
  process.exit(2);
}
const io = new Server(http, { adapter: adapters[adapterKind]() });
let count = 0;

io.on("connection", (socket) => {
  socket.emit("my_response", { data: "Connected", count: 0 });
  socket.on("my_broadcast_event", (payload) => {
    io.emit("my_response", { data: payload?.data, count: ++count });
  });
  socket.on("join", (payload, ack) => {
    const answer = typeof ack === "function" ? ack : () => {};
    const room = payload?.room;
    if (typeof room !== "string" || room.length === 0 || room.length > 200) {
      answer({ event: "join", error: "room must be a string of 1 to 200 characters" });
      return;
    }
    socket.join(room);
    socket.emit("my_response", { data: `In rooms: ${[...socket.rooms].join(", ")}`, count: ++count });
    answer();
  });
});

http.listen(Number(port), "127.0.0.1", () => {
  ready = true;
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    io.close();
    Promise.allSettled([pubClient.quit(), subClient.quit()]).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
