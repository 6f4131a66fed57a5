// Binary nested inside objects, as the Node.js server carries it: forwarded from
// one client to another through the server it arrives as Buffers, and a Go value
// with []byte fields arrives with Buffers in their place.
//
// Server contract (namespace "/"):
//   "join" (room)              -> join room, ack(room)
//   "forward" (room, args...)  -> emit "forwarded" (args...) to the others in room
//                                 (re-emitting the received arguments), ack("sent")
//   "go-value"                 -> ack({name: "go", data: <1,2,3>, parts: {p: <4>},
//                                      list: [<5>, <6,7>]})
//
// Usage: SERVER_URL=... node nested-binary.mjs polling|websocket
import { io } from "socket.io-client";
import { SERVER_URL, scenario, track, connected, once, equal, check, ack, log, baseOptions } from "./lib.mjs";

const transport = process.argv[2] === "polling" ? "polling" : "websocket";

await scenario(`nested-binary/${transport}`, 15000, async () => {
  const opts = { ...baseOptions, transports: [transport] };
  const a = track(io(SERVER_URL, opts));
  const b = track(io(SERVER_URL, opts));
  await Promise.all([connected(a), connected(b)]);
  log("connected", a.id, b.id, "over", transport);
  const room = `nested-${transport}`;
  await ack(a, "join", [room]);
  await ack(b, "join", [room]);

  const data = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 13) % 256));
  const top = Buffer.from([9, 9]);
  const arrived = once(b, "forwarded");
  equal(await ack(a, "forward", [room, { data }, top, { deep: { list: [Buffer.from("x"), "y"] } }]), ["sent"], "forward ack");
  const [obj, topBack, deep] = await arrived;
  check(Buffer.isBuffer(obj.data), `forwarded data is not a Buffer: ${JSON.stringify(obj.data)?.slice(0, 80)}`);
  equal(obj.data, data, "forwarded data");
  check(Buffer.isBuffer(topBack), "forwarded top-level argument is not a Buffer");
  equal(topBack, top, "forwarded top-level buffer");
  check(Buffer.isBuffer(deep.deep.list[0]), "forwarded deep buffer is not a Buffer");
  equal(deep, { deep: { list: [Buffer.from("x"), "y"] } }, "forwarded deep object");

  const [v] = await ack(a, "go-value", []);
  for (const [what, got] of [["data", v.data], ["parts.p", v.parts.p], ["list[0]", v.list[0]], ["list[1]", v.list[1]]]) {
    check(Buffer.isBuffer(got), `go-value ${what} is not a Buffer: ${JSON.stringify(got)}`);
  }
  equal(v, { name: "go", data: Buffer.from([1, 2, 3]), parts: { p: Buffer.from([4]) }, list: [Buffer.from([5]), Buffer.from([6, 7])] }, "go-value");
});
