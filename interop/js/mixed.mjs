// A mixed cluster: Node socket.io servers (@socket.io/redis-adapter) and
// durasock servers (compat.NodeCluster) on one Redis form one cluster. Clients on
// every node; every cross-node operation is run from every node and checked on
// every client: broadcasts (binary included), rooms and except, emits with acks
// across nodes, fetchSockets, serverSideEmit (with and without acks),
// socketsJoin/socketsLeave and disconnectSockets. Prints the count of
// deliveries expected, received, lost, duplicated and unexpected.
//
// Usage: NODES="N1=http://...,D1=http://...,..." PER_NODE=3 node mixed.mjs
import { io } from "socket.io-client";
import { scenario, track, connected, check, ack, log, sleep, baseOptions } from "./lib.mjs";

const NODES = (process.env.NODES || "").split(",").filter(Boolean).map((kv) => {
  const [name, url] = kv.split("=");
  return { name, url };
});
const PER = Number(process.env.PER_NODE || 3);
const WAIT = 15000;

const stats = { expected: 0, received: 0, lost: 0, dup: 0, extra: 0 };
const clients = [];

function waitUntil(cond, ms, what) {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (cond()) return resolve();
      if (Date.now() - start > ms) return reject(new Error(`timed out after ${ms} ms: ${what}`));
      setTimeout(tick, 10);
    };
    tick();
  });
}

function count(c, event) {
  return c.got.filter((g) => g.event === event).length;
}

// cmd runs an operation on the node of client c.
async function cmd(c, op) {
  const [reply] = await ack(c, "cmd", [op], WAIT);
  check(reply && reply.ok, `${c.label}: cmd ${JSON.stringify(op)} failed: ${JSON.stringify(reply)}`);
  return reply.result;
}

// sender is the client a node is driven through.
const sender = (node) => clients.find((c) => c.node === node && c.index === 1);
const live = () => clients.filter((c) => c.connected);

// fence broadcasts from node to everyone and waits until every live client has
// it: what node broadcast before has then arrived wherever it goes.
let fences = 0;
async function fence(node) {
  const event = `fence-${++fences}`;
  await cmd(sender(node), { op: "broadcast", event, args: [] });
  await waitUntil(() => live().every((c) => count(c, event) >= 1), WAIT, `${event} from ${node} on every client`);
}

// expectDelivery waits for event on want (clients), then fences and counts
// lost, duplicated and unexpected deliveries.
async function expectDelivery(node, event, want, verify) {
  stats.expected += want.length;
  try {
    await waitUntil(() => want.every((c) => count(c, event) >= 1), WAIT, `${event} on ${want.map((c) => c.label)}`);
  } catch (err) {
    log(String(err));
  }
  await fence(node);
  for (const c of clients) {
    const n = count(c, event);
    if (want.includes(c)) {
      if (n === 0) stats.lost++;
      else stats.received++;
      if (n > 1) stats.dup += n - 1;
      if (n > 0 && verify) verify(c, c.got.find((g) => g.event === event));
    } else if (n > 0) {
      stats.extra += n;
      log(`unexpected ${event} on ${c.label}`);
    }
  }
}

// warm makes sure every member of room hears broadcasts to it from every node
// (the sharded adapter subscribes a room's channel when its first member joins).
async function warm(room, members) {
  for (const { name } of NODES) {
    const event = `warm-${room}-${name}`;
    for (let i = 0; ; i++) {
      await cmd(sender(name), { op: "broadcast", rooms: [room], event, args: [] });
      try {
        await waitUntil(() => members.every((c) => count(c, event) >= 1), 1000, event);
        break;
      } catch (err) {
        if (i > 10) throw err;
      }
    }
  }
}

function sameSet(a, b, what) {
  const x = [...a].sort(), y = [...b].sort();
  check(JSON.stringify(x) === JSON.stringify(y), `${what}: got ${JSON.stringify(x)}, want ${JSON.stringify(y)}`);
}

await scenario("mixed", 240000, async () => {
  check(NODES.length >= 2, "NODES must name at least two servers");
  for (const { name, url } of NODES) {
    for (let i = 0; i < PER; i++) {
      const label = `${name}-${i}`;
      const s = track(io(url, { ...baseOptions, transports: ["websocket"], auth: { label } }));
      Object.assign(s, { label, node: name, index: i, got: [], reasons: [] });
      // Every event is recorded; one that asks for an ack is answered with the label.
      s.onAny((event, ...args) => {
        const last = args[args.length - 1];
        if (typeof last === "function") {
          args.pop();
          last(s.label);
        }
        s.got.push({ event, args });
      });
      s.on("disconnect", (reason) => s.reasons.push(reason));
      clients.push(s);
    }
  }
  await Promise.all(clients.map((s) => connected(s, 10000)));
  const zero = clients.filter((c) => c.index === 0);
  for (const c of clients) {
    await cmd(c, { op: "join", room: `r-${c.node}` });
    if (c.index === 0) await cmd(c, { op: "join", room: "zero" });
    if (c.index === 2) await cmd(c, { op: "join", room: `v-${c.node}` });
  }
  await warm("zero", zero);
  for (const { name } of NODES) await warm(`r-${name}`, clients.filter((c) => c.node === name));
  log("clients connected and in their rooms");

  const names = NODES.map((n) => n.name);
  const ids = new Map(clients.map((c) => [c.id, c]));
  for (const S of names) {
    const me = sender(S);
    // Broadcast to all, with binary.
    await cmd(me, { op: "broadcast", event: `all-${S}`, args: [S, { n: 1 }, { $binary: [1, 2, 3] }] });
    await expectDelivery(S, `all-${S}`, clients, (c, g) => {
      check(g.args[0] === S && g.args[1].n === 1, `${c.label}: all-${S} args ${JSON.stringify(g.args)}`);
      const bin = new Uint8Array(g.args[2]);
      check(bin.length === 3 && bin[0] === 1 && bin[2] === 3, `${c.label}: all-${S} binary ${JSON.stringify(g.args[2])}`);
    });
    // A room, except the sender's node's room.
    await cmd(me, { op: "broadcast", rooms: ["zero"], except: [`r-${S}`], event: `zx-${S}`, args: [S] });
    await expectDelivery(S, `zx-${S}`, zero.filter((c) => c.node !== S));
    // Acks from the clients of every node.
    stats.expected += zero.length;
    const replies = await cmd(me, { op: "ask", rooms: ["zero"], event: `ask-${S}`, timeoutMs: 10000 });
    sameSet(replies, zero.map((c) => c.label), `acks to ask-${S}`);
    stats.received += replies.length;
    // fetchSockets.
    sameSet(await cmd(me, { op: "fetch" }), clients.map((c) => c.id), `fetchSockets from ${S}`);
    sameSet(await cmd(me, { op: "fetch", rooms: ["zero"] }), zero.map((c) => c.id), `fetchSockets in zero from ${S}`);
    for (const d of await cmd(me, { op: "fetchData", rooms: ["zero"] })) {
      const c = ids.get(d.id);
      check(c, `fetchSockets from ${S}: unknown socket ${d.id}`);
      check(d.rooms.includes("zero") && d.rooms.includes(d.id) && d.rooms.includes(`r-${c.node}`), `rooms of ${c.label} from ${S}: ${JSON.stringify(d.rooms)}`);
      check(d.data && d.data.label === c.label && d.data.node === c.node, `data of ${c.label} from ${S}: ${JSON.stringify(d.data)}`);
      check(d.auth && d.auth.label === c.label, `handshake auth of ${c.label} from ${S}: ${JSON.stringify(d.auth)}`);
    }
    // serverSideEmit, with and without acks.
    await cmd(me, { op: "sse" });
    const others = names.filter((n) => n !== S);
    sameSet(await cmd(me, { op: "sseAck", timeoutMs: 10000 }), others, `serverSideEmitWithAck from ${S}`);
    // socketsJoin, then socketsLeave.
    await cmd(me, { op: "socketsJoin", rooms: ["zero"], target: `j-${S}` });
    await fence(S);
    await warm(`j-${S}`, zero);
    await cmd(me, { op: "broadcast", rooms: [`j-${S}`], event: `joined-${S}`, args: [] });
    await expectDelivery(S, `joined-${S}`, zero);
    for (const T of names) {
      await cmd(sender(T), { op: "broadcast", rooms: [`j-${S}`], event: `joined-${S}-by-${T}`, args: [] });
      await expectDelivery(T, `joined-${S}-by-${T}`, zero);
    }
    await cmd(me, { op: "socketsLeave", rooms: ["zero"], target: `j-${S}` });
    await fence(S);
    for (const T of names) {
      await cmd(sender(T), { op: "broadcast", rooms: [`j-${S}`], event: `left-${S}-by-${T}`, args: [] });
      await expectDelivery(T, `left-${S}-by-${T}`, []);
    }
    log(`operations from ${S} checked`);
  }
  // Every node got every other node's server-side emit, once.
  for (const T of names) {
    const got = await cmd(sender(T), { op: "sseLog" });
    for (const S of names) {
      const n = got.filter((e) => e.event === "hello" && e.from === S).length;
      stats.expected += S === T ? 0 : 1;
      if (S === T) check(n === 0, `${T} got its own server-side emit`);
      else if (n === 0) stats.lost++;
      else stats.received++;
      if (n > 1) stats.dup += n - 1;
    }
  }
  // disconnectSockets: each node disconnects the victim of the next node.
  for (let i = 0; i < names.length; i++) {
    const S = names[i], T = names[(i + 1) % names.length];
    const victim = clients.find((c) => c.node === T && c.index === 2);
    await cmd(sender(S), { op: "disconnect", rooms: [`v-${T}`] });
    stats.expected++;
    try {
      await waitUntil(() => !victim.connected, WAIT, `${victim.label} disconnected by ${S}`);
      stats.received++;
      check(victim.reasons.includes("io server disconnect"), `${victim.label}: disconnect reasons ${victim.reasons}`);
    } catch (err) {
      log(String(err));
      stats.lost++;
    }
  }
  log(`deliveries: expected ${stats.expected}, received ${stats.received}, lost ${stats.lost}, duplicated ${stats.dup}, unexpected ${stats.extra}`);
  check(stats.lost === 0 && stats.dup === 0 && stats.extra === 0, `lost ${stats.lost}, duplicated ${stats.dup}, unexpected ${stats.extra}`);
});
