// Compression with the official client: a large event is compressed on the wire
// by default (permessage-deflate over WebSocket, gzip of polling responses over
// the fetch transport, which accepts gzip) and sent as it is after the server's
// Compress(false); both arrive intact.
//
// Server contract (namespace "/"):
//   "mark"             -> remember the bytes the server has written so far, ack()
//   "send-big" (bool)  -> emit "big" (text) with Compress(bool); text is 100 000
//                         bytes of repeated words
//   "measure"          -> ack(bytes written since "mark")
//
// Usage: SERVER_URL=... node compression.mjs polling|websocket
import { io, Fetch, NodeWebSocket } from "socket.io-client";
import { SERVER_URL, scenario, track, connected, once, check, ack, log, baseOptions } from "./lib.mjs";

const mode = process.argv[2] === "polling" ? "polling" : "websocket";
const BIG = 100000;

await scenario(`compression/${mode}`, 20000, async () => {
  const opts = { ...baseOptions, transports: [mode === "polling" ? Fetch : NodeWebSocket], upgrade: false };
  const s = track(io(SERVER_URL, opts));
  await connected(s);
  const sizes = {};
  for (const compress of [true, false]) {
    await ack(s, "mark", []);
    const got = once(s, "big");
    s.emit("send-big", compress);
    const [text] = await got;
    check(typeof text === "string" && text.length === BIG, `big event of ${text && text.length} characters`);
    const [written] = await ack(s, "measure", []);
    sizes[compress] = written;
    log(mode, compress ? "compressed" : "Compress(false)", "event took", written, "bytes on the wire");
  }
  check(sizes[true] < BIG / 4, `default emit not compressed: ${sizes[true]} bytes for ${BIG}`);
  check(sizes[false] > BIG, `Compress(false) compressed: ${sizes[false]} bytes for ${BIG}`);
});
