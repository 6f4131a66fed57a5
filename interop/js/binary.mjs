// Binary payloads both ways, over the given transport: Buffers at the top level and
// nested in objects and arrays, in events and in acks.
//
// Server contract: namespace "/" emits "bin-hello" on connect with
// {"name":"bytes","data":<bytes 0..255>} and <bytes 255..0>; on "bin" it emits
// "bin-back" with the same arguments and acks with the same arguments.
//
// Usage: SERVER_URL=... node binary.mjs polling|websocket
import { io } from "socket.io-client";
import { SERVER_URL, scenario, track, connected, once, equal, ack, log, baseOptions } from "./lib.mjs";

const transport = process.argv[2] === "polling" ? "polling" : "websocket";

function asBuffer(x) {
  if (Buffer.isBuffer(x)) return x;
  if (x instanceof ArrayBuffer) return Buffer.from(x);
  if (ArrayBuffer.isView(x)) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  throw new Error(`not binary: ${typeof x} ${x && x.constructor && x.constructor.name}`);
}

await scenario(`binary/${transport}`, 15000, async () => {
  const socket = track(io(SERVER_URL, { ...baseOptions, transports: [transport] }));
  const hello = once(socket, "bin-hello");
  await connected(socket);
  log("connected", socket.id, "over", socket.io.engine.transport.name);

  const ascending = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const descending = Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i));
  const [meta, raw] = await hello;
  equal(meta.name, "bytes", "bin-hello name");
  equal(asBuffer(meta.data), ascending, "bin-hello nested bytes");
  equal(asBuffer(raw), descending, "bin-hello top-level bytes");

  const big = Buffer.alloc(100 * 1024, 7);
  const args = [
    Buffer.from([1, 2, 3]),
    { label: "nested", parts: [Buffer.from([4, 5]), "text", Buffer.alloc(0)], n: 42 },
    big,
  ];
  const back = once(socket, "bin-back");
  const acked = await ack(socket, "bin", args);
  for (const [what, got] of [["ack", acked], ["bin-back", await back]]) {
    equal(got.length, 3, `${what} argument count`);
    equal(asBuffer(got[0]), args[0], `${what} top-level buffer`);
    equal(got[1].label, "nested", `${what} nested label`);
    equal(asBuffer(got[1].parts[0]), args[1].parts[0], `${what} nested buffer`);
    equal(got[1].parts[1], "text", `${what} nested text`);
    equal(asBuffer(got[1].parts[2]), Buffer.alloc(0), `${what} empty buffer`);
    equal(got[1].n, 42, `${what} nested number`);
    equal(asBuffer(got[2]).equals(big), true, `${what} 100 KiB buffer`);
  }
});
