// A Node socket.io 4.8 server clustered with @socket.io/redis-adapter, for the
// mixed-cluster test (Node and durasock nodes on one Redis). Clients drive it
// with "cmd" events (see mixed.mjs); it answers each with an ack.
//
// Usage: PORT=... REDIS_URL=... MODE=classic|sharded KEY=socket.io NAME=N1 node node-server.mjs
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter, createShardedAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const PORT = Number(process.env.PORT);
const NAME = process.env.NAME || "node";
const MODE = process.env.MODE || "classic";
const KEY = process.env.KEY || "socket.io";

const pub = createClient({ url: process.env.REDIS_URL });
const sub = pub.duplicate();
pub.on("error", (e) => console.error("redis pub error", e.message));
sub.on("error", (e) => console.error("redis sub error", e.message));
await Promise.all([pub.connect(), sub.connect()]);

const adapter =
  MODE === "sharded"
    ? createShardedAdapter(pub, sub, { channelPrefix: KEY })
    : createAdapter(pub, sub, { key: KEY, requestsTimeout: 10000 });
const http = createServer();
const io = new Server(http, { adapter });

// Server-side events received from the other nodes.
const sse = [];
io.on("hello", (from) => sse.push({ event: "hello", from }));
io.on("question", (from, cb) => {
  sse.push({ event: "question", from });
  cb(NAME);
});

io.on("connection", (socket) => {
  socket.data = { node: NAME, label: socket.handshake.auth.label };
  socket.on("cmd", async (cmd, ack) => {
    try {
      ack({ ok: true, result: await run(socket, cmd) });
    } catch (err) {
      ack({ ok: false, error: String(err && err.message ? err.message : err) });
    }
  });
});

function select(cmd) {
  let op = io.to(cmd.rooms || []);
  if (cmd.except && cmd.except.length) op = op.except(cmd.except);
  return op;
}

async function run(socket, cmd) {
  switch (cmd.op) {
    case "join":
      socket.join(cmd.room);
      return "joined";
    case "broadcast": {
      const args = (cmd.args || []).map((a) => (a && a.$binary !== undefined ? Buffer.from(a.$binary) : a));
      select(cmd).emit(cmd.event, ...args);
      return "sent";
    }
    case "ask": {
      const replies = await select(cmd).timeout(cmd.timeoutMs || 5000).emitWithAck(cmd.event, NAME);
      return replies.map(String).sort();
    }
    case "fetch": {
      const sockets = await select(cmd).fetchSockets();
      return sockets.map((s) => s.id).sort();
    }
    case "fetchData": {
      const sockets = await select(cmd).fetchSockets();
      return sockets.map((s) => ({ id: s.id, rooms: [...s.rooms].sort(), data: s.data, auth: s.handshake.auth }));
    }
    case "sse":
      io.serverSideEmit("hello", NAME);
      return "sent";
    case "sseAck": {
      const replies = await io.serverSideEmitWithAck("question", NAME);
      return replies.map(String).sort();
    }
    case "sseLog":
      return sse;
    case "socketsJoin":
      select(cmd).socketsJoin(cmd.target);
      return "sent";
    case "socketsLeave":
      select(cmd).socketsLeave(cmd.target);
      return "sent";
    case "disconnect":
      select(cmd).disconnectSockets(true);
      return "sent";
    default:
      throw new Error("unknown op " + cmd.op);
  }
}

http.listen(PORT, "127.0.0.1", () => console.log(`READY ${NAME} ${PORT}`));
const stop = async () => {
  io.close();
  await Promise.allSettled([pub.quit(), sub.quit()]);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
