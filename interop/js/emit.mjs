// Publishes with @socket.io/redis-emitter, as a worker process of a Node
// deployment does, then exits.
//
// Usage: REDIS_URL=... KEY=socket.io OPS='[{...}, ...]' node emit.mjs
// Each op: {nsp, to, except, volatile, event, args} emits (an arg {"$binary":[..]}
// is sent as a Buffer), or {nsp, to, except, socketsJoin|socketsLeave: rooms},
// {nsp, to, except, disconnect: close}, {nsp, serverSideEmit: [event, ...args]}.
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";

const client = createClient({ url: process.env.REDIS_URL });
client.on("error", (e) => console.error("redis error", e.message));
await client.connect();
const root = new Emitter(client, { key: process.env.KEY || "socket.io" });
const ops = JSON.parse(process.env.OPS || "[]");
for (const op of ops) {
  const e = op.nsp && op.nsp !== "/" ? root.of(op.nsp) : root;
  if (op.serverSideEmit) {
    e.serverSideEmit(...op.serverSideEmit);
    continue;
  }
  let b = e.to(op.to || []);
  if (op.except && op.except.length) b = b.except(op.except);
  if (op.volatile) b = b.volatile;
  if (op.socketsJoin) b.socketsJoin(op.socketsJoin);
  else if (op.socketsLeave) b.socketsLeave(op.socketsLeave);
  else if (op.disconnect !== undefined) b.disconnectSockets(op.disconnect);
  else {
    const args = (op.args || []).map((a) => (a && a.$binary ? Buffer.from(a.$binary) : a));
    b.emit(op.event, ...args);
  }
}
// PUBLISH commands are pipelined: QUIT is answered after them.
await client.quit();
console.log(`PASS emit ${ops.length}`);
