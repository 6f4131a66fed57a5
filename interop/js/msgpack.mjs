// The official client with socket.io-msgpack-parser against a durasock cluster:
// three servers on one Redis, A and B speaking msgpack, C speaking JSON.
//
//   - values of every kind make the round trip through a msgpack ack (binary at
//     the top and nested, undefined, Date, big and negative integers, floats);
//   - namespaces: "/" and "/chat" over one msgpack connection;
//   - a relay from a client of A to room "r" reaches the clients of B (msgpack)
//     and C (JSON) with its binary intact;
//   - a broadcast with acks from A collects the acks of the clients of A, B, C;
//   - recovery: a msgpack client cut from A gets back its session and the
//     events it missed (their offsets travel inside msgpack);
//   - bad msgpack closes the connection (the server reports the reason).
//
// Server contract: see msgpack_test.go.
// Usage: URL_A=... URL_B=... URL_C=... node msgpack.mjs
import { io, Manager } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";
import { scenario, track, connected, once, equal, check, ack, log } from "./lib.mjs";

const { URL_A, URL_B, URL_C } = process.env;
const mp = { parser: msgpackParser };
const opts = { forceNew: true, reconnection: false, timeout: 5000, transports: ["websocket"] };

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

function asBuffer(x, what) {
  if (Buffer.isBuffer(x)) return x;
  if (x instanceof ArrayBuffer) return Buffer.from(x);
  if (ArrayBuffer.isView(x)) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  throw new Error(`${what}: not binary: ${JSON.stringify(x)?.slice(0, 80)}`);
}

await scenario("msgpack", 50000, async () => {
  check(URL_A && URL_B && URL_C, "URL_A, URL_B and URL_C must be set");
  const a = track(io(URL_A, { ...opts, ...mp, reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300 }));
  const b = track(io(URL_B, { ...opts, ...mp }));
  const c = track(io(URL_C, opts)); // JSON
  await Promise.all([connected(a), connected(b), connected(c)]);
  log("connected", a.id, b.id, c.id);

  // Every kind of value through a msgpack ack.
  const bin = Buffer.from([0, 1, 2, 253, 254, 255]);
  const date = new Date(Date.UTC(2024, 1, 29, 12, 0, 0, 123));
  const sent = ["text é€", 0, -1, 127, 128, 65536, -70000, 2 ** 40, -(2 ** 40), 1.5, -0.25, true, false, null,
    bin, { nested: { bin, list: [1, "two", bin] } }, [], {}, date, undefined, Buffer.alloc(0)];
  const back = await ack(a, "echo", sent);
  const want = [...sent];
  want[18] = date.toISOString(); // a Date reaches the server as JSON.stringify writes it
  want[19] = null; // undefined in an array, likewise
  equal(back.length, want.length, "echo argument count");
  for (let i = 0; i < want.length; i++) {
    const w = want[i];
    if (Buffer.isBuffer(w)) equal(asBuffer(back[i], `echo ${i}`), w, `echo argument ${i}`);
    else if (i === 15) {
      equal(asBuffer(back[i].nested.bin, "nested"), bin, "echo nested binary");
      equal(back[i].nested.list[1], "two", "echo nested list");
      equal(asBuffer(back[i].nested.list[2], "nested list binary"), bin, "echo binary in a nested list");
    } else equal(back[i], w, `echo argument ${i}`);
  }
  // The server saw the binary as bytes: its length and sum.
  equal(await ack(a, "measure", [{ data: bin }]), [bin.length, bin.reduce((x, y) => x + y, 0)], "binary seen by the server");

  // Namespaces over one msgpack connection.
  const manager = new Manager(URL_A, { ...mp, reconnection: false, timeout: 5000, transports: ["websocket"] });
  const main = track(manager.socket("/"));
  const chat = track(manager.socket("/chat"));
  await Promise.all([connected(main), connected(chat)]);
  equal(await ack(chat, "whoami", []), ["/chat", chat.id], "whoami on /chat");
  equal(await ack(main, "whoami", []), ["/", main.id], "whoami on /");
  const unknown = track(manager.socket("/nope"));
  const [err] = await once(unknown, "connect_error");
  equal(err.message, "Invalid namespace", "unknown namespace");
  chat.disconnect();
  main.disconnect();

  // Rooms across the cluster, binary intact, to msgpack and JSON clients.
  for (const s of [a, b, c]) equal(await ack(s, "join", ["r"]), ["ok"], `join of ${s.id}`);
  const gotB = once(b, "relayed", 10000);
  const gotC = once(c, "relayed", 10000);
  const gotA = once(a, "relayed", 10000);
  equal(await ack(a, "relay", ["r", "from A", bin, { inner: bin }]), ["ok"], "relay ack");
  for (const [who, p] of [["A", gotA], ["B (msgpack)", gotB], ["C (JSON)", gotC]]) {
    const [text, b1, obj] = await p;
    equal(text, "from A", `relayed text on ${who}`);
    equal(asBuffer(b1, who), bin, `relayed binary on ${who}`);
    equal(asBuffer(obj.inner, who), bin, `relayed nested binary on ${who}`);
  }

  // A broadcast with acks from A collects every client's answer.
  for (const s of [a, b, c]) s.on("ping-all", (n, cb) => cb(s.id, n + 1, Buffer.from(s.id)));
  const [count, ids] = await ack(a, "gather", ["r"], 15000);
  equal(count, 3, "acks collected across the cluster");
  equal([...ids].sort(), [a.id, b.id, c.id].sort(), "ackers");

  // Recovery: a is cut; events sent to room r meanwhile reach it once it is back.
  const before = a.id;
  const seq = [];
  a.on("seq", (n) => seq.push(n));
  await ack(b, "relay-seq", ["r", 0], 5000);
  await waitUntil(() => seq.length === 1, 5000, "first seq before the cut");
  const reconnected = once(a, "connect", 15000);
  a.io.engine.close();
  for (let n = 1; n <= 5; n++) await ack(b, "relay-seq", ["r", n], 5000);
  await reconnected;
  check(a.recovered === true, `msgpack client recovered its session (id ${before} -> ${a.id})`);
  equal(a.id, before, "same socket id after recovery");
  await waitUntil(() => seq.length >= 6, 10000, `missed events replayed: got ${JSON.stringify(seq)}`);
  equal(seq, [0, 1, 2, 3, 4, 5], "every event once, in order");

  // Bad msgpack from a client: the server closes the connection.
  const bad = track(io(URL_A, { ...opts, ...mp, query: { label: "bad-msgpack" } }));
  await connected(bad);
  const badID = bad.id;
  const closed = once(bad, "disconnect", 10000);
  bad.io.engine.write(Buffer.from([0x83, 0xa4, 0x74, 0x79, 0x70, 0x65, 0x02, 0xc1]));
  log("bad msgpack disconnect:", (await closed)[0]);
  const badJSON = track(io(URL_C, { ...opts, query: { label: "bad-json" } }));
  await connected(badJSON);
  const badJSONID = badJSON.id;
  const closedJSON = once(badJSON, "disconnect", 10000);
  badJSON.io.engine.write('2["unterminated"');
  log("bad JSON disconnect:", (await closedJSON)[0]);
  console.log("BAD " + JSON.stringify([badID, badJSONID]));
});
