// Acknowledgements both ways over the given transport: the client emits with an ack
// and gets the server's computed reply; the server emits with an ack to the client
// and gets the client's reply; a server-side ack that the client never answers times
// out on the server.
//
// Server contract (namespace "/"):
//   "sum" (numbers...)         -> ack(sum)
//   "ask-me" (text)            -> server emits "question" {text} with an ack and a
//                                 timeout, then acks "ask-me" with the client's reply
//                                 arguments
//   "ask-me-silent" ()         -> server emits "silent-question" with a 300 ms ack
//                                 timeout the client never answers, then acks
//                                 "ask-me-silent" with "timeout"
//
// Usage: SERVER_URL=... node acks.mjs polling|websocket
import { io } from "socket.io-client";
import { SERVER_URL, scenario, track, connected, equal, check, ack, log, baseOptions } from "./lib.mjs";

const transport = process.argv[2] === "polling" ? "polling" : "websocket";

await scenario(`acks/${transport}`, 15000, async () => {
  const socket = track(io(SERVER_URL, { ...baseOptions, transports: [transport] }));
  let questions = 0;
  socket.on("question", (q, cb) => {
    questions++;
    check(typeof cb === "function", "question comes with an ack callback");
    cb(`answer to ${q.text}`, 42, { ok: true });
  });
  let silent = 0;
  socket.on("silent-question", (cb) => {
    silent++;
    check(typeof cb === "function", "silent-question comes with an ack callback");
    // never called: the server must time out
  });
  await connected(socket);
  log("connected", socket.id, "over", socket.io.engine.transport.name);

  equal(await ack(socket, "sum", [2, 3, 4]), [9], "client->server ack");
  // Many acks in flight at once, each matched to its own id.
  const many = await Promise.all(
    Array.from({ length: 50 }, (_, i) => ack(socket, "sum", [i, 1000]))
  );
  equal(many, Array.from({ length: 50 }, (_, i) => [i + 1000]), "50 concurrent acks");

  equal(
    await ack(socket, "ask-me", ["life"]),
    ["answer to life", 42, { ok: true }],
    "server->client ack relayed back"
  );
  equal(questions, 1, "questions received");

  equal(await ack(socket, "ask-me-silent", [], 5000), ["timeout"], "server-side ack timeout");
  equal(silent, 1, "silent questions received");
});
