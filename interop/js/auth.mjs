// Auth payload and connect middleware: a client without the right token gets
// connect_error with the middleware's message and data; a client with it connects and
// sees its auth object as the server received it.
//
// Server contract: namespace "/secure" has a middleware refusing every handshake whose
// auth.token is not "s3cret" with message "unauthorized" and data
// {"code":401,"reason":"bad token"}; on connect it emits "hello" with the auth object.
//
// Usage: SERVER_URL=... node auth.mjs
import { io } from "socket.io-client";
import { SERVER_URL, scenario, track, connected, once, equal, check, log, baseOptions } from "./lib.mjs";

await scenario("auth", 15000, async () => {
  const refused = track(
    io(`${SERVER_URL}/secure`, { ...baseOptions, auth: { token: "wrong" } })
  );
  const [err] = await once(refused, "connect_error");
  log("refused:", err.message, JSON.stringify(err.data));
  equal(err.message, "unauthorized", "connect_error message");
  equal(err.data, { code: 401, reason: "bad token" }, "connect_error data");
  check(!refused.connected, "refused socket is not connected");

  const noAuth = track(io(`${SERVER_URL}/secure`, baseOptions));
  const [err2] = await once(noAuth, "connect_error");
  equal(err2.message, "unauthorized", "connect_error message without auth");

  const auth = { token: "s3cret", user: "ada", roles: ["admin", "dev"] };
  const accepted = track(io(`${SERVER_URL}/secure`, { ...baseOptions, auth }));
  const hello = once(accepted, "hello");
  await connected(accepted);
  equal((await hello)[0], auth, "auth object seen by the server");
  log("accepted", accepted.id);
});
