// Sticky sessions by cookie: behind a load balancer that sends each request
// without the session cookie to the next server in turn and each request with
// it to the server that set it, the official client (withCredentials: true
// keeps cookies in Node) stays on one server through polling and the upgrade.
//
// Server contract (namespace "/"):
//   "whoami" -> ack(name of the server)
//
// Usage: SERVER_URL=... node sticky.mjs
import { io } from "socket.io-client";
import { SERVER_URL, scenario, track, connected, check, ack, log, baseOptions, sleep } from "./lib.mjs";

await scenario("sticky", 20000, async () => {
  const s = track(io(SERVER_URL, { ...baseOptions, transports: ["polling", "websocket"], withCredentials: true }));
  await connected(s);
  const names = new Set();
  for (let i = 0; i < 10; i++) {
    const [name] = await ack(s, "whoami", []);
    names.add(name);
    if (i === 4) {
      // let the upgrade to WebSocket happen
      for (let j = 0; j < 50 && s.io.engine.transport.name !== "websocket"; j++) await sleep(50);
      check(s.io.engine.transport.name === "websocket", "no upgrade");
    }
  }
  check(names.size === 1, `answers from several servers: ${[...names]}`);
  log("every answer from", [...names][0], "over", s.io.engine.transport.name);
});
