// A Socket.IO 2.x client (socket.io-client 2.5, Engine.IO v3) against a server
// with AllowEIO3: connected to the main namespace without asking, ids as the
// reference server gives them, acks and binary both ways, a namespace whose
// middleware reads the client's query, a refusal, heartbeats driven by the
// client, broadcasts.
//
// Server contract:
//   on connection to "/": emit "welcome" (Buffer [1,2,3])
//   "echo" (...args)        -> ack(...args), binary kept
//   "ask"                   -> EmitWithAck "question" to the client, ack(its answer)
//   "join" (room)           -> join, ack()
//   "shout" (room, text)    -> emit "shouted" (text) to room, ack()
//   namespace "/v2ns": middleware accepts auth {"token":"good"} (the query), refuses
//   others with ConnectError{Message: "bad token"}; "whoami" -> ack(socket id)
//
// Usage: SERVER_URL=... node v2.mjs polling|websocket
import io from "socket.io-client-v2";
import { SERVER_URL, scenario, check, equal, log, sleep } from "./lib.mjs";

const transports = process.argv[2] === "polling" ? ["polling", "websocket"] : ["websocket"];
const opts = { forceNew: true, reconnection: false, timeout: 5000, transports };
const sockets = [];

function open(url) {
  const s = io(url, opts);
  sockets.push(s);
  return s;
}

function wait(s, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no "${event}" within ${ms} ms`)), ms);
    s.once(event, (...args) => {
      clearTimeout(t);
      resolve(args);
    });
  });
}

function ack(s, event, ...args) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ack for "${event}"`)), 5000);
    s.emit(event, ...args, (...reply) => {
      clearTimeout(t);
      resolve(reply);
    });
  });
}

await scenario(`v2/${transports.join("+")}`, 20000, async () => {
  try {
    const s = open(SERVER_URL);
    const welcome = wait(s, "welcome");
    s.on("question", (q, cb) => cb(Buffer.from([7, 7]), `answer to ${q}`));
    await wait(s, "connect");
    check(s.id === s.io.engine.id, `main namespace id ${s.id}, engine id ${s.io.engine.id}`);
    const [w] = await welcome;
    check(Buffer.isBuffer(w), "welcome is not a Buffer");
    equal([...w], [1, 2, 3], "welcome");

    const [text, buf, obj] = await ack(s, "echo", "héllo 😀", Buffer.from([0, 255]), { nested: Buffer.from("x") });
    equal(text, "héllo 😀", "echoed text");
    check(Buffer.isBuffer(buf) && Buffer.isBuffer(obj.nested), "echoed binary is not binary");
    equal([...buf], [0, 255], "echoed buffer");

    const [b, t] = await ack(s, "ask");
    check(Buffer.isBuffer(b), "the client's binary answer did not stay binary");
    equal([[...b], t], [[7, 7], "answer to q1"], "ask");

    const other = open(SERVER_URL);
    await wait(other, "connect");
    await ack(other, "join", "r");
    const shouted = wait(other, "shouted");
    await ack(s, "shout", "r", "hey");
    equal((await shouted)[0], "hey", "broadcast");

    const ns = open(SERVER_URL + "/v2ns?token=good");
    await wait(ns, "connect");
    const [id] = await ack(ns, "whoami");
    check(id === ns.id && id === "/v2ns#" + ns.io.engine.id, `namespace id ${id}, client ${ns.id}`);

    const bad = open(SERVER_URL + "/v2ns?token=bad");
    const [err] = await wait(bad, "error");
    equal(err, "bad token", "refusal");

    // The client's pings keep the session open past pingInterval+pingTimeout (3 s).
    await sleep(4000);
    const [still] = await ack(s, "echo", "still here");
    equal(still, "still here", "after heartbeats");
    log("v2 client", s.id, "over", s.io.engine.transport.name);
  } finally {
    for (const s of sockets) s.close();
  }
});
