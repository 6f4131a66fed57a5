// Server restart and automatic reconnection: the client connects, prints
// "READY <socket id>", and the test driver then closes the server and starts a new one
// on the same port. The client must reconnect by itself (a new socket id) and events
// with acks must work again.
//
// Server contract: namespace "/" acks "echo" with the same arguments.
//
// Usage: SERVER_URL=... node reconnect.mjs polling|websocket
import { io } from "socket.io-client";
import { SERVER_URL, scenario, track, connected, once, equal, check, ack, log } from "./lib.mjs";

const transport = process.argv[2] === "polling" ? "polling" : "websocket";

await scenario(`reconnect/${transport}`, 30000, async () => {
  const socket = track(
    io(SERVER_URL, {
      forceNew: true,
      transports: [transport],
      reconnection: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
      reconnectionAttempts: 100,
      timeout: 2000,
    })
  );
  await connected(socket);
  const firstId = socket.id;
  equal(await ack(socket, "echo", ["first"]), ["first"], "ack before restart");
  const disconnected = once(socket, "disconnect", 20000);
  console.log(`READY ${firstId}`);

  const [reason] = await disconnected;
  log("disconnected:", reason);
  check(
    reason !== "io server disconnect",
    "the server sent a DISCONNECT packet when it stopped: socket.io clients then do not reconnect by themselves (the reference server just closes the transport)"
  );
  check(
    ["transport close", "transport error", "ping timeout"].includes(reason),
    `unexpected disconnect reason ${reason}`
  );
  const [attempt] = await once(socket.io, "reconnect", 20000);
  await connected(socket, 20000);
  log("reconnected after", attempt, "attempt(s), new id", socket.id);
  check(socket.id !== firstId, "a new session after the restart");
  equal(await ack(socket, "echo", ["second"]), ["second"], "ack after restart");
});
