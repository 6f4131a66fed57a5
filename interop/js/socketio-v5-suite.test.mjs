// Port of the official Socket.IO v5 protocol test suite
// (socket.io repository, docs/socket.io-protocol/v5-test-suite/test-suite.js) to
// node:test and node:assert. Every test case, packet and assertion of the original is
// kept, with the same timeouts (mocha's default of 2000 ms, 5000 ms for "heartbeat").
//
// The server under test must behave like the suite's reference server: Socket.IO at
// /socket.io/ with pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1000000,
// connectTimeout 1000 ms; "/" emits "auth" on connect, answers "message" with
// "message-back" and acks "message-with-ack"; "/custom" emits "auth" on connect; every
// other namespace is refused. SERVER_URL selects it (default http://localhost:3000).
//
// Run: SERVER_URL=http://127.0.0.1:3000 node --test interop/js/socketio-v5-suite.test.mjs

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { WebSocket as WsWebSocket } from "ws";

// The suite was written for the browser's WebSocket, which dispatches each message as
// a task of its own, so promise continuations (the suite's waitFor) run between two
// messages even when the server wrote them in one TCP segment. ws behaves the same
// with allowSynchronousEvents: false; by default it emits every message of one
// segment synchronously and a once-listener added after an await misses the second.
class WebSocket extends WsWebSocket {
  constructor(url) {
    super(url, { allowSynchronousEvents: false });
  }
}

const URL = (process.env.SERVER_URL || "http://localhost:3000").replace(/\/+$/, "");
const WS_URL = URL.replace("http", "ws");

const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;

// mocha's default per-test timeout, used by the original suite.
const DEFAULT_TIMEOUT = 2000;
// The original sets this.timeout(5000) on its "heartbeat" block.
const HEARTBEAT_TIMEOUT = 5000;

function test(name, fn, timeout = DEFAULT_TIMEOUT) {
  return it(name, { timeout }, fn);
}

function sleep(delay) {
  return new Promise((resolve) => setTimeout(resolve, delay));
}

function startsWith(value, prefix) {
  assert.equal(typeof value, "string", `expected a string, got ${typeof value}`);
  assert.ok(
    value.startsWith(prefix),
    `expected ${JSON.stringify(value)} to start with ${JSON.stringify(prefix)}`
  );
}

function hasAllKeys(value, keys) {
  assert.deepEqual(Object.keys(value).sort(), [...keys].sort());
}

function waitFor(socket, eventType) {
  return new Promise((resolve) => {
    socket.addEventListener(
      eventType,
      (event) => {
        resolve(event);
      },
      { once: true }
    );
  });
}

function waitForPackets(socket, count) {
  const packets = [];

  return new Promise((resolve) => {
    const handler = (event) => {
      if (event.data === "2") {
        // ignore PING packets
        return;
      }
      packets.push(event.data);
      if (packets.length === count) {
        socket.removeEventListener("message", handler);
        resolve(packets);
      }
    };
    socket.addEventListener("message", handler);
  });
}

async function initLongPollingSession() {
  const response = await fetch(`${URL}/socket.io/?EIO=4&transport=polling`);
  const content = await response.text();
  return JSON.parse(content.substring(1)).sid;
}

async function initSocketIOConnection() {
  const socket = new WebSocket(
    `${WS_URL}/socket.io/?EIO=4&transport=websocket`
  );
  socket.binaryType = "arraybuffer";

  await waitFor(socket, "message"); // Engine.IO handshake

  socket.send("40");

  await waitFor(socket, "message"); // Socket.IO handshake
  await waitFor(socket, "message"); // "auth" packet

  return socket;
}

describe("Engine.IO protocol", () => {
  describe("handshake", () => {
    describe("HTTP long-polling", () => {
      test("should successfully open a session", async () => {
        const response = await fetch(
          `${URL}/socket.io/?EIO=4&transport=polling`
        );

        assert.deepEqual(response.status, 200);

        const content = await response.text();

        startsWith(content, "0");

        const value = JSON.parse(content.substring(1));

        hasAllKeys(value, [
          "sid",
          "upgrades",
          "pingInterval",
          "pingTimeout",
          "maxPayload",
        ]);
        assert.equal(typeof value.sid, "string");
        assert.deepEqual(value.upgrades, ["websocket"]);
        assert.deepEqual(value.pingInterval, PING_INTERVAL);
        assert.deepEqual(value.pingTimeout, PING_TIMEOUT);
        assert.deepEqual(value.maxPayload, 1000000);
      });

      test("should fail with an invalid 'EIO' query parameter", async () => {
        const response = await fetch(`${URL}/socket.io/?transport=polling`);

        assert.deepEqual(response.status, 400);

        const response2 = await fetch(
          `${URL}/socket.io/?EIO=abc&transport=polling`
        );

        assert.deepEqual(response2.status, 400);
      });

      test("should fail with an invalid 'transport' query parameter", async () => {
        const response = await fetch(`${URL}/socket.io/?EIO=4`);

        assert.deepEqual(response.status, 400);

        const response2 = await fetch(`${URL}/socket.io/?EIO=4&transport=abc`);

        assert.deepEqual(response2.status, 400);
      });

      test("should fail with an invalid request method", async () => {
        const response = await fetch(
          `${URL}/socket.io/?EIO=4&transport=polling`,
          {
            method: "post",
          }
        );

        assert.deepEqual(response.status, 400);

        const response2 = await fetch(
          `${URL}/socket.io/?EIO=4&transport=polling`,
          {
            method: "put",
          }
        );

        assert.deepEqual(response2.status, 400);
      });
    });

    describe("WebSocket", () => {
      test("should successfully open a session", async () => {
        const socket = new WebSocket(
          `${WS_URL}/socket.io/?EIO=4&transport=websocket`
        );

        const { data } = await waitFor(socket, "message");

        startsWith(data, "0");

        const value = JSON.parse(data.substring(1));

        hasAllKeys(value, [
          "sid",
          "upgrades",
          "pingInterval",
          "pingTimeout",
          "maxPayload",
        ]);
        assert.equal(typeof value.sid, "string");
        assert.deepEqual(value.upgrades, []);
        assert.deepEqual(value.pingInterval, PING_INTERVAL);
        assert.deepEqual(value.pingTimeout, PING_TIMEOUT);
        assert.deepEqual(value.maxPayload, 1000000);

        socket.close();
      });

      test("should fail with an invalid 'EIO' query parameter", async () => {
        const socket = new WebSocket(
          `${WS_URL}/socket.io/?transport=websocket`
        );

        socket.on("error", () => {});

        waitFor(socket, "close");

        const socket2 = new WebSocket(
          `${WS_URL}/socket.io/?EIO=abc&transport=websocket`
        );

        socket2.on("error", () => {});

        waitFor(socket2, "close");
      });

      test("should fail with an invalid 'transport' query parameter", async () => {
        const socket = new WebSocket(`${WS_URL}/socket.io/?EIO=4`);

        socket.on("error", () => {});

        waitFor(socket, "close");

        const socket2 = new WebSocket(
          `${WS_URL}/socket.io/?EIO=4&transport=abc`
        );

        socket2.on("error", () => {});

        waitFor(socket2, "close");
      });
    });
  });

  describe("heartbeat", () => {
    describe("HTTP long-polling", () => {
      test(
        "should send ping/pong packets",
        async () => {
          const sid = await initLongPollingSession();

          for (let i = 0; i < 3; i++) {
            const pollResponse = await fetch(
              `${URL}/socket.io/?EIO=4&transport=polling&sid=${sid}`
            );

            assert.deepEqual(pollResponse.status, 200);

            const pollContent = await pollResponse.text();

            assert.deepEqual(pollContent, "2");

            const pushResponse = await fetch(
              `${URL}/socket.io/?EIO=4&transport=polling&sid=${sid}`,
              {
                method: "post",
                body: "3",
              }
            );

            assert.deepEqual(pushResponse.status, 200);
          }
        },
        HEARTBEAT_TIMEOUT
      );

      test(
        "should close the session upon ping timeout",
        async () => {
          const sid = await initLongPollingSession();

          await sleep(PING_INTERVAL + PING_TIMEOUT);

          const pollResponse = await fetch(
            `${URL}/socket.io/?EIO=4&transport=polling&sid=${sid}`
          );

          assert.deepEqual(pollResponse.status, 400);
        },
        HEARTBEAT_TIMEOUT
      );
    });

    describe("WebSocket", () => {
      test(
        "should send ping/pong packets",
        async () => {
          const socket = new WebSocket(
            `${WS_URL}/socket.io/?EIO=4&transport=websocket`
          );

          await waitFor(socket, "message"); // handshake

          for (let i = 0; i < 3; i++) {
            const { data } = await waitFor(socket, "message");

            assert.deepEqual(data, "2");

            socket.send("3");
          }

          socket.close();
        },
        HEARTBEAT_TIMEOUT
      );

      test(
        "should close the session upon ping timeout",
        async () => {
          const socket = new WebSocket(
            `${WS_URL}/socket.io/?EIO=4&transport=websocket`
          );

          await waitFor(socket, "close"); // handshake
        },
        HEARTBEAT_TIMEOUT
      );
    });
  });

  describe("close", () => {
    describe("HTTP long-polling", () => {
      test("should forcefully close the session", async () => {
        const sid = await initLongPollingSession();

        const [pollResponse] = await Promise.all([
          fetch(`${URL}/socket.io/?EIO=4&transport=polling&sid=${sid}`),
          fetch(`${URL}/socket.io/?EIO=4&transport=polling&sid=${sid}`, {
            method: "post",
            body: "1",
          }),
        ]);

        assert.deepEqual(pollResponse.status, 200);

        const pullContent = await pollResponse.text();

        assert.deepEqual(pullContent, "6");

        const pollResponse2 = await fetch(
          `${URL}/socket.io/?EIO=4&transport=polling&sid=${sid}`
        );

        assert.deepEqual(pollResponse2.status, 400);
      });
    });

    describe("WebSocket", () => {
      test("should forcefully close the session", async () => {
        const socket = new WebSocket(
          `${WS_URL}/socket.io/?EIO=4&transport=websocket`
        );

        await waitFor(socket, "message"); // handshake

        socket.send("1");

        await waitFor(socket, "close");
      });
    });
  });

  describe("upgrade", () => {
    test("should successfully upgrade from HTTP long-polling to WebSocket", async () => {
      const sid = await initLongPollingSession();

      const socket = new WebSocket(
        `${WS_URL}/socket.io/?EIO=4&transport=websocket&sid=${sid}`
      );

      await waitFor(socket, "open");

      // send probe
      socket.send("2probe");

      const probeResponse = await waitFor(socket, "message");

      assert.deepEqual(probeResponse.data, "3probe");

      // complete upgrade
      socket.send("5");
    });

    test("should ignore HTTP requests with same sid after upgrade", async () => {
      const sid = await initLongPollingSession();

      const socket = new WebSocket(
        `${WS_URL}/socket.io/?EIO=4&transport=websocket&sid=${sid}`
      );

      await waitFor(socket, "open");
      socket.send("2probe");
      socket.send("5");

      const pollResponse = await fetch(
        `${URL}/socket.io/?EIO=4&transport=polling&sid=${sid}`
      );

      assert.deepEqual(pollResponse.status, 400);
    });

    test("should ignore WebSocket connection with same sid after upgrade", async () => {
      const sid = await initLongPollingSession();

      const socket = new WebSocket(
        `${WS_URL}/socket.io/?EIO=4&transport=websocket&sid=${sid}`
      );

      await waitFor(socket, "open");
      socket.send("2probe");
      socket.send("5");

      const socket2 = new WebSocket(
        `${WS_URL}/socket.io/?EIO=4&transport=websocket&sid=${sid}`
      );

      await waitFor(socket2, "close");
    });
  });
});

describe("Socket.IO protocol", () => {
  describe("connect", () => {
    test("should allow connection to the main namespace", async () => {
      const socket = new WebSocket(
        `${WS_URL}/socket.io/?EIO=4&transport=websocket`
      );

      await waitFor(socket, "message"); // Engine.IO handshake

      socket.send("40");

      const { data } = await waitFor(socket, "message");

      startsWith(data, "40");

      const handshake = JSON.parse(data.substring(2));

      hasAllKeys(handshake, ["sid"]);
      assert.equal(typeof handshake.sid, "string");

      const authPacket = await waitFor(socket, "message");

      assert.deepEqual(authPacket.data, '42["auth",{}]');
    });

    test("should allow connection to the main namespace with a payload", async () => {
      const socket = new WebSocket(
        `${WS_URL}/socket.io/?EIO=4&transport=websocket`
      );

      await waitFor(socket, "message"); // Engine.IO handshake

      socket.send('40{"token":"123"}');

      const { data } = await waitFor(socket, "message");

      startsWith(data, "40");

      const handshake = JSON.parse(data.substring(2));

      hasAllKeys(handshake, ["sid"]);
      assert.equal(typeof handshake.sid, "string");

      const authPacket = await waitFor(socket, "message");

      assert.deepEqual(authPacket.data, '42["auth",{"token":"123"}]');
    });

    test("should allow connection to a custom namespace", async () => {
      const socket = new WebSocket(
        `${WS_URL}/socket.io/?EIO=4&transport=websocket`
      );

      await waitFor(socket, "message"); // Engine.IO handshake

      socket.send("40/custom,");

      const { data } = await waitFor(socket, "message");

      startsWith(data, "40/custom,");

      const handshake = JSON.parse(data.substring(10));

      hasAllKeys(handshake, ["sid"]);
      assert.equal(typeof handshake.sid, "string");

      const authPacket = await waitFor(socket, "message");

      assert.deepEqual(authPacket.data, '42/custom,["auth",{}]');
    });

    test("should allow connection to a custom namespace with a payload", async () => {
      const socket = new WebSocket(
        `${WS_URL}/socket.io/?EIO=4&transport=websocket`
      );

      await waitFor(socket, "message"); // Engine.IO handshake

      socket.send('40/custom,{"token":"abc"}');

      const { data } = await waitFor(socket, "message");

      startsWith(data, "40/custom,");

      const handshake = JSON.parse(data.substring(10));

      hasAllKeys(handshake, ["sid"]);
      assert.equal(typeof handshake.sid, "string");

      const authPacket = await waitFor(socket, "message");

      assert.deepEqual(authPacket.data, '42/custom,["auth",{"token":"abc"}]');
    });

    test("should disallow connection to an unknown namespace", async () => {
      const socket = new WebSocket(
        `${WS_URL}/socket.io/?EIO=4&transport=websocket`
      );

      await waitFor(socket, "message"); // Engine.IO handshake

      socket.send("40/random");

      const { data } = await waitFor(socket, "message");

      assert.deepEqual(data, '44/random,{"message":"Invalid namespace"}');
    });

    test("should disallow connection with an invalid handshake", async () => {
      const socket = new WebSocket(
        `${WS_URL}/socket.io/?EIO=4&transport=websocket`
      );

      await waitFor(socket, "message"); // Engine.IO handshake

      socket.send("4abc");

      await waitFor(socket, "close");
    });

    test("should close the connection if no handshake is received", async () => {
      const socket = new WebSocket(
        `${WS_URL}/socket.io/?EIO=4&transport=websocket`
      );

      await waitFor(socket, "close");
    });
  });

  describe("disconnect", () => {
    test("should disconnect from the main namespace", async () => {
      const socket = await initSocketIOConnection();

      socket.send("41");

      const { data } = await waitFor(socket, "message");

      assert.deepEqual(data, "2");
    });

    test("should connect then disconnect from a custom namespace", async () => {
      const socket = await initSocketIOConnection();

      await waitFor(socket, "message"); // ping

      socket.send("40/custom");

      await waitFor(socket, "message"); // Socket.IO handshake
      await waitFor(socket, "message"); // auth packet

      socket.send("41/custom");
      socket.send('42["message","message to main namespace"]');

      const { data } = await waitFor(socket, "message");

      assert.deepEqual(data, '42["message-back","message to main namespace"]');
    });
  });

  describe("message", () => {
    test("should send a plain-text packet", async () => {
      const socket = await initSocketIOConnection();

      socket.send('42["message",1,"2",{"3":[true]}]');

      const { data } = await waitFor(socket, "message");

      assert.deepEqual(data, '42["message-back",1,"2",{"3":[true]}]');
    });

    test("should send a packet with binary attachments", async () => {
      const socket = await initSocketIOConnection();

      socket.send(
        '452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
      );
      socket.send(Uint8Array.from([1, 2, 3]));
      socket.send(Uint8Array.from([4, 5, 6]));

      const packets = await waitForPackets(socket, 3);

      assert.deepEqual(
        packets[0],
        '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
      );
      assert.deepEqual(packets[1], Uint8Array.from([1, 2, 3]).buffer);
      assert.deepEqual(packets[2], Uint8Array.from([4, 5, 6]).buffer);

      socket.close();
    });

    test("should send a plain-text packet with an ack", async () => {
      const socket = await initSocketIOConnection();

      socket.send('42456["message-with-ack",1,"2",{"3":[false]}]');

      const { data } = await waitFor(socket, "message");

      assert.deepEqual(data, '43456[1,"2",{"3":[false]}]');
    });

    test("should send a packet with binary attachments and an ack", async () => {
      const socket = await initSocketIOConnection();

      socket.send(
        '452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
      );
      socket.send(Uint8Array.from([1, 2, 3]));
      socket.send(Uint8Array.from([4, 5, 6]));

      const packets = await waitForPackets(socket, 3);

      assert.deepEqual(
        packets[0],
        '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
      );
      assert.deepEqual(packets[1], Uint8Array.from([1, 2, 3]).buffer);
      assert.deepEqual(packets[2], Uint8Array.from([4, 5, 6]).buffer);

      socket.close();
    });

    test("should close the connection upon invalid format (unknown packet type)", async () => {
      const socket = await initSocketIOConnection();

      socket.send("4abc");

      await waitFor(socket, "close");
    });

    test("should close the connection upon invalid format (invalid payload format)", async () => {
      const socket = await initSocketIOConnection();

      socket.send("42{}");

      await waitFor(socket, "close");
    });

    test("should close the connection upon invalid format (invalid ack id)", async () => {
      const socket = await initSocketIOConnection();

      socket.send('42abc["message-with-ack",1,"2",{"3":[false]}]');

      await waitFor(socket, "close");
    });
  });
});
