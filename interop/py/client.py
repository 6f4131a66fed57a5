"""python-socketio client interop scenario.

Connects to SERVER_URL over one transport ("polling" or "websocket", argv[1]) and
checks events and acknowledgements both ways, with binary data:

  - the server's "welcome" event arrives with the namespace name;
  - client -> server: "echo" is acked with the same arguments (text, JSON, bytes);
  - client -> server event without ack: "message" comes back as "message-back";
  - server -> client: "ask-me" makes the server emit "question" with an ack; the
    client's handler return value is the ack, which the server relays in its ack.

Prints "PASS python/<transport>" and exits 0, or "FAIL python/<transport>: reason"
and exits 1. Every wait is bounded.
"""

import os
import sys
import threading

import socketio

TIMEOUT = 5
# Threads calling with acks at once; PYTHREADS overrides.
THREADS = int(os.environ.get("PYTHREADS", "8"))


def main():
    url = os.environ.get("SERVER_URL", "").rstrip("/")
    transport = sys.argv[1] if len(sys.argv) > 1 else "websocket"
    name = "python/" + transport
    if not url or transport not in ("polling", "websocket"):
        print("FAIL %s: need SERVER_URL and a transport (polling|websocket)" % name)
        return 2

    sio = socketio.Client(reconnection=False)
    welcome = threading.Event()
    welcome_args = []
    message_back = threading.Event()
    message_back_args = []
    questions = []

    @sio.on("welcome")
    def on_welcome(*args):
        welcome_args.extend(args)
        welcome.set()

    @sio.on("message-back")
    def on_message_back(*args):
        message_back_args.extend(args)
        message_back.set()

    @sio.on("question")
    def on_question(q):
        questions.append(q)
        # The return value is sent as the ack.
        return "answer to " + q["text"], 42

    def fail(reason):
        print("FAIL %s: %s" % (name, reason))
        return 1

    try:
        sio.connect(url, transports=[transport], wait_timeout=TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the result
        return fail("connect: %r" % exc)
    try:
        if sio.transport() != transport:
            return fail("transport is %r, want %r" % (sio.transport(), transport))
        if not welcome.wait(TIMEOUT):
            return fail("no welcome event")
        if welcome_args != ["/"]:
            return fail("welcome args %r" % welcome_args)

        args = ("über ✓", {"n": [1, 2.5, None, True], "s": "x"}, b"\x00\x01\xfe\xff")
        reply = sio.call("echo", args, timeout=TIMEOUT)
        # A multi-argument ack arrives as a tuple.
        if tuple(reply) != args:
            return fail("echo ack %r, want %r" % (reply, args))

        sio.emit("message", ("hello", 7))
        if not message_back.wait(TIMEOUT):
            return fail("no message-back event")
        if message_back_args != ["hello", 7]:
            return fail("message-back args %r" % message_back_args)

        reply = sio.call("ask-me", "life", timeout=TIMEOUT)
        if tuple(reply) != ("answer to life", 42):
            return fail("ask-me relayed ack %r" % (reply,))
        if questions != [{"text": "life"}]:
            return fail("questions received %r" % questions)

        # Many acks in flight from several threads, each matched to its own id.
        results = {}
        errors = []

        def call(i):
            try:
                results[i] = sio.call("sum", (i, 1000), timeout=TIMEOUT)
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT * 2)
        if errors:
            return fail("concurrent acks: %s" % errors[:3])
        if results != {i: i + 1000 for i in range(THREADS)}:
            return fail("concurrent ack results %r" % results)
    except socketio.exceptions.TimeoutError as exc:
        return fail("timed out: %r" % exc)
    except Exception as exc:  # noqa: BLE001
        return fail(repr(exc))
    finally:
        sio.disconnect()

    print("PASS " + name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
