// Two durasock processes sharing one Redis (cluster adapter): clients connected to
// either process are one application.
//
//   - PER_NODE clients on each node join room "lobby" through the demo chat's "join"
//     (the demo keeps its members in the Socket.IO room "room:lobby");
//   - a chat message sent by a client of node A reaches every other member, on A and
//     on B, and one sent on B reaches A;
//   - the HTTP emit API of node A broadcasts to the room: the clients of B get it;
//   - 50 API emits on A arrive on B's clients complete and in order.
//
// Usage: URL_A=... URL_B=... EMIT_TOKEN=... node cluster.mjs
import { io } from "socket.io-client";
import { scenario, track, connected, equal, check, ack, log, sleep, baseOptions } from "./lib.mjs";

const URL_A = process.env.URL_A;
const URL_B = process.env.URL_B;
const TOKEN = process.env.EMIT_TOKEN;
const PER_NODE = Number(process.env.PER_NODE || 5);
const ROOM = "lobby";
const SIO_ROOM = `room:${ROOM}`;

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

async function apiEmit(url, body) {
  const res = await fetch(`${url}/api/emit`, {
    method: "POST",
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  check(res.ok, `POST ${url}/api/emit: HTTP ${res.status} ${text}`);
}

await scenario("cluster", 45000, async () => {
  check(URL_A && URL_B && TOKEN, "URL_A, URL_B and EMIT_TOKEN must be set");
  const make = (url, node, i) => {
    const s = track(io(url, { ...baseOptions, transports: ["websocket"] }));
    s.label = `${node}${i}`;
    s.chats = [];
    s.news = [];
    s.on("chat", (m) => s.chats.push(m));
    s.on("news", (m) => s.news.push(m));
    return s;
  };
  const onA = Array.from({ length: PER_NODE }, (_, i) => make(URL_A, "A", i));
  const onB = Array.from({ length: PER_NODE }, (_, i) => make(URL_B, "B", i));
  const all = [...onA, ...onB];
  await Promise.all(all.map((s) => connected(s, 10000)));
  for (const s of all) {
    const [reply] = await ack(s, "join", [{ room: ROOM, name: s.label, page: s.label }], 10000);
    check(reply && reply.ok === true, `join reply of ${s.label}: ${JSON.stringify(reply)}`);
  }
  log(`${all.length} clients joined ${ROOM} on two nodes`);

  // Chat from A reaches every other member on both nodes.
  const [sent] = await ack(onA[0], "chat", [{ room: ROOM, text: "hello from A", id: "a1" }], 10000);
  check(sent && !sent.error, `chat ack on A: ${JSON.stringify(sent)}`);
  const others = all.filter((s) => s !== onA[0]);
  await waitUntil(() => others.every((s) => s.chats.length >= 1), 10000, "every other member got the chat from A");
  for (const s of others) {
    const { room, text, name, id } = s.chats[0];
    equal({ room, text, name, id }, { room: ROOM, text: "hello from A", name: "A0", id: "a1" }, `chat seen by ${s.label}`);
  }

  // Chat from B reaches the members on A.
  const [sentB] = await ack(onB[0], "chat", [{ room: ROOM, text: "hello from B", id: "b1" }], 10000);
  check(sentB && !sentB.error, `chat ack on B: ${JSON.stringify(sentB)}`);
  await waitUntil(() => onA.every((s) => s.chats.some((m) => m.text === "hello from B")), 10000, "members on A got the chat from B");

  // The emit API of A reaches the clients of B, in order.
  const COUNT = 50;
  for (let n = 0; n < COUNT; n++) {
    await apiEmit(URL_A, { event: "news", args: [{ n }], rooms: [SIO_ROOM] });
  }
  await waitUntil(() => all.every((s) => s.news.length >= COUNT), 15000, `every client got ${COUNT} news`);
  await sleep(200);
  const want = Array.from({ length: COUNT }, (_, n) => ({ n }));
  for (const s of all) equal(s.news, want, `news of ${s.label} (complete, in order, once)`);
});
