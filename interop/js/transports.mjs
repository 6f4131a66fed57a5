// Scenario "upgrade": the client connects with HTTP long-polling, upgrades to
// WebSocket, and events with acks work before and after the upgrade.
// Scenario "websocket": the client connects with WebSocket only.
//
// Server contract: namespace "/" acks "echo" with the same arguments.
//
// Usage: SERVER_URL=... node transports.mjs upgrade|websocket
import { io } from "socket.io-client";
import { SERVER_URL, scenario, track, connected, once, equal, ack, log, baseOptions } from "./lib.mjs";

async function upgrade() {
  const socket = track(io(SERVER_URL, { ...baseOptions, transports: ["polling", "websocket"] }));
  // The upgrade may complete before "connect" fires, so the first transport and the
  // upgrade are recorded from the Engine.IO session's own events.
  let firstTransport;
  const upgraded = new Promise((resolve) =>
    socket.io.on("open", () => {
      firstTransport = socket.io.engine.transport.name;
      socket.io.engine.once("upgrade", resolve);
    })
  );
  await connected(socket);
  const engine = socket.io.engine;
  log("connected", socket.id, "opened with", firstTransport);
  equal(firstTransport, "polling", "first transport");

  const before = await ack(socket, "echo", ["before upgrade", 1, { k: [null, true] }]);
  equal(before, ["before upgrade", 1, { k: [null, true] }], "ack before upgrade");

  const transport = await Promise.race([
    upgraded,
    new Promise((_, reject) => setTimeout(() => reject(new Error("no upgrade within 5000 ms")), 5000)),
  ]);
  equal(transport.name, "websocket", "upgraded transport");
  equal(engine.transport.name, "websocket", "transport after upgrade");
  log("upgraded to", engine.transport.name);

  const after = await ack(socket, "echo", [{ after: "upgrade", n: [1, 2, 3] }]);
  equal(after, [{ after: "upgrade", n: [1, 2, 3] }], "ack after upgrade");
}

async function websocketOnly() {
  const socket = track(io(SERVER_URL, { ...baseOptions, transports: ["websocket"] }));
  await connected(socket);
  const engine = socket.io.engine;
  log("connected", socket.id, "transport", engine.transport.name);
  equal(engine.transport.name, "websocket", "transport");
  const args = ["über ✓ 𝄞", { deep: { list: [true, null, 1.5, -7, "x"] } }];
  equal(await ack(socket, "echo", args), args, "ack over websocket");
}

const mode = process.argv[2];
if (mode === "upgrade") {
  await scenario("transports/upgrade", 15000, upgrade);
} else if (mode === "websocket") {
  await scenario("transports/websocket", 15000, websocketOnly);
} else {
  console.log(`FAIL transports: unknown mode ${JSON.stringify(mode)}`);
  process.exit(2);
}
