// Shared helpers of the socket.io-client interop scripts. Each script runs one
// scenario against the server at SERVER_URL, prints "PASS <scenario>" and exits 0, or
// prints "FAIL <scenario>: <reason>" and exits 1. Every wait is bounded.

import { isDeepStrictEqual, inspect } from "node:util";
import msgpackParser from "socket.io-msgpack-parser";

export const SERVER_URL = (process.env.SERVER_URL || "").replace(/\/+$/, "");
if (!SERVER_URL) {
  console.error("FAIL: SERVER_URL is not set");
  process.exit(2);
}

// Sockets created by a scenario, closed when it ends so the process exits at once.
const sockets = new Set();

// track registers a socket.io-client socket to be closed when the scenario ends.
export function track(socket) {
  sockets.add(socket);
  return socket;
}

function closeAll() {
  for (const s of sockets) {
    try {
      s.io.reconnection(false);
      s.disconnect();
    } catch {
      // already closed
    }
  }
}

function log(...args) {
  const ts = new Date().toISOString().slice(11, 23);
  console.log(ts, ...args);
}
export { log };

// scenario runs fn with an overall deadline and reports the outcome.
export async function scenario(name, timeoutMs, fn) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no result within ${timeoutMs} ms`)),
      timeoutMs
    );
  });
  try {
    await Promise.race([fn(), deadline]);
    clearTimeout(timer);
    closeAll();
    console.log(`PASS ${name}`);
    process.exit(0);
  } catch (err) {
    clearTimeout(timer);
    closeAll();
    console.log(`FAIL ${name}: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  }
}

// once waits for one event on an emitter (socket, manager or engine) for at most ms.
export function once(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`timed out after ${ms} ms waiting for "${event}"`));
    }, ms);
    const handler = (...args) => {
      clearTimeout(timer);
      emitter.off(event, handler);
      resolve(args);
    };
    emitter.on(event, handler);
  });
}

// connected waits for "connect", failing at once on "connect_error".
export function connected(socket, ms = 5000) {
  if (socket.connected) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${ms} ms waiting for connect of ${socket.nsp}`));
    }, ms);
    const onConnect = () => {
      cleanup();
      resolve();
    };
    const onError = (err) => {
      cleanup();
      reject(new Error(`connect_error on ${socket.nsp}: ${err.message} ${inspect(err.data)}`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
    };
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

// equal throws with both values shown when actual and expected differ.
export function equal(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new Error(
      `${what}: got ${inspect(actual, { depth: 6 })}, want ${inspect(expected, { depth: 6 })}`
    );
  }
}

// check throws when cond is false.
export function check(cond, what) {
  if (!cond) throw new Error(what);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Options every scenario passes to io(): no multiplexing surprises between sockets
// of different scenarios, and short, bounded connection attempts.
// SIO_PARSER=msgpack gives every scenario the parser of socket.io-msgpack-parser.
export const parserOptions = process.env.SIO_PARSER === "msgpack" ? { parser: msgpackParser } : {};
export const baseOptions = {
  forceNew: true,
  reconnection: false,
  timeout: 5000,
  ...parserOptions,
};

// ack emits event with args and resolves with every argument of the server's ack,
// rejecting when no ack arrives within ms.
export function ack(socket, event, args, ms = 5000) {
  return new Promise((resolve, reject) => {
    socket.timeout(ms).emit(event, ...args, (err, ...reply) => {
      if (err) reject(new Error(`no ack for "${event}" within ${ms} ms: ${err.message}`));
      else resolve(reply);
    });
  });
}
