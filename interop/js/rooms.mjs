// Rooms and broadcasts with many clients (CLIENTS, default 20) on the given
// transport: each client joins "even" or "odd"; a room broadcast reaches exactly that
// room's members, a namespace broadcast reaches everyone, leaving a room stops
// delivery, and a broadcast with acks collects every member's reply.
//
// Server contract (namespace "/"):
//   "join" (room)              -> join room, ack("joined")
//   "leave" (room)             -> leave room, ack("left")
//   "to-room" (room, text)     -> emit "news" (text) to the room, ack("sent")
//   "to-all" (text)            -> emit "news-all" (text) to the namespace, ack("sent")
//   "poll-room" (room)         -> emit "vote" to the room with an ack and a timeout,
//                                 ack(<every reply, in any order>)
//
// Usage: SERVER_URL=... CLIENTS=20 node rooms.mjs polling|websocket
import { io } from "socket.io-client";
import { SERVER_URL, scenario, track, connected, equal, check, ack, log, sleep, baseOptions } from "./lib.mjs";

const transport = process.argv[2] === "polling" ? "polling" : "websocket";
const N = Number(process.env.CLIENTS || 20);

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

await scenario(`rooms/${transport}`, 30000, async () => {
  const clients = Array.from({ length: N }, (_, i) => {
    const s = track(io(SERVER_URL, { ...baseOptions, transports: [transport] }));
    s.index = i;
    s.news = [];
    s.newsAll = [];
    s.on("news", (text) => s.news.push(text));
    s.on("news-all", (text) => s.newsAll.push(text));
    s.on("vote", (cb) => cb(`vote-${i}`));
    return s;
  });
  await Promise.all(clients.map((s) => connected(s, 10000)));
  log(`${N} clients connected over ${transport}`);
  const room = (i) => (i % 2 === 0 ? "even" : "odd");
  const joined = await Promise.all(clients.map((s, i) => ack(s, "join", [room(i)])));
  check(joined.every((r) => r[0] === "joined"), "every join acked");
  const evens = clients.filter((_, i) => room(i) === "even");
  const odds = clients.filter((_, i) => room(i) === "odd");

  equal(await ack(clients[1], "to-room", ["even", "hello evens"]), ["sent"], "to-room ack");
  await waitUntil(() => evens.every((s) => s.news.length >= 1), 5000, "every even client got the room news");
  // Give a wrongly delivered message time to show up before counting.
  await sleep(300);
  for (const s of evens) equal(s.news, ["hello evens"], `news of even client ${s.index}`);
  for (const s of odds) equal(s.news, [], `news of odd client ${s.index}`);

  equal(await ack(clients[0], "to-all", ["hello all"]), ["sent"], "to-all ack");
  await waitUntil(() => clients.every((s) => s.newsAll.length >= 1), 5000, "every client got the namespace news");
  await sleep(300);
  for (const s of clients) equal(s.newsAll, ["hello all"], `news-all of client ${s.index}`);

  const leaver = evens[0];
  equal(await ack(leaver, "leave", ["even"]), ["left"], "leave ack");
  equal(await ack(clients[1], "to-room", ["even", "second"]), ["sent"], "second to-room ack");
  const stayed = evens.slice(1);
  await waitUntil(() => stayed.every((s) => s.news.length >= 2), 5000, "remaining even clients got the second news");
  await sleep(300);
  equal(leaver.news, ["hello evens"], "the client that left got nothing more");
  for (const s of stayed) equal(s.news, ["hello evens", "second"], `news of even client ${s.index}`);
  for (const s of odds) equal(s.news, [], `news of odd client ${s.index} at the end`);

  const [votes] = await ack(clients[0], "poll-room", ["odd"], 10000);
  check(Array.isArray(votes), `poll-room replies are an array, got ${JSON.stringify(votes)}`);
  const want = odds.map((s) => `vote-${s.index}`).sort();
  equal([...votes].sort(), want, "every odd client's vote collected");
});
