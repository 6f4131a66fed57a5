// The nemesis workload's official socket.io-client clients, all in one node
// process that the harness (jsclients.go) drives.
//
// Each client connects over WebSocket to its own address (a switching proxy of
// the harness that stands for a load balancer), with the client's automatic
// reconnection and its built-in connection state recovery: after a broken
// connection it sends the session's pid and last offset, and socket.recovered
// says whether the server restored the session with what it missed.
//
// Commands on stdin, one JSON object a line:
//   {"op":"open","c":7,"url":"http://127.0.0.1:4000/a","rooms":["r1"]}
//   {"op":"close","c":7}
// Reports on stdout, one JSON object a line:
//   {"k":"connect","c":7,"recovered":true}  reconnected into the same session
//   {"k":"connect","c":7,"recovered":false} connected: a new session, joining its rooms
//   {"k":"ready","c":7}                     the new session's rooms are joined
//   {"k":"e","c":7,"p":3,"s":120}           an event [publisher, seq, ...]
//   {"k":"down","c":7,"reason":"transport close"}
//   {"k":"bad","c":7,"err":"..."}           something the harness should count
//   {"k":"closed","c":7}
//
// Usage: NEMESIS_INTEROP=<interop dir with node_modules> node clients.mjs
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

const require = createRequire(`${process.env.NEMESIS_INTEROP}/package.json`);
const { io } = require("socket.io-client");

const clients = new Map();

function report(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function open({ c, url, rooms }) {
  const s = io(url, {
    forceNew: true,
    transports: ["websocket"],
    reconnection: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    reconnectionAttempts: Infinity,
    timeout: 5000,
  });
  clients.set(c, s);
  s.on("connect", async () => {
    // Events that arrive from now on belong to this connection's session.
    report({ k: "connect", c, recovered: s.recovered === true });
    if (s.recovered) return;
    try {
      const res = await s.timeout(10000).emitWithAck("join", ...rooms);
      if (res !== "ok") throw new Error(`join answered ${JSON.stringify(res)}`);
      report({ k: "ready", c });
    } catch (err) {
      report({ k: "bad", c, err: `join: ${err.message}` });
      s.disconnect().connect(); // a new session: try again
    }
  });
  s.on("disconnect", (reason) => report({ k: "down", c, reason }));
  s.on("e", (...args) => {
    const last = args[args.length - 1];
    if (typeof last === "function") last("ok"); // a broadcast with acknowledgements
    const [p, seq] = args;
    if (typeof p !== "number" || typeof seq !== "number") {
      report({ k: "bad", c, err: `event ${JSON.stringify(args.slice(0, 2))}` });
      return;
    }
    report({ k: "e", c, p, s: seq });
  });
}

function close({ c }) {
  const s = clients.get(c);
  if (s) {
    s.disconnect();
    clients.delete(c);
  }
  report({ k: "closed", c });
}

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    report({ k: "bad", c: -1, err: `command ${line}: ${err.message}` });
    return;
  }
  if (cmd.op === "open") open(cmd);
  else if (cmd.op === "close") close(cmd);
});
// The harness closing stdin ends the process.
rl.on("close", () => {
  for (const s of clients.values()) s.disconnect();
  process.exit(0);
});
