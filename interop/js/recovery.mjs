// Connection state recovery seen by the official client behind a load balancer.
// The test driver (recovery_test.go) owns the nodes, the proxy and the publisher;
// this script only holds the clients and records what they see:
//
//   - CLIENTS sockets connect to SERVER_URL (the proxy) over WebSocket, with the
//     client's automatic reconnection and its built-in connection state recovery
//     (on by default since socket.io-client 4.6: it sends the session's pid and
//     last offset when it reconnects; socket.recovered tells whether the server
//     restored the session);
//   - once all are connected, each joins room "lobby" (the demo chat's "join"), and
//     the script prints "READY <n> <JSON array of the socket ids>";
//   - every "seq" event ({n}) is recorded per client, in arrival order;
//   - once every client has reconnected at least once it prints "RECONNECTED";
//     a client counts as recovered when every reconnect of it was;
//   - when the driver writes "END <last seq>" on stdin, it waits (bounded) until
//     every client has received that seq, then prints "RESULT <json>" with, per
//     client, the recovery outcome and the received sequence numbers, and exits 0.
//
// The driver judges the result (lost, duplicated, reordered events); the script
// fails only when the clients cannot connect at all.
//
// Usage: SERVER_URL=... CLIENTS=10 node recovery.mjs
import { createInterface } from "node:readline";
import { io } from "socket.io-client";
import { SERVER_URL, scenario, track, connected, check, ack, log, sleep } from "./lib.mjs";

const CLIENTS = Number(process.env.CLIENTS || 10);
const ROOM = "lobby";

function waitUntil(cond, ms) {
  const start = Date.now();
  return new Promise((resolve) => {
    const tick = () => {
      if (cond() || Date.now() - start > ms) return resolve(cond());
      setTimeout(tick, 10);
    };
    tick();
  });
}

// The driver's "END <seq>" line.
const end = new Promise((resolve) => {
  const rl = createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    const m = /^END (\d+)$/.exec(line.trim());
    if (m) resolve(Number(m[1]));
  });
});

await scenario("recovery", 55000, async () => {
  const clients = Array.from({ length: CLIENTS }, (_, i) => {
    const s = track(
      io(SERVER_URL, {
        forceNew: true,
        transports: ["websocket"],
        reconnection: true,
        reconnectionDelay: 100,
        reconnectionDelayMax: 500,
        reconnectionAttempts: Infinity,
        timeout: 5000,
      })
    );
    const c = {
      label: `c${i}`,
      socket: s,
      firstId: "",
      firstPid: "",
      id: "",
      pid: "",
      connects: 0,
      reconnects: 0,
      recovered: false,
      recoveredEach: [],
      disconnects: [],
      offsets: 0,
      seqs: [],
    };
    s.on("connect", () => {
      c.connects++;
      c.id = s.id;
      c.pid = s._pid || "";
      if (c.connects === 1) {
        c.firstId = s.id;
        c.firstPid = c.pid;
        return;
      }
      c.reconnects++;
      c.recoveredEach.push(s.recovered === true);
      c.recovered = c.recoveredEach.every(Boolean);
      log(`${c.label} reconnected: recovered=${s.recovered} id ${c.firstId} -> ${s.id}`);
    });
    s.on("disconnect", (reason) => c.disconnects.push(reason));
    s.on("seq", (m, offset) => {
      c.seqs.push(m && typeof m.n === "number" ? m.n : -1);
      if (typeof offset === "string") c.offsets++;
    });
    return c;
  });
  await Promise.all(clients.map((c) => connected(c.socket, 15000)));
  for (const c of clients) {
    const [reply] = await ack(c.socket, "join", [{ room: ROOM, name: c.label, page: c.label }], 10000);
    check(reply && reply.ok === true, `join reply of ${c.label}: ${JSON.stringify(reply)}`);
  }
  console.log(`READY ${clients.length} ${JSON.stringify(clients.map((c) => c.firstId))}`);

  let reported = false;
  const watch = setInterval(() => {
    if (!reported && clients.every((c) => c.reconnects > 0 && c.socket.connected)) {
      reported = true;
      console.log("RECONNECTED");
    }
  }, 10);

  const last = await end;
  const all = await waitUntil(() => clients.every((c) => c.seqs.includes(last)), 15000);
  // A little longer, so that late duplicates are seen too.
  await sleep(300);
  clearInterval(watch);
  log(`END ${last}: ${all ? "every client" : "not every client"} received it`);
  const result = clients.map(({ socket, ...c }) => ({ ...c, connected: socket.connected }));
  console.log(`RESULT ${JSON.stringify(result)}`);
});
