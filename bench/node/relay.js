// The Node.js peer of durasock's relay node (internal/bench): socket.io 4.8 over
// @socket.io/redis-adapter (TRANSPORT=pubsub) or @socket.io/redis-streams-adapter
// (TRANSPORT=streams), with the same relay protocol:
//   - a client whose handshake auth has {room} joins that room;
//   - "pub" [payload] is broadcast as "ev" to every other socket;
//   - "pubroom" [payload] is emitted as "ev" to the room "subs", cluster-wide.
// It prints "listening 127.0.0.1:<port>" once it accepts connections and
// answers GET /healthz. SIGTERM closes it. DURASOCK_BENCH_NODE_PING_INTERVAL_MS
// sets Engine.IO's ping interval (default 25 000).
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter: pubsubAdapter } = require("@socket.io/redis-adapter");
const { createAdapter: streamsAdapter } = require("@socket.io/redis-streams-adapter");

const ROOM = "subs";

async function main() {
  const url = process.env.DURASOCK_BENCH_NODE_REDIS;
  const transport = process.env.DURASOCK_BENCH_NODE_TRANSPORT || "pubsub";
  const opts = { serveClient: false };
  const pingMs = Number(process.env.DURASOCK_BENCH_NODE_PING_INTERVAL_MS);
  if (pingMs > 0) {
    opts.pingInterval = pingMs;
  }
  const clients = [];
  if (url) {
    const pub = createClient({ url });
    pub.on("error", (err) => console.error("redis:", err.message));
    await pub.connect();
    clients.push(pub);
    if (transport === "streams") {
      opts.adapter = streamsAdapter(pub);
    } else if (transport === "pubsub") {
      const sub = pub.duplicate();
      sub.on("error", (err) => console.error("redis:", err.message));
      await sub.connect();
      clients.push(sub);
      opts.adapter = pubsubAdapter(pub, sub);
    } else {
      throw new Error(`transport ${transport}: want pubsub or streams`);
    }
  }
  const httpServer = http.createServer((req, res) => {
    if (req.url === "/healthz") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"status":"ok"}');
      return;
    }
    res.writeHead(404);
    res.end();
  });
  const io = new Server(httpServer, opts);
  io.on("connection", (socket) => {
    const room = socket.handshake.auth && socket.handshake.auth.room;
    if (typeof room === "string" && room !== "") {
      socket.join(room);
    }
    socket.on("pub", (payload) => socket.broadcast.emit("ev", payload));
    socket.on("pubroom", (payload) => io.to(ROOM).emit("ev", payload));
  });
  httpServer.listen(0, "127.0.0.1", () => {
    console.log(`listening 127.0.0.1:${httpServer.address().port}`);
  });
  process.on("SIGTERM", () => {
    // io.close waits for every HTTP connection to end; a benchmark that is over
    // need not wait for stragglers.
    setTimeout(() => process.exit(0), 2000).unref();
    io.close();
    Promise.allSettled(clients.map((c) => c.quit())).then(() => process.exit(0));
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
