"""Publishes what python-socketio's pub/sub managers publish, then exits.

Usage: publish.py REDIS_URL CHANNEL OPS_JSON

Each op is one of:
  {"json": {...}}       a message in the JSON form of python-socketio 5.14 and
                        later (published as json.dumps of the dict, as their
                        RedisManager does);
  {"pickled_emit": [event, data, room]}
                        an emit through the installed (Debian) python-socketio's
                        RedisManager(write_only=True), which pickles before 5.14;
  {"await_callback": host_id}
                        wait (10 s at most) for a "callback" message to host_id on
                        the channel, and print its args.
  {"binary_emit": {...}} a JSON emit whose data holds bytes: split into
                        placeholders and base64 attachments as python-socketio does.
"""
import base64
import json
import sys
import time

import redis
import socketio


def deconstruct(data, attachments):
    if isinstance(data, (bytes, bytearray)):
        attachments.append(bytes(data))
        return {"_placeholder": True, "num": len(attachments) - 1}
    if isinstance(data, list):
        return [deconstruct(d, attachments) for d in data]
    if isinstance(data, dict):
        return {k: deconstruct(v, attachments) for k, v in data.items()}
    return data


def main():
    url, channel, ops = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    r = redis.Redis.from_url(url)
    sub = None
    for op in ops:
        if "json" in op:
            r.publish(channel, json.dumps(op["json"]))
        elif "binary_emit" in op:
            m = dict(op["binary_emit"])
            data = [bytes(x["$binary"]) if isinstance(x, dict) and "$binary" in x else x for x in m["data"]]
            attachments = []
            data = deconstruct(data, attachments)
            m["data"] = [data] + [base64.b64encode(a).decode() for a in attachments]
            m["binary"] = True
            r.publish(channel, json.dumps(m))
        elif "pickled_emit" in op:
            event, data, room = op["pickled_emit"]
            mgr = socketio.RedisManager(url, channel=channel, write_only=True)
            mgr.emit(event, data, namespace="/", room=room)
        elif "subscribe" in op:
            sub = r.pubsub(ignore_subscribe_messages=True)
            sub.subscribe(channel)
            time.sleep(0.2)
        elif "await_callback" in op:
            host = op["await_callback"]
            deadline = time.time() + 10
            while time.time() < deadline:
                msg = sub.get_message(timeout=0.5)
                if not msg or msg["type"] != "message":
                    continue
                try:
                    data = json.loads(msg["data"])
                except ValueError:
                    continue
                if data.get("method") == "callback" and data.get("host_id") == host:
                    print("CALLBACK " + json.dumps(data))
                    break
            else:
                print("FAIL no callback for " + host)
                sys.exit(1)
    print("PASS publish %d" % len(ops))


if __name__ == "__main__":
    main()
