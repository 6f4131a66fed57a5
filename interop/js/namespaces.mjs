// Namespaces multiplexed over one connection: "/" and "/chat" connect through one
// Manager (one Engine.IO session), each gets its own welcome and its own acks, and an
// unknown namespace gets connect_error "Invalid namespace".
//
// Server contract: namespaces "/" and "/chat" emit "welcome" with the namespace name
// on connect and ack "whoami" with the namespace name and the socket id; any other
// namespace is refused.
//
// Usage: SERVER_URL=... node namespaces.mjs
import { Manager } from "socket.io-client";
import { SERVER_URL, scenario, track, connected, once, equal, check, ack, log } from "./lib.mjs";

await scenario("namespaces", 15000, async () => {
  const manager = new Manager(SERVER_URL, { reconnection: false, timeout: 5000 });
  const main = track(manager.socket("/"));
  const chat = track(manager.socket("/chat"));
  const mainWelcome = once(main, "welcome");
  const chatWelcome = once(chat, "welcome");
  await Promise.all([connected(main), connected(chat)]);
  log("connected", main.id, chat.id);
  check(main.id !== chat.id, "each namespace has its own socket id");
  equal((await mainWelcome)[0], "/", "welcome of /");
  equal((await chatWelcome)[0], "/chat", "welcome of /chat");

  equal(await ack(main, "whoami", []), ["/", main.id], "whoami on /");
  equal(await ack(chat, "whoami", []), ["/chat", chat.id], "whoami on /chat");

  const unknown = track(manager.socket("/does-not-exist"));
  const [err] = await once(unknown, "connect_error");
  equal(err.message, "Invalid namespace", "connect_error message of an unknown namespace");
  check(!unknown.connected, "unknown namespace is not connected");

  // The refused namespace does not disturb the others on the same connection.
  equal(await ack(chat, "whoami", []), ["/chat", chat.id], "whoami on /chat after a refusal");

  // Leaving one namespace keeps the other one working.
  chat.disconnect();
  equal(await ack(main, "whoami", []), ["/", main.id], "whoami on / after leaving /chat");
});
