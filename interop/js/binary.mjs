// Binary payloads both ways over the given transport: top-level Buffers in events
// and acks in both directions, binary nested inside objects from client to server,
// and a 100 KiB Buffer.
//
// Server contract (namespace "/"):
//   on connect                 -> emit "bin-hello" ("bytes", <bytes 0..255>, <bytes 255..0>)
//   "bin" (args...)            -> emit "bin-back" with the same arguments and ack with
//                                 the same arguments (top-level binary stays binary)
//   "bin-nested" ({label, data: <bytes>, inner: {blob: <bytes>}})
//                              -> ack(label, len(data), sha256 hex of data,
//                                     <inner.blob as top-level bytes>)
//
// Usage: SERVER_URL=... node binary.mjs polling|websocket
import { createHash } from "node:crypto";
import { io } from "socket.io-client";
import { SERVER_URL, scenario, track, connected, once, equal, ack, log, baseOptions } from "./lib.mjs";

const transport = process.argv[2] === "polling" ? "polling" : "websocket";

function asBuffer(x, what) {
  if (Buffer.isBuffer(x)) return x;
  if (x instanceof ArrayBuffer) return Buffer.from(x);
  if (ArrayBuffer.isView(x)) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  throw new Error(`${what}: not binary: ${JSON.stringify(x)?.slice(0, 80)}`);
}

await scenario(`binary/${transport}`, 15000, async () => {
  const socket = track(io(SERVER_URL, { ...baseOptions, transports: [transport] }));
  const hello = once(socket, "bin-hello");
  await connected(socket);
  log("connected", socket.id, "over", socket.io.engine.transport.name);

  const ascending = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const descending = Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i));
  const [name, first, second] = await hello;
  equal(name, "bytes", "bin-hello text argument");
  equal(asBuffer(first, "bin-hello first"), ascending, "bin-hello first buffer");
  equal(asBuffer(second, "bin-hello second"), descending, "bin-hello second buffer");

  const big = Buffer.alloc(100 * 1024, 7);
  const args = [Buffer.from([1, 2, 3]), "text between", Buffer.alloc(0), { n: 42 }, big];
  const back = once(socket, "bin-back");
  const acked = await ack(socket, "bin", args);
  for (const [what, got] of [["ack", acked], ["bin-back", await back]]) {
    equal(got.length, args.length, `${what} argument count`);
    equal(asBuffer(got[0], what), args[0], `${what} first buffer`);
    equal(got[1], "text between", `${what} text argument`);
    equal(asBuffer(got[2], what), Buffer.alloc(0), `${what} empty buffer`);
    equal(got[3], { n: 42 }, `${what} object argument`);
    equal(asBuffer(got[4], what).equals(big), true, `${what} 100 KiB buffer`);
  }

  const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7) % 256));
  const blob = Buffer.from("nested blob \u0000\u00ff");
  const [label, length, digest, blobBack] = await ack(socket, "bin-nested", [
    { label: "nested", data, inner: { blob } },
  ]);
  equal(label, "nested", "bin-nested label");
  equal(length, data.length, "bin-nested length seen by the server");
  equal(digest, createHash("sha256").update(data).digest("hex"), "bin-nested digest seen by the server");
  equal(asBuffer(blobBack, "bin-nested blob"), blob, "bin-nested inner blob");
});
