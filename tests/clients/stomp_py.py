"""Interop checks with stomp.py, a STOMP client nobody here wrote.

Usage: python3 stomp_py.py HTTP_BASE STOMP_TCP_PORT
Runs each check over raw TCP and over WebSocket (/ws); prints one line per check and exits
non-zero when any fails.
"""
import json
import sys
import threading
import time
import urllib.request

import stomp

BASE = sys.argv[1]
TCP_PORT = int(sys.argv[2])
HOST = "127.0.0.1"


class Recorder(stomp.ConnectionListener):
    def __init__(self):
        self.messages = []
        self.errors = []
        self.receipts = []
        self.cond = threading.Condition()

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_error(self, frame):
        with self.cond:
            self.errors.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.append(frame.headers.get("receipt-id"))
            self.cond.notify_all()

    def wait(self, pred, timeout=10):
        with self.cond:
            ok = self.cond.wait_for(lambda: pred(self), timeout)
        if not ok:
            raise AssertionError("timed out; messages=%r errors=%r" % (
                [(m.headers, m.body) for m in self.messages],
                [(e.headers, e.body) for e in self.errors]))


def connect(kind, heartbeats=(0, 0)):
    if kind == "tcp":
        c = stomp.Connection12([(HOST, TCP_PORT)], heartbeats=heartbeats)
    else:
        port = int(BASE.rsplit(":", 1)[1])
        c = stomp.WSStompConnection([(HOST, port)], ws_path="/ws", heartbeats=heartbeats)
    r = Recorder()
    c.set_listener("r", r)
    c.connect(wait=True)
    return c, r


def rest_publish(topic, data, event=None):
    body = {"data": data}
    if event:
        body["event"] = event
    req = urllib.request.Request(
        BASE + "/api/v1/topics/%s/events" % topic,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
        return json.loads(r.read())["id"]


def history(pattern):
    url = BASE + "/api/v1/topics/%s/events?after=0&limit=1000" % pattern.replace(">", "%3E")
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())["events"]


def check_topic_both_ways(kind):
    topic = "interop.%s.orders" % kind
    c, r = connect(kind)
    c.subscribe("/topic/interop.%s.>" % kind, id="s1", ack="auto")
    c.send("/topic/" + topic, json.dumps({"n": 1}), content_type="application/json",
           headers={"event": "created", "receipt": "r-send"})
    r.wait(lambda r: "r-send" in r.receipts)
    # The SEND is stored and seen by the REST/SSE side...
    events = history(topic)
    assert events and events[-1]["data"] == {"n": 1} and events[-1]["event"] == "created", events
    # ...and a REST publish reaches the STOMP subscriber.
    rest_publish(topic, "from rest", event="note")
    r.wait(lambda r: len(r.messages) >= 2)
    first, second = r.messages[0], r.messages[1]
    assert json.loads(first.body) == {"n": 1}, first.body
    assert first.headers["destination"] == "/topic/" + topic
    assert second.body == "from rest" and second.headers["event"] == "note", (second.headers, second.body)
    c.disconnect()


def check_resume_with_after(kind):
    topic = "interop.%s.resume" % kind
    ids = [rest_publish(topic, i) for i in range(3)]
    c, r = connect(kind)
    c.subscribe("/topic/" + topic, id="s1", headers={"after": ids[0]})
    r.wait(lambda r: len(r.messages) >= 2)
    assert [m.headers["message-id"] for m in r.messages[:2]] == ids[1:], [m.headers for m in r.messages]
    c.disconnect()


def check_queue_competing(kind):
    q = "/queue/interop-%s" % kind
    a, ra = connect(kind)
    b, rb = connect(kind)
    a.subscribe(q, id="qa", ack="auto")
    b.subscribe(q, id="qb", ack="auto")
    time.sleep(0.2)
    for i in range(10):
        a.send(q, "job-%d" % i)
    ra.wait(lambda _: len(ra.messages) + len(rb.messages) >= 10)
    time.sleep(0.3)
    bodies = sorted(m.body for m in ra.messages + rb.messages)
    assert bodies == sorted("job-%d" % i for i in range(10)), bodies
    assert ra.messages and rb.messages, "both consumers should get some"
    a.disconnect()
    b.disconnect()


def check_queue_nack_and_disconnect_redeliver(kind):
    q = "/queue/interop-redeliver-%s" % kind
    a, ra = connect(kind)
    a.subscribe(q, id="q1", ack="client-individual")
    a.send(q, "work")
    ra.wait(lambda r: len(r.messages) >= 1)
    m = ra.messages[0]
    a.nack(m.headers["ack"])
    ra.wait(lambda r: len(r.messages) >= 2)
    assert ra.messages[1].body == "work"
    # Disconnect without ACK: another consumer gets it.
    a.disconnect()
    b, rb = connect(kind)
    b.subscribe(q, id="q2", ack="client")
    rb.wait(lambda r: len(r.messages) >= 1)
    assert rb.messages[0].body == "work"
    b.ack(rb.messages[0].headers["ack"])
    b.disconnect()
    c, rc = connect(kind)
    c.subscribe(q, id="q3", ack="auto")
    time.sleep(0.5)
    assert not rc.messages, "acknowledged message came back"
    c.disconnect()


def check_app_chat(kind):
    c, r = connect(kind)
    c.subscribe("/topic/messages", id="m")
    c.subscribe("/topic/users", id="u")
    c.send("/app/chat.join", json.dumps({"sender": "John", "type": "JOIN"}), content_type="application/json")
    c.send("/app/chat.send", json.dumps({"sender": "John", "content": "Hello!"}), content_type="application/json")
    r.wait(lambda r: len(r.messages) >= 2)
    by_dest = {m.headers["destination"]: json.loads(m.body) for m in r.messages}
    assert by_dest["/topic/users"]["sender"] == "John"
    assert by_dest["/topic/messages"]["content"] == "Hello!"
    c.disconnect()


def check_error_on_bad_destination(kind):
    c, r = connect(kind)
    c.send("/elsewhere/x", "hi")
    r.wait(lambda r: len(r.errors) >= 1)
    assert "destination" in r.errors[0].headers.get("message", ""), r.errors[0].headers


def check_heartbeats(kind):
    c, r = connect(kind, heartbeats=(500, 500))
    time.sleep(2)
    assert c.is_connected()
    c.disconnect()


CHECKS = [check_topic_both_ways, check_resume_with_after, check_queue_competing,
          check_queue_nack_and_disconnect_redeliver, check_app_chat, check_error_on_bad_destination,
          check_heartbeats]

failed = 0
for kind in ("tcp", "ws"):
    for check in CHECKS:
        name = "%s %s" % (check.__name__, kind)
        try:
            check(kind)
            print("ok   " + name)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print("FAIL %s: %r" % (name, e))
        sys.stdout.flush()
sys.exit(1 if failed else 0)
